"""The training stage: a run directory, its callbacks, fit, evaluation and resume."""

from mtl._locks import DirectoryLock
from mtl.training._batches import to_dataset
from mtl.training._callbacks import (
    DivergenceGuard,
    EpochCheckpoint,
    EpochTensorBoard,
    LossWeightScheduler,
    TrainingDiverged,
    WeightingEpochHooks,
)
from mtl.training._checkpoints import check_history, choose_checkpoint, read_state
from mtl.training._fingerprint import data_change, data_fingerprint, split_fingerprint
from mtl.training._optimizers import FINE_TUNING_RATE_LIMIT, BackboneRate, make_optimizer
from mtl.training._progress import EpochLine, fit_verbosity
from mtl.training._run import RunResult, encoder_cache_dir, log_keys, resume, train

__all__ = ["FINE_TUNING_RATE_LIMIT", "BackboneRate", "DirectoryLock", "DivergenceGuard", "EpochCheckpoint", "EpochLine",
           "EpochTensorBoard", "LossWeightScheduler", "RunResult", "TrainingDiverged", "WeightingEpochHooks",
           "check_history", "choose_checkpoint", "data_change", "data_fingerprint", "encoder_cache_dir",
           "fit_verbosity", "log_keys", "make_optimizer", "read_state", "resume", "split_fingerprint", "to_dataset",
           "train"]
