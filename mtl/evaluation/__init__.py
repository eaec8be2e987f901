"""The evaluation stage: per-task metrics on labelled rows and the run's plots."""

from mtl.evaluation.report import evaluate_split, predict

__all__ = ["evaluate_split", "predict"]
