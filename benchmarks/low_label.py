"""Low-label benchmark (issue 5), tabular half: does an auxiliary task help when main-task labels are scarce?

Run (24 minutes on 2 idle cores)::

    python benchmarks/low_label.py --out benchmarks/low_label.json
    python benchmarks/low_label.py --quick                     # a smoke run: 1 seed, 1 epoch, 2 variants

UCI Adult, as in ``configs/default.yaml``: the main task ``income`` (binary, test AUC is the score) keeps its
labels on ``--fractions`` of the training rows (``tasks.income.label_fraction``); the auxiliary task(s)
(``--aux``: ``hours_per_week``, optionally also ``age``, which then leaves the inputs of every variant) are
labelled on every training row. Validation and test keep all their labels.

Each run goes through the public API, ``mtl.config.config_from_dict`` + ``mtl.train(config, run_dir)``, in a
temporary run directory that is deleted afterwards; ``--workers`` spawned processes share the runs. A seed is
the config's ``seed``: it changes the train/val/test split, which training rows keep their income label, the
weight initialisation and the shuffling, all together (mtl has one seed for all of them). Every variant runs
on the same seeds, so per seed they see the same split and the same labelled rows; the relative gain over
single-task (Delta m, as in LibMTL) is therefore taken per seed, against the single-task run of that seed,
which removes the split's variance from it.

Variants (``--variants``): ``single`` (income only); ``equal`` (both tasks, weights 1 and 1); ``aux0`` (the
multi-task loop with the auxiliary weight 0: same model and loop, no auxiliary signal, so it separates the
auxiliary task's effect from the loop's); three fixed-weight schedules ``sched_ramp`` (the default config's
linear ramps), ``sched_anneal`` (auxiliary weight falling linearly from 1 to 0) and ``sched_light``
(auxiliary weight 0.3 throughout); ``best_schedule``, not a run of its own: per fraction and seed, the
schedule with the best validation income AUC, reported with its test AUC; the weighting strategies
``uncertainty gradnorm dwa rlw pcgrad cagrad``; the trunks ``mmoe ple`` (equal weights); ``single_mmoe``
(income alone on the MMoE trunk: separates the trunk's effect from the auxiliary task's); ``linked`` (equal
weights, and income's head reads the auxiliary task's prediction through a task link, ``tasks.income.inputs``) and
``linked_fixed`` (the same link with ``stop_gradient``: income's loss does not train the auxiliary head);
``single_skip`` (single-task with ``training.skip_unlabelled_rows``, mtl's default: an epoch covers only the rows
with an income label, so at 1 % it is one step). Every other variant keeps every training row in its epochs
(``skip_unlabelled_rows: false``), so all of them take the same optimizer steps and ``aux0`` equals ``single``.
Every run stops early on validation income AUC (patience 2) and restores its best epoch. Each record keeps its
wall and CPU time and the peak RSS of the process that ran it.

The text half of issue 5 (inputs where representation learning matters: the Women's clothing reviews on MiniLM,
frozen and fine-tuned) is ``benchmarks/low_label_text.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from _host import machine

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # inherited by the spawned workers

NUMERIC = ["age", "fnlwgt", "educational_num", "capital_gain", "capital_loss"]
CATEGORICAL = ["workclass", "education", "marital_status", "occupation", "relationship", "race", "gender",
               "native_country"]
MAIN = "income"
AUX_COLUMNS = ("hours_per_week", "age")


@dataclass(frozen=True)
class Variant:
    """One row of the table: how the default multi-task config is changed."""

    name: str
    label: str
    aux: bool = True  # False: the main task alone
    main_weight: float | dict = 1.0
    aux_weight: float | dict = 1.0
    weighting: str = "fixed"
    trunk: str = "shared_bottom"
    link: str | None = None  # "link": income's head reads the auxiliary outputs (tasks.income.inputs); "fixed": with
    # stop_gradient (income's loss does not train the auxiliary heads)
    skip_unlabelled: bool = False  # training.skip_unlabelled_rows (off: every variant takes the same steps per epoch)
    cost: float = 1.0  # relative run time, for ordering the queue (the slowest first)


def _linear(start: float, end: float) -> dict:
    return {"schedule": "linear", "start": start, "end": end}


VARIANTS = {v.name: v for v in [
    Variant("single", "single-task (income only)", aux=False),
    Variant("equal", "MTL, fixed equal weights"),
    Variant("aux0", "control: MTL loop, auxiliary weight 0", aux_weight=0.0),
    Variant("sched_ramp", "MTL, schedule ramp (income 0.5→1, aux 1→0.3)", main_weight=_linear(0.5, 1.0),
            aux_weight=_linear(1.0, 0.3)),
    Variant("sched_anneal", "MTL, schedule anneal (aux 1→0)", aux_weight=_linear(1.0, 0.0)),
    Variant("sched_light", "MTL, schedule light (aux 0.3)", aux_weight=0.3),
    *[Variant(s, f"MTL, {s}", weighting=s, cost=c) for s, c in
      [("uncertainty", 1.0), ("gradnorm", 1.6), ("dwa", 1.0), ("rlw", 1.0), ("pcgrad", 1.6), ("cagrad", 1.8)]],
    Variant("mmoe", "MTL, MMoE trunk (equal weights)", trunk="mmoe", cost=1.3),
    Variant("ple", "MTL, PLE trunk (equal weights)", trunk="ple", cost=1.5),
    Variant("single_mmoe", "control: single-task on the MMoE trunk", aux=False, trunk="mmoe", cost=1.3),
    Variant("linked", "MTL, income reads the auxiliary output (task link)", link="link"),
    Variant("linked_fixed", "MTL, task link with stop_gradient", link="fixed"),
    Variant("single_skip", "single-task, unlabelled rows skipped (mtl's default)", aux=False, skip_unlabelled=True,
            cost=0.5),
]}
SCHEDULES = ("sched_ramp", "sched_anneal", "sched_light")
BEST = "best_schedule"
ALL_NAMES = [*VARIANTS][:6] + [BEST] + [*VARIANTS][6:]  # the table's order


@dataclass(frozen=True)
class Job:
    variant: str
    fraction: float
    seed: int
    config: dict = field(hash=False, compare=False)

    @property
    def config_sha(self) -> str:
        """A short hash of the run's config: a saved result is reused by ``--resume`` only for the same config."""
        return hashlib.sha256(json.dumps(self.config, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- configs
# The text half of issue 5 adds its own setup here (a text dataset and its config function, chosen by a flag);
# it needs a text feature type in mtl first.
def adult_config(variant: Variant, fraction: float, seed: int, aux: list[str], epochs: int, batch_size: int,
                 learning_rate: float) -> dict:
    """The run config of one variant on UCI Adult: the default config's model, shorter training."""
    tasks: dict[str, dict] = {MAIN: {"type": "binary", "column": "income", "positive": ">50K", "metrics": ["auc"],
                                     "label_fraction": fraction, "weight": variant.main_weight}}
    if variant.aux:
        for name in aux:
            tasks[name] = {"type": "regression", "column": name, "loss": "huber", "metrics": ["rmse"],
                           "weight": variant.aux_weight}
    if variant.link is not None:
        tasks[MAIN]["inputs"] = [{"task": name, "stop_gradient": variant.link == "fixed"} for name in aux]
    trunk: dict[str, Any] = {"type": variant.trunk, "activation": "relu", "dropout": 0.1, "norm": "batch"}
    if variant.trunk == "shared_bottom":
        trunk["units"] = [128, 64]
    weighting: dict[str, Any] = {"name": variant.weighting}
    if variant.weighting == "rlw":
        weighting["seed"] = seed  # the random weights change with the seed too
    return {
        "seed": seed,
        "data": {"dataset": "adult",
                 "features": {"numeric": [c for c in NUMERIC if c not in aux], "categorical": list(CATEGORICAL)},
                 "split": {"train": 0.8, "val": 0.1, "test": 0.1, "stratify": MAIN}},
        "tasks": tasks,
        "model": {"trunk": trunk, "head": {"units": [32], "activation": "relu"}},
        "training": {"epochs": epochs, "batch_size": batch_size, "optimizer": "adam", "learning_rate": learning_rate,
                     "early_stopping": {"monitor": f"val_{MAIN}_auc", "patience": 2, "restore_best_weights": True},
                     "weighting": weighting, "verbose": 0, "skip_unlabelled_rows": variant.skip_unlabelled},
    }


# ---------------------------------------------------------------------------------------------- running
def _init_worker(threads: int, log_path: str) -> None:
    """Each worker: TensorFlow on ``threads`` threads, its chatter to a log file rather than the table."""
    log = open(log_path, "a")
    os.dup2(log.fileno(), 2)
    sys.stderr = log
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def run_job(job: Job) -> dict:
    """Train one config in a temporary run directory (deleted after); return its scores."""
    import mtl
    from mtl.config import config_from_dict

    tmp = tempfile.mkdtemp(prefix="mtl-lowlabel-")
    start, cpu = time.perf_counter(), time.process_time()
    record: dict[str, Any] = {"variant": job.variant, "fraction": job.fraction, "seed": job.seed,
                              "config_sha": job.config_sha}
    try:
        result = mtl.train(config_from_dict(job.config), os.path.join(tmp, "run"))
        record |= {"val_auc": result.metrics["val"][MAIN]["auc"], "test_auc": result.metrics["test"][MAIN]["auc"],
                   "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   "epochs": len(result.history),
                   "aux_test_rmse": {t: m["rmse"] for t, m in result.metrics["test"].items() if t != MAIN}}
    except Exception as exc:  # one failed run is reported, not the end of a half-hour benchmark
        record["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        import keras

        keras.backend.clear_session()  # the next run starts from a fresh graph
    record["seconds"], record["cpu_seconds"] = time.perf_counter() - start, time.process_time() - cpu
    return record


def run_all(jobs: list[Job], workers: int, log_dir: str, on_record: Callable[[dict], None]) -> None:
    """Run the jobs, the slowest first, in ``workers`` spawned processes (in this process if ``workers`` is 1),
    handing each result to ``on_record``. A worker is replaced after 10 runs: memory grows from run to run."""
    jobs = sorted(jobs, key=lambda j: -VARIANTS[j.variant].cost)
    done = 0

    def progress(record: dict) -> None:
        nonlocal done
        done += 1
        on_record(record)
        status = record.get("error") or f"test AUC {record['test_auc']:.4f}, {record['epochs']} epochs"
        print(f"  [{done}/{len(jobs)}] {record['variant']} {record['fraction']:g} seed {record['seed']}: "
              f"{status} ({record['seconds']:.0f} s)", file=sys.stderr, flush=True)

    if workers <= 1:
        for job in jobs:
            progress(run_job(job))
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = multiprocessing.get_context("spawn")
    # multiprocessing.Pool rather than ProcessPoolExecutor, whose max_tasks_per_child hangs in Python 3.11
    with ctx.Pool(workers, _init_worker, (threads, os.path.join(log_dir, "workers.log")), maxtasksperchild=10) as pool:
        for record in pool.imap_unordered(run_job, jobs):
            progress(record)


# ---------------------------------------------------------------------------------------------- summary
def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(records: list[dict]) -> dict[str, dict[float, dict]]:
    """Per variant and fraction: test AUC mean/std, and per seed against single-task (same seed) the gain
    Delta m = (AUC - AUC_single) / AUC_single in % and Delta AUC; plus the val-selected ``best_schedule``."""
    ok = [r for r in records if "error" not in r]
    by_key = {(r["variant"], r["fraction"], r["seed"]): r for r in ok}
    fractions = sorted({r["fraction"] for r in records})
    seeds = sorted({r["seed"] for r in records})
    for fraction in fractions:  # best_schedule: per seed, the schedule with the best validation AUC
        for seed in seeds:
            candidates = [by_key[s, fraction, seed] for s in SCHEDULES if (s, fraction, seed) in by_key]
            if len(candidates) == len(SCHEDULES):
                best = max(candidates, key=lambda r: r["val_auc"])
                by_key[BEST, fraction, seed] = {**best, "variant": BEST, "chosen": best["variant"]}
    summary: dict[str, dict[float, dict]] = {}
    for name in ALL_NAMES:
        for fraction in fractions:
            runs = [by_key[name, fraction, s] for s in seeds if (name, fraction, s) in by_key]
            if not runs:
                continue
            auc = [r["test_auc"] for r in runs]
            cell: dict[str, Any] = {"n": len(runs), "auc": _mean_std(auc),
                                    "seconds": statistics.fmean(r["seconds"] for r in runs),
                                    "cpu_seconds": statistics.fmean(r["cpu_seconds"] for r in runs),
                                    "epochs": statistics.fmean(r["epochs"] for r in runs)}
            if all("peak_rss_mb" in r for r in runs):  # the worker process's peak so far (it runs up to 10 runs)
                cell["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
            paired = [(r["test_auc"], by_key["single", fraction, r["seed"]]["test_auc"]) for r in runs
                      if ("single", fraction, r["seed"]) in by_key]
            if paired and name != "single":
                cell["delta_m"] = _mean_std([100 * (a - s) / s for a, s in paired])
                cell["delta_auc"] = _mean_std([a - s for a, s in paired])
                cell["wins"] = (sum(a > s for a, s in paired), len(paired))
            if name == BEST:
                cell["chosen"] = {s: sum(r["chosen"] == s for r in runs) for s in SCHEDULES}
            summary.setdefault(name, {})[fraction] = cell
    return summary


def markdown_table(summary: dict[str, dict[float, dict]], seeds: int) -> str:
    """Rows: variants; per fraction, test AUC mean ± std and Delta m (% vs single-task, paired by seed)."""
    fractions = sorted({f for cells in summary.values() for f in cells})
    head = "| variant | " + " | ".join(f"AUC {f:.0%} labels | Δm {f:.0%} (wins)" for f in fractions) + " | CPU s/run |"
    lines = [head, "|---|" + "---:|---:|" * len(fractions) + "---:|"]
    for name, cells in summary.items():
        row = [VARIANTS[name].label if name in VARIANTS else "MTL, best schedule (val-selected per seed)"]
        for f in fractions:
            c = cells.get(f)
            if c is None:
                row += ["—", "—"]
                continue
            n = "" if c["n"] == seeds else f" (n={c['n']})"
            row.append(f"{c['auc'][0]:.4f} ± {c['auc'][1]:.4f}{n}")
            row.append(f"{c['delta_m'][0]:+.2f} ± {c['delta_m'][1]:.2f} % ({c['wins'][0]}/{c['wins'][1]})"
                       if "delta_m" in c else "0 (reference)" if name == "single" else "—")
        seconds = [c["cpu_seconds"] for c in cells.values()]
        row.append("—" if name == BEST else f"{statistics.fmean(seconds):.0f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def delta_table(summary: dict[str, dict[float, dict]]) -> str:
    """Rows: variants; per fraction, the paired test AUC difference to single-task, mean ± std over seeds."""
    fractions = sorted({f for cells in summary.values() for f in cells})
    lines = ["| variant | " + " | ".join(f"ΔAUC {f:.0%}" for f in fractions) + " | wall s/run | peak RSS MB |",
             "|---|" + "---:|" * (len(fractions) + 2)]
    for name, cells in summary.items():
        if name == "single":
            continue
        row = [name] + [f"{cells[f]['delta_auc'][0]:+.4f} ± {cells[f]['delta_auc'][1]:.4f}"
                        if f in cells and "delta_auc" in cells[f] else "—" for f in fractions]
        row.append(f"{statistics.fmean(c['seconds'] for c in cells.values()):.0f}")
        rss = [c["peak_rss_mb"] for c in cells.values() if "peak_rss_mb" in c]
        row.append(f"{max(rss):.0f}" if rss else "—")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (each: split, labelled rows, init)")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.05, 1.0],
                        help="fractions of training rows keeping their income label")
    parser.add_argument("--epochs", type=int, default=6, help="at most this many epochs (early stopping, patience 2)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--learning-rate", type=float, default=0.002)
    parser.add_argument("--variants", nargs="+", default=None, choices=ALL_NAMES, metavar="VARIANT",
                        help=f"a subset of: {' '.join(ALL_NAMES)} (default: all)")
    parser.add_argument("--aux", nargs="+", default=["hours_per_week"], choices=AUX_COLUMNS,
                        help="auxiliary tasks; 'age' also removes age from the inputs of every variant")
    parser.add_argument("--workers", type=int, default=2, help="spawned worker processes (1: run in this process)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke setting: 1 seed, 1 epoch, fraction 0.05, variants single and equal, in-process")
    parser.add_argument("--out", default=None, help="write the raw per-seed results and the summary as JSON here "
                        "(rewritten after every run, so an interrupted benchmark keeps what it finished)")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the successful runs already in --out whose config is unchanged; run the rest")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs, args.fractions, args.workers = 1, 1, [0.05], 1
        args.variants = args.variants or ["single", "equal"]
    args.variants = args.variants or list(ALL_NAMES)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the tables; return ``{"records", "summary", "table", ...}``."""
    args = parse_args(argv)
    names = [n for n in VARIANTS if n in args.variants or (BEST in args.variants and n in SCHEDULES)]
    jobs = [Job(n, f, s, adult_config(VARIANTS[n], f, s, args.aux, args.epochs, args.batch_size, args.learning_rate))
            for f in args.fractions for s in range(args.seeds) for n in names
            if not (VARIANTS[n].skip_unlabelled and f == 1.0)]  # every row has a label: the same run as single
    host = machine()
    print(f"Low-label benchmark (tabular): UCI Adult, main task income, auxiliary {', '.join(args.aux)}; "
          f"{args.seeds} seeds, income labels on {', '.join(f'{f:.0%}' for f in args.fractions)} of the training "
          f"rows; up to {args.epochs} epochs, batch {args.batch_size}, Adam({args.learning_rate:g}); {len(jobs)} runs "
          f"in {args.workers} worker(s)")
    print(f"machine: {host['cpu']}, {host['cores']} cores; Python {host['python']}, TensorFlow {host['tensorflow']}, "
          f"Keras {host['keras']}; {host['date']}\n", flush=True)
    command = " ".join(["python", "benchmarks/low_label.py", *(argv if argv is not None else sys.argv[1:])])
    records: list[dict] = []
    earlier_wall = 0.0
    if args.resume and args.out and os.path.exists(args.out):
        with open(args.out) as f:
            saved = json.load(f)
        wanted = {(j.variant, j.fraction, j.seed, j.config_sha) for j in jobs}
        records = [r for r in saved["records"] if "error" not in r
                   and (r["variant"], r["fraction"], r["seed"], r.get("config_sha")) in wanted]
        earlier_wall = saved.get("wall_seconds", 0.0)
        have = {(r["variant"], r["fraction"], r["seed"]) for r in records}
        jobs = [j for j in jobs if (j.variant, j.fraction, j.seed) not in have]
        print(f"resuming: {len(records)} runs reused from {args.out}, {len(jobs)} to run\n", flush=True)
    log_dir = tempfile.mkdtemp(prefix="mtl-lowlabel-logs-")
    start = time.perf_counter()

    def save(partial: bool) -> None:
        if args.out:
            with open(args.out, "w") as f:
                json.dump({"partial": partial, "machine": host, "args": vars(args), "command": command,
                           "wall_seconds": earlier_wall + time.perf_counter() - start, "records": records}, f,
                          indent=1, default=str)

    def on_record(record: dict) -> None:
        records.append(record)
        save(partial=True)

    run_all(jobs, args.workers, log_dir, on_record)
    wall = earlier_wall + time.perf_counter() - start
    records.sort(key=lambda r: (r["fraction"], ALL_NAMES.index(r["variant"]), r["seed"]))

    summary = {n: cells for n, cells in summarise(records).items() if n in args.variants}
    table = markdown_table(summary, args.seeds)
    print("\ntest AUC of income, mean ± std over seeds; Δm: (AUC - AUC_single) / AUC_single in %, per seed against "
          "single-task on the same seed, mean ± std (seeds where the variant beats single-task)\n")
    print(table)
    if any("delta_auc" in c for cells in summary.values() for c in cells.values()):
        print("\npaired test AUC difference to single-task (same seed), mean ± std\n")
        print(delta_table(summary))
    if BEST in summary:
        print("\nschedules chosen by validation AUC (seeds): " + "; ".join(
            f"{f:.0%}: " + ", ".join(f"{s} {k}" for s, k in c["chosen"].items() if k)
            for f, c in summary[BEST].items()))
    failed = [r for r in records if "error" in r]
    for r in failed:
        print(f"FAILED {r['variant']} {r['fraction']:g} seed {r['seed']}: {r['error']}")
    cpu = sum(r["cpu_seconds"] for r in records)
    print(f"\n{len(records)} runs, {len(failed)} failed; wall time {wall / 60:.1f} min; the runs' CPU time "
          f"{cpu / 60:.1f} min (worker logs: {log_dir})")
    result = {"machine": host, "args": vars(args), "command": command,
              "wall_seconds": wall, "cpu_seconds": cpu, "records": records, "table": table,
              "summary": {n: {str(f): c for f, c in cells.items()} for n, cells in summary.items()},
              "variants": {n: asdict(v) for n, v in VARIANTS.items()}}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1, default=str)
    return result


if __name__ == "__main__":
    main()
