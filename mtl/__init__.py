"""mtl: multi-task learning on Keras 3 — a YAML config in, a trained, evaluated model out.

The public API is small; everything else lives in the stage packages (``mtl.data``, ``mtl.tasks``,
``mtl.model``, ``mtl.weighting``, ``mtl.training``, ``mtl.evaluation``).

>>> from mtl import load_config
>>> config = load_config("configs/default.yaml", ["training.epochs=1"])
>>> config.training.epochs, sorted(config.tasks)
(1, ['hours_per_week', 'income'])
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtl.errors import MtlError

if TYPE_CHECKING:
    from mtl.config import Config
    from mtl.training import RunResult
    from mtl.tuning import TuneResult

__all__ = ["Config", "MtlError", "RunResult", "TuneResult", "load_config", "load_model", "resume", "train", "tune"]
__version__ = "0.1.0"


def train(config: Config, run_dir: str | None = None) -> RunResult:
    """Train a config in a new run directory; see ``mtl.training.train``."""
    from mtl.training import train as _train

    return _train(config, run_dir)


def resume(run_dir: str, allow_data_change: bool = False) -> RunResult:
    """Continue an interrupted run from its last verified checkpoint; see ``mtl.training.resume``."""
    from mtl.training import resume as _resume

    return _resume(run_dir, allow_data_change=allow_data_change)


def tune(config: Config | dict | str, trials: int, out_dir: str | None = None,
         overrides: list[str] | None = None) -> TuneResult:
    """Search the config's ``tune.space`` with Optuna, one training run per trial; see ``mtl.tuning``."""
    from mtl.tuning import tune as _tune

    return _tune(config, trials, out_dir, overrides)


def load_model(path: str) -> Any:
    """Load a run's ``model.keras`` (a ``MultiTaskModel`` with its fitted tasks)."""
    import keras

    import mtl.model  # noqa: F401  (registers MultiTaskModel and mtl's layers with Keras)

    return keras.saving.load_model(path)


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read and validate a YAML config, with ``--set``-style overrides; see ``mtl.config.load_config``."""
    from mtl.config import load_config as _load_config

    return _load_config(path, overrides)


def __getattr__(name: str) -> Any:
    # imported on first use: `import mtl` (and so the `mtl` command) must not import TensorFlow, whose start-up
    # lines the command filters out while importing it (mtl._progress)
    if name == "Config":
        from mtl.config import Config

        return Config
    if name == "RunResult":
        from mtl.training import RunResult

        return RunResult
    if name == "TuneResult":
        from mtl.tuning import TuneResult

        return TuneResult
    raise AttributeError(name)
