"""Data larger than memory: peak RSS, epoch throughput and test metrics of ``data.streaming`` against in memory.

Writes the real UCI Adult table replicated to ``--rows`` rows (a unique ``row_id`` per row, the split key) as Parquet
shards of 250,000 rows into a temporary directory, then runs ``mtl.train`` in a fresh process per measurement:

- peak RSS (``ru_maxrss`` of the worker) of a 1-epoch streaming run over each ``--rows`` size;
- per-epoch throughput of each mode on the first size: training rows over the wall time of the second epoch of a
  2-epoch run (training and validation), read from the run's TensorBoard summaries;
- test metrics of both modes' 2-epoch runs on the same split (``data.split.key: row_id``).

Replicated rows repeat across splits, so the metrics compare the two modes, not the model.

```bash
python benchmarks/streaming.py --rows 1000000 3000000
```
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARD_ROWS = 250_000
NUMERIC = ["age", "educational_num", "capital_gain", "capital_loss"]
CATEGORICAL = ["workclass", "education", "marital_status", "occupation", "relationship", "race", "gender",
               "native_country"]


def write_shards(rows: int, folder: Path) -> Path:
    """Adult replicated to ``rows`` rows with a ``row_id`` column, as Parquet shards of ``SHARD_ROWS`` rows."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mtl.data import read_table

    adult, _ = read_table(dataset="adult")
    table = pa.Table.from_pandas(adult, preserve_index=False)
    folder.mkdir(parents=True, exist_ok=True)
    for number, start in enumerate(range(0, rows, SHARD_ROWS)):
        size = min(SHARD_ROWS, rows - start)
        take = pa.array((np.arange(start, start + size) % len(adult)).astype("int64"))
        shard = table.take(take).append_column("row_id", pa.array(np.arange(start, start + size, dtype="int64")))
        pq.write_table(shard, folder / f"part-{number:04d}.parquet", row_group_size=65_536)
    return folder


def config(path: Path, streaming: bool, epochs: int) -> dict:
    return {
        "seed": 7,
        "data": {"path": str(path), "streaming": streaming,
                 "features": {"numeric": NUMERIC, "categorical": CATEGORICAL},
                 "split": {"train": 0.8, "val": 0.1, "test": 0.1, "key": "row_id"}},
        "tasks": {"income": {"type": "binary", "column": "income", "positive": ">50K"},
                  "hours_per_week": {"type": "regression", "column": "hours_per_week"}},
        "model": {"trunk": {"units": [64, 64]}},
        "training": {"epochs": epochs, "batch_size": 512, "verbose": 0},
    }


def worker(raw: dict, run_dir: str) -> None:
    """One run in this process; prints its time, peak RSS and test metrics as one JSON line."""
    import mtl
    from mtl.config import config_from_dict

    start = time.perf_counter()
    result = mtl.train(config_from_dict(raw), run_dir)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak, "train_rows": len(result.data.train),
                      "last_epoch_seconds": last_epoch_seconds(Path(run_dir)), "test": result.metrics["test"]}))


def last_epoch_seconds(run_dir: Path) -> float | None:
    """Wall time between the last two epochs' TensorBoard summaries (training and validation of the last epoch),
    None after one epoch: measured inside one run, so the load of the machine during the fitting pass and the
    evaluation does not enter it."""
    import tensorflow as tf

    times = sorted(event.wall_time for path in (run_dir / "tensorboard" / "train").glob("events.*")
                   for event in tf.compat.v1.train.summary_iterator(str(path))
                   if any(value.tag == "epoch_loss" for value in event.summary.value))
    return times[-1] - times[-2] if len(times) > 1 else None


def measure(raw: dict, work: Path, name: str) -> dict:
    """Run ``worker`` in a fresh process (so peak RSS is this run's alone)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                         os.environ.get("PYTHONPATH", "")]),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(raw), str(work / name)],
                          capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{name}: {result['seconds']:.1f} s, last epoch {result['last_epoch_seconds']} s, peak RSS "
          f"{result['peak_rss_mib']:.0f} MiB", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--throughput-only", action="store_true",
                        help="only the 2-epoch runs of both modes on the first size")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker[0]), args.worker[1])
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _host import machine

    print(json.dumps(machine()), flush=True)
    with tempfile.TemporaryDirectory(prefix="mtl-streaming-") as tmp:
        work = Path(tmp)
        results: dict = {}
        for rows in args.rows[:1] if args.throughput_only else args.rows:
            data = write_shards(rows, work / f"data-{rows}")
            if not args.throughput_only:
                results[f"streaming-{rows}-1"] = measure(config(data, True, 1), work, f"streaming-{rows}-1")
        first = work / f"data-{args.rows[0]}"
        for mode, streaming in (("memory", False), ("streaming", True)):
            results[f"{mode}-{args.rows[0]}-2"] = measure(config(first, streaming, 2), work, f"{mode}-{args.rows[0]}-2")
    report(args.rows, results)


def report(sizes: list[int], results: dict) -> None:
    first = sizes[0]
    if f"streaming-{first}-1" in results:
        print("\n| rows | streaming peak RSS MiB (1 epoch) |\n|---|---|")
        for rows in sizes:
            print(f"| {rows:,} | {results[f'streaming-{rows}-1']['peak_rss_mib']:,.0f} |")
        peaks = [results[f"streaming-{rows}-1"]["peak_rss_mib"] for rows in sizes]
        print(f"\npeak RSS, largest / smallest: {max(peaks) / min(peaks):.3f}")
    print("\n| mode (2 epochs) | peak RSS MiB | run s | last epoch s | training rows/s in the last epoch | "
          "test income AUC | test hours_per_week RMSE |")
    print("|---|---|---|---|---|---|---|")
    speed = {}
    for mode in ("memory", "streaming"):
        two = results[f"{mode}-{first}-2"]
        speed[mode] = two["train_rows"] / two["last_epoch_seconds"]
        test = two["test"]
        print(f"| {mode} | {two['peak_rss_mib']:,.0f} | {two['seconds']:.0f} | {two['last_epoch_seconds']:.1f} | "
              f"{speed[mode]:,.0f} | {test['income']['auc']:.4f} | {test['hours_per_week']['rmse']:.4f} |")
    print(f"\nstreaming / in-memory epoch throughput: {speed['streaming'] / speed['memory']:.2f}x")


if __name__ == "__main__":
    main()
