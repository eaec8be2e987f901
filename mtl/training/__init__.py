"""The training stage: a run directory, its callbacks, fit, evaluation and resume."""

from mtl._locks import DirectoryLock
from mtl.training._batches import StepGather, to_dataset
from mtl.training._callbacks import (
    DivergenceGuard,
    EpochCheckpoint,
    EpochTensorBoard,
    LossWeightScheduler,
    TrainingDiverged,
    WeightingEpochHooks,
)
from mtl.training._checkpoints import check_history, choose_checkpoint, read_state
from mtl.training._distributed import Distribution, make_distribution, read_tf_config
from mtl.training._fingerprint import data_change, data_fingerprint, split_fingerprint
from mtl.training._launch import (
    check_several_workers,
    free_loopback_ports,
    launch_workers,
    resumable,
    run_worker,
    tf_config,
    worker_arguments,
)
from mtl.training._optimizers import FINE_TUNING_RATE_LIMIT, BackboneRate, make_optimizer
from mtl.training._progress import EpochLine, fit_verbosity
from mtl.training._ray import launch_ray
from mtl.training._run import RunResult, encoder_cache_dir, log_keys, resume, train

__all__ = ["FINE_TUNING_RATE_LIMIT", "BackboneRate", "DirectoryLock", "Distribution", "DivergenceGuard",
           "EpochCheckpoint", "EpochLine", "EpochTensorBoard", "LossWeightScheduler", "RunResult", "StepGather",
           "TrainingDiverged",
           "WeightingEpochHooks", "check_history", "check_several_workers", "choose_checkpoint", "data_change",
           "data_fingerprint", "encoder_cache_dir", "fit_verbosity", "free_loopback_ports", "launch_ray",
           "launch_workers", "log_keys", "make_distribution", "make_optimizer", "read_state", "read_tf_config",
           "resumable", "resume", "run_worker", "split_fingerprint", "tf_config", "to_dataset", "train",
           "worker_arguments"]
