"""The training stage: a run directory, its callbacks, fit, evaluation and resume."""

from mtl.training.run import RunResult, log_keys, resume, train

__all__ = ["RunResult", "log_keys", "resume", "train"]
