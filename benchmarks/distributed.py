"""Distributed training on this machine: wall time, training samples/s and peak RSS per worker for one process
(Keras ``fit``), and ``mtl train --workers N`` for each N given (issue 12).

Each configuration is a real ``mtl train`` command in fresh processes. Wall time is the whole command (imports,
data, tracing, training, evaluation, export of the chief). Samples/s is the steady state: training rows divided by
the time between the last two epoch checkpoints (``checkpoints/epoch-*.npz`` modification times), so it holds one
epoch's steps, its validation pass and one checkpoint, and no tracing. Peak RSS is each worker's ``VmHWM``.

    python benchmarks/distributed.py                      # the Adult config, 1 process, 1 and 2 workers
    python benchmarks/distributed.py --rows 20000 --epochs 3 --workers 1 2
    python benchmarks/distributed.py --text --rows 600 --epochs 2 --batch-size 32   # configs/womens_clothing.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from _host import machine

ROOT = Path(__file__).resolve().parents[1]


def config(data: Path, epochs: int, batch_size: int) -> dict:
    """The default Adult setup (two tasks, trunk 64-64), fixed weighting, no early stopping."""
    return {
        "seed": 7,
        "data": {"path": str(data),
                 "features": {"numeric": ["age", "educational_num", "capital_gain", "capital_loss"],
                              "categorical": ["workclass", "education", "marital_status", "occupation",
                                              "relationship", "race", "gender", "native_country"]},
                 "split": {"train": 0.8, "val": 0.1, "test": 0.1, "stratify": "income"}},
        "tasks": {"income": {"type": "binary", "column": "income", "positive": ">50K"},
                  "hours_per_week": {"type": "regression", "column": "hours_per_week"}},
        "model": {"trunk": {"units": [64, 64]}},
        "training": {"epochs": epochs, "batch_size": batch_size, "verbose": 0},
    }


def text_config(data: Path, epochs: int, batch_size: int) -> dict:
    """``configs/womens_clothing.yaml`` (fine-tuned all-MiniLM-L6-v2, four tasks) on ``data``, without dropout."""
    raw = yaml.safe_load((ROOT / "configs" / "womens_clothing.yaml").read_text())
    raw["data"].pop("dataset")
    raw["data"]["path"] = str(data)
    raw["model"]["head"]["dropout"] = 0.0
    raw["training"].update(epochs=epochs, batch_size=batch_size, verbose=0)
    return raw


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(p) for p in path.read_text().split()]
    except OSError:
        return []


def _runs_mtl(pid: int) -> bool:
    try:
        return b"mtl.cli" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run(config_file: Path, run_dir: Path, workers: int | None) -> dict:
    """One ``mtl train`` command; its wall time, steady samples/s and each process's peak RSS."""
    command = [sys.executable, "-m", "mtl.cli", "train", "--config", str(config_file), "--run-dir", str(run_dir)]
    if workers is not None:
        command += ["--workers", str(workers)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.monotonic()
    log_file = run_dir.with_suffix(".log")
    log = log_file.open("w")  # a file, not a pipe: the workers' streamed logs would fill a pipe nobody reads yet
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
    peaks: dict[int, float] = {}
    while process.poll() is None:
        # the workers (the launcher's children that run mtl; not a helper a library spawns for a moment)
        watched = [pid for pid in _children(process.pid) if _runs_mtl(pid)] if workers is not None else [process.pid]
        for pid in watched:
            peak = _peak_rss_mib(pid)
            if peak is not None:
                peaks[pid] = max(peaks.get(pid, 0.0), peak)
        time.sleep(0.2)
    wall = time.monotonic() - start
    log.close()
    stderr = log_file.read_text()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{stderr[-3000:]}")
    train_rows = int(re.search(r"mtl: train: (\d+) rows", stderr).group(1))
    checkpoints = sorted((run_dir / "checkpoints").glob("epoch-*.npz"))
    epoch_seconds = checkpoints[-1].stat().st_mtime - checkpoints[-2].stat().st_mtime
    return {"wall_s": wall, "epoch_s": epoch_seconds, "train_rows": train_rows,
            "peak_rss_mib": sorted(peaks.values(), reverse=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=48842, help="rows of the table (default: all of Adult)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--text", action="store_true", help="the text config (women's clothing reviews, MiniLM)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from mtl.data import read_table

    with tempfile.TemporaryDirectory(prefix="mtl-bench-distributed-") as tmp:
        root = Path(tmp)
        frame = read_table(dataset="womens_clothing" if args.text else "adult")[0]
        frame = frame.sample(min(args.rows, len(frame)), random_state=0)
        data = root / "adult.csv"
        frame.to_csv(data, index=False)
        config_file = root / "c.yaml"
        make = text_config if args.text else config
        config_file.write_text(yaml.safe_dump(make(data, args.epochs, args.batch_size), sort_keys=False))
        load = os.getloadavg()
        print(json.dumps(machine()))
        print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {len(frame)} rows, "
              f"{args.epochs} epochs, global batch {args.batch_size}")
        print("| setup | wall time s | steady samples/s | peak RSS per process MiB | load average after |")
        print("|---|---|---|---|---|")
        for workers in [None, *args.workers]:
            result = run(config_file, root / f"run-{workers}", workers)
            name = "1 process (Keras fit)" if workers is None else f"--workers {workers}"
            rss = ", ".join(f"{r:.0f}" for r in result["peak_rss_mib"])
            samples = result["train_rows"] / result["epoch_s"]
            load = os.getloadavg()
            print(f"| {name} | {result['wall_s']:.1f} | {samples:,.0f} | {rss} | {load[0]:.1f} |", flush=True)
        load = os.getloadavg()
        print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
