"""``mtl train --ray [ADDRESS]``: the same worker function under Ray Train's ``TensorflowTrainer``, which gives each
worker its ``TF_CONFIG``. Ray is optional (``pip install 'mtl[ray]'``)."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

from mtl.config import Config, config_from_dict, dump_config, read_yaml
from mtl.errors import MtlError

log = logging.getLogger("mtl")


def _ray_worker(settings: dict) -> None:
    """One Ray Train worker: the config as text, trained by ``run_worker`` (Ray sets ``TF_CONFIG``)."""
    from mtl.training._launch import run_worker

    logging.basicConfig(level=logging.INFO, format="mtl: %(message)s", stream=sys.stderr)
    run_worker(config_from_dict(read_yaml(settings["config"], "config")), settings["run_dir"])


def launch_ray(workers: int, config: Config, run_dir: Path, max_restarts: int, address: str | None = None) -> None:
    """Train ``config`` in ``workers`` Ray Train workers (a local Ray on loopback, or the cluster at ``address``);
    Ray restarts the job up to ``max_restarts`` times, each start resuming from the last completed epoch."""
    if not address:
        # a local Ray on loopback: read by Ray when imported, inherited by its processes, so that the node (and
        # each worker's address in TF_CONFIG) is 127.0.0.1, not the machine's network address
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.tensorflow import TensorflowTrainer
    except ImportError:
        raise MtlError("Ray Train is not installed; pip install 'mtl[ray]'", where="--ray") from None
    started = not ray.is_initialized()
    if started:
        if address:
            ray.init(address=address, log_to_driver=True)
        else:  # a local Ray bound to loopback only, with this process's import path for the workers
            ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=max(workers, os.cpu_count() or 1),
                     runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
                                               "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}})
    with tempfile.TemporaryDirectory(prefix="mtl-ray-") as storage:  # Ray's own records, not the run's
        trainer = TensorflowTrainer(
            _ray_worker,
            train_loop_config={"config": dump_config(config), "run_dir": str(run_dir.resolve())},
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=False),
            run_config=RunConfig(storage_path=storage, failure_config=FailureConfig(max_failures=max_restarts)))
        try:
            result = trainer.fit()
        except Exception as exc:  # Ray wraps the worker's error in its own types
            raise MtlError(f"Ray Train failed: {_last_line(exc)}", where="--ray") from None
        finally:
            if started:
                ray.shutdown()
    if getattr(result, "error", None) is not None:
        raise MtlError(f"Ray Train failed: {_last_line(result.error)}", where="--ray")


def _last_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
