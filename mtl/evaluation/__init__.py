"""The evaluation stage: per-task metrics on labelled rows and the run's plots."""

from mtl.evaluation.report import evaluate, evaluate_split, predict

__all__ = ["evaluate", "evaluate_split", "predict"]
