"""The frozen-encoder cache, side by side: the same frozen-MiniLM run with ``model.backbone.cache`` on and off.

Women's clothing reviews (the fixed stratified 80/10/10 split of ``low_label_text.py``), the single-task
``recommended`` model with its label kept on 2 % of the training rows by ``tasks.recommended.label_fraction: 0.02``
(every training row stays in the table with its text; ``--blank-labels`` instead empties the other rows' labels in
the table, stratified, seed 0, and mtl's data stage then drops those rows before training), frozen all-MiniLM-L6-v2
(``data.max_length`` 128), the head of ``configs/womens_clothing.yaml``, batch 32 with length buckets, 3 epochs,
through ``mtl.training.train`` (run directory, checkpoints, evaluation, ``model.keras``).

Each variant runs in a fresh process, one after the other (wall time and peak RSS are its own):

- ``before`` (``--before``): what mtl did before the cache and row skipping: ``model.backbone.cache: false`` and
  ``training.skip_unlabelled_rows: false``, so MiniLM runs on every training row of every epoch. Its metrics differ
  (it takes more optimizer steps per epoch); it is the "today" of the speed-up;
- ``uncached``: ``model.backbone.cache: false``: MiniLM runs on every batch of every epoch and of the evaluation;
- ``cached``: the cache on, its folder empty: every distinct text is embedded once, then looked up;
- ``cached, warm`` (``--warm``): the cache on, reading the folder the ``cached`` run filled (a sweep's second run).

The test and validation metrics of the cached runs must equal the uncached run's (every metric within 1e-4).
The speed-up column compares every variant with the first one run.

Run::

    python benchmarks/encoder_cache.py                       # all 22,641 reviews (the uncached run takes long)
    python benchmarks/encoder_cache.py --max-rows 4000 --warm  # a stratified fraction of the reviews
    python benchmarks/encoder_cache.py --before --warm        # against mtl before the cache and row skipping
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
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
for path in (ROOT, HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

VARIANTS = {"before": {"cache": False, "skip": False}, "uncached": {"cache": False, "skip": True},
            "cached": {"cache": True, "skip": True}, "cached, warm": {"cache": True, "skip": True}}
TOLERANCE = 1e-4


def run_config(table: str, cache: bool, cache_dir: str, epochs: int, max_length: int,
               skip: bool = True, label_fraction: float = 1.0) -> dict[str, Any]:
    """The frozen single-task run of one variant; ``label_fraction`` is ``tasks.recommended.label_fraction``."""
    return {
        "seed": 0,
        "data": {"path": table, "features": {"text": "review_text"}, "split": {"column": "split"},
                 "max_length": max_length},
        "tasks": {"recommended": {"type": "binary", "column": "recommended_ind", "positive": 1,
                                  "label_fraction": label_fraction}},
        "model": {"backbone": {"preset": "all-MiniLM-L6-v2", "trainable": False, "cache": cache,
                               "cache_dir": cache_dir},
                  "trunk": {"units": []}, "head": {"units": [64], "dropout": 0.1}},
        "training": {"epochs": epochs, "batch_size": 32, "steps_per_execution": 1, "bucket_by_length": True,
                     "verbose": 0, "skip_unlabelled_rows": skip},
    }


def write_table(path: Path, max_rows: int | None, fraction: float, blank: bool = True) -> dict[str, int]:
    """The reviews as Parquet; ``blank``: ``recommended_ind`` kept on ``fraction`` of the training rows (stratified,
    seed 0) and empty on the others, else every label kept (``label_fraction`` masks them in mtl)."""
    import numpy as np
    import pandas as pd
    from low_label_text import label_subset, load_reviews

    frame = load_reviews(max_rows)
    train = frame["split"] == "train"
    kept = label_subset(frame.loc[train, "recommended_ind"].to_numpy(), fraction, 0)
    labels = frame["recommended_ind"].astype("float64").to_numpy().copy()
    train_positions = np.flatnonzero(train.to_numpy())
    if blank:
        labels[train_positions[np.setdiff1d(np.arange(len(train_positions)), kept)]] = np.nan
    frame.assign(recommended_ind=pd.Series(labels)).drop(columns=["rating"]).to_parquet(path, index=False)
    return {"rows": len(frame), "train": int(train.sum()), "labelled": len(kept),
            "distinct_texts": int(frame["review_text"].nunique())}


def one_run(table: str, variant: str, cache_dir: str, run_dir: str, epochs: int, max_length: int,
            label_fraction: float = 1.0) -> dict:
    """One variant in this process: wall seconds, peak RSS, the metrics."""
    import logging

    from mtl.config import config_from_dict
    from mtl.training import train

    logging.getLogger("mtl").setLevel(logging.WARNING)
    config = config_from_dict(run_config(table, VARIANTS[variant]["cache"], cache_dir, epochs, max_length,
                                         VARIANTS[variant]["skip"], label_fraction))
    started = time.perf_counter()
    result = train(config, run_dir)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"variant": variant, "seconds": round(time.perf_counter() - started, 1),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),  # the whole process, imports included
            "peak_rss_mib": round(usage.ru_maxrss / 1024),
            "epochs": len(result.history), "metrics": {s: result.metrics[s] for s in ("val", "test")}}


def largest_difference(a: dict, b: dict) -> float:
    """The largest absolute difference between two runs' numeric metrics."""
    worst = 0.0
    for split in a:
        for task, values in a[split].items():
            for name, value in values.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    worst = max(worst, abs(float(value) - float(b[split][task][name])))
    return worst


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-rows", type=int, default=None, help="a stratified subset of the 22,641 reviews")
    p.add_argument("--fraction", type=float, default=0.02, help="recommended labels kept on training rows (0.02)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--warm", action="store_true", help="also a cached run reading the filled cache folder")
    p.add_argument("--before", action="store_true", help="first, a run as mtl was before: no cache, every row")
    p.add_argument("--blank-labels", action="store_true",
                   help="empty the unkept labels in the table instead of tasks.recommended.label_fraction")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    p.add_argument("--one", nargs=5, metavar=("TABLE", "VARIANT", "CACHE_DIR", "RUN_DIR", "OUT"),
                   help=argparse.SUPPRESS)  # a worker: one variant, its result written to OUT
    args = p.parse_args(argv)
    if args.one:
        table, variant, cache_dir, run_dir, out = args.one
        fraction = 1.0 if args.blank_labels else args.fraction
        Path(out).write_text(json.dumps(one_run(table, variant, cache_dir, run_dir, args.epochs, args.max_length,
                                                fraction), default=float))
        return 0

    from _host import machine

    results, load = [], {"start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="encoder_cache_") as tmp:
        work = Path(tmp)
        table = work / "reviews.parquet"
        sizes = write_table(table, args.max_rows, args.fraction, blank=args.blank_labels)
        how = "in the table" if args.blank_labels else "by label_fraction, about"
        print(f"reviews {sizes['rows']:,} (train {sizes['train']:,}, recommended labelled {how} {sizes['labelled']:,}; "
              f"{sizes['distinct_texts']:,} distinct texts), {args.epochs} epochs, frozen MiniLM", flush=True)
        variants = ["before"] * args.before + ["uncached", "cached"] + (["cached, warm"] if args.warm else [])
        for i, variant in enumerate(variants):
            out = work / f"result-{i}.json"
            command = [sys.executable, __file__, "--epochs", str(args.epochs), "--max-length", str(args.max_length),
                       "--fraction", str(args.fraction), *["--blank-labels"] * args.blank_labels,
                       "--one", str(table), variant, str(work / "cache"), str(work / f"run-{i}"), str(out)]
            subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            results.append(json.loads(out.read_text()))
            r = results[-1]
            print(f"  {variant:<13} {r['seconds']:8.1f} s  CPU {r['cpu_seconds']:8.1f} s  peak RSS "
                  f"{r['peak_rss_mib']:,} MiB  "
                  f"test AUC {r['metrics']['test']['recommended']['auc']:.6f}", flush=True)
    load["end"] = os.getloadavg()
    base = results[0]
    uncached = next(r for r in results if r["variant"] == "uncached")
    print()
    print("| variant | wall s | speed-up | CPU s | peak RSS MiB | test AUC | largest metric difference to uncached |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        r["speedup"] = base["seconds"] / r["seconds"]
        r["largest_difference"] = largest_difference(uncached["metrics"], r["metrics"])
        print(f"| {r['variant']} | {r['seconds']:.1f} | {r['speedup']:.1f}x | {r['cpu_seconds']:.1f} "
              f"| {r['peak_rss_mib']:,} "
              f"| {r['metrics']['test']['recommended']['auc']:.6f} | {r['largest_difference']:.2e} |")
    print(f"load average (1/5/15 min): start {load['start']}, end {load['end']}")
    same = all(r["largest_difference"] <= TOLERANCE for r in results if r["variant"] != "before")
    print("metrics identical within 1e-4" if same else "METRICS DIFFER by more than 1e-4")
    if args.out is not None:
        args.out.write_text(json.dumps({"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()},
                                        "sizes": sizes, "load": load, "results": results}, indent=2, default=float))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
