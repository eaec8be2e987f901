"""The evaluation stage: per-task metrics on labelled rows and the run's plots; scoring a run or an export on a
labelled file (``evaluate_file``); comparing runs (``compare_runs``); what a run records for comparisons
(``model_summary.txt``, TensorBoard HParams)."""

from mtl.evaluation._compare import compare_runs, flatten_config, format_comparison, multitask_delta, read_run
from mtl.evaluation._offline import OfflineEvaluation, evaluate_file
from mtl.evaluation._plots import learning_curves, loss_weights, task_plots
from mtl.evaluation._report import choose_on_validation, evaluate, evaluate_split, predict, predict_streamed
from mtl.evaluation._summary import log_hparams, parameter_counts, write_model_summary

__all__ = ["OfflineEvaluation", "choose_on_validation", "compare_runs", "evaluate", "evaluate_file", "evaluate_split",
           "flatten_config", "format_comparison", "learning_curves", "log_hparams", "loss_weights",
           "multitask_delta", "parameter_counts", "predict", "predict_streamed", "read_run", "task_plots",
           "write_model_summary"]
