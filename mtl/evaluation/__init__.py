"""The evaluation stage: per-task metrics on labelled rows and the run's plots."""

from mtl.evaluation._plots import learning_curves, loss_weights, task_plots
from mtl.evaluation._report import evaluate, evaluate_split, predict, predict_streamed

__all__ = ["evaluate", "evaluate_split", "learning_curves", "loss_weights", "predict", "predict_streamed",
           "task_plots"]
