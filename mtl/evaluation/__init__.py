"""The evaluation stage: per-task metrics on labelled rows and the run's plots."""

from mtl.evaluation._plots import learning_curves, loss_weights, task_plots
from mtl.evaluation._report import choose_on_validation, evaluate, evaluate_split, predict

__all__ = ["choose_on_validation", "evaluate", "evaluate_split", "learning_curves", "loss_weights", "predict",
           "task_plots"]
