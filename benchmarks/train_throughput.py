"""Training throughput: ``MultiTaskModel.train_step`` against plain Keras ``compile(loss=...)`` + ``fit``;
with ``--strategies``, also each weighting strategy and trunk against fixed weights on the shared bottom.

Run (about 2 minutes on 2 idle cores; up to about 3 when other processes compete)::

    .venv/bin/python benchmarks/train_throughput.py
    .venv/bin/python benchmarks/train_throughput.py --end-to-end   # real `mtl train` runs vs PyTorch (_end_to_end.py)
    .venv/bin/python benchmarks/train_throughput.py --strategies   # + one row per strategy and trunk

Both variants train the same graph (UCI Adult; income: binary, hours_per_week: regression), built
with the same seed so that their initial weights are identical (checked by a hash), on the same
cached tf.data batches ``(features, labels, weights)``, with the same optimizer, batch size,
``steps_per_execution``, loss weights and metric objects (``Task.make_metrics()``):

* ``custom``: mtl's ``MultiTaskModel`` (masked per-task losses, ``task_weights``, masked metrics);
* ``plain``: ``keras.Model(m.input, m.output)`` compiled with ``binary_crossentropy`` / ``mse`` per
  output, ``loss_weights``, the task metrics as ``weighted_metrics`` and the weights dict as sample
  weights. Its ``mse`` is on the raw target (mtl's loss standardises it) and Keras averages over the
  batch rather than over the labelled rows: the losses differ in scale, not in the work done.

Each (setting, variant) runs in its own spawned worker process, so that its peak RSS is its own.
All workers build and warm up first (the warm-up epoch, which traces the step, is not timed); then,
round by round, each setting times one pair of runs (``--epochs`` epochs of one variant, then of the
other, the order alternating), so that all settings and variants share the same stretches of time.
A pair during which other processes kept more than ``--max-other-load`` cores busy is set aside and
retried, after waiting (up to ``--max-wait`` s in all) for that load to pass. Reported per setting
and variant: samples/s (median over the timed epochs, min-max), samples per CPU-second (steadier
when the machine is shared), peak RSS (``ru_maxrss``) and RSS before ``fit``; and custom/plain as
the ratio of the medians, the median of the per-pair ratios, and by CPU time. The masked setting
keeps income labels on ``--label-fraction`` of the rows (weight 0 on the others) in both variants.

``--strategies`` adds one group of rows, all mtl's ``MultiTaskModel`` at the first ``--steps-per-execution``:
fixed weights on the shared bottom (the reference, the same worker as that setting's ``custom``), each
``training.weighting`` strategy on the shared bottom (with the epoch hooks ``mtl.train`` installs), and the
``mmoe`` and ``ple`` trunks (their defaults) with fixed weights. Each round times one run of every row in turn,
the order rotating, and the speed is given relative to the reference, as for the pairs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from _host import SpawnedWorker, busy_cpu, machine, rss_mib, worker_side

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # inherited by the spawned workers

VARIANTS = ("custom", "plain")
STRATEGIES = ("uncertainty", "gradnorm", "dwa", "rlw", "pcgrad", "cagrad")
TRUNKS = ("mmoe", "ple")
FEATURES = {
    "numeric": ["age", "educational_num", "capital_gain", "capital_loss", "fnlwgt"],
    "categorical": ["workclass", "education", "marital_status", "occupation", "relationship", "race", "gender",
                    "native_country"],
}
TASKS = {
    "income": {"type": "binary", "column": "income", "positive": ">50K"},
    "hours_per_week": {"type": "regression", "column": "hours_per_week"},
}
PLAIN_LOSSES = {"income": "binary_crossentropy", "hours_per_week": "mse"}
LOSS_WEIGHTS = {"income": 1.0, "hours_per_week": 0.5}
SEED = 0


@dataclass(frozen=True)
class Setting:
    steps_per_execution: int
    label_fraction: float = 1.0
    weighting: str = "fixed"
    trunk: str = "shared_bottom"

    @property
    def name(self) -> str:
        masked = f", income labels on {self.label_fraction:.0%}" if self.label_fraction < 1 else ""
        how = f", {self.weighting}" if self.weighting != "fixed" else ""
        trunk = f", {self.trunk} trunk" if self.trunk != "shared_bottom" else ""
        return f"spe={self.steps_per_execution}{masked}{how}{trunk}"

    @property
    def slug(self) -> str:
        masked = f"-labels{round(self.label_fraction * 100)}" if self.label_fraction < 1 else ""
        how = f"-{self.weighting}" if self.weighting != "fixed" else ""
        trunk = f"-{self.trunk}" if self.trunk != "shared_bottom" else ""
        return f"spe{self.steps_per_execution}{masked}{how}{trunk}"

    @property
    def row(self) -> str:
        """The row's name in the strategies table."""
        if self.trunk != "shared_bottom":
            return f"{self.trunk} trunk, fixed weights"
        return f"shared bottom, {self.weighting}" + (" weights (reference)" if self.weighting == "fixed" else "")


Member = tuple[Setting, str]  # (setting, variant): one worker


@dataclass(frozen=True)
class Group:
    """Rows timed together, round by round (the order rotating), against ``members[reference]``."""

    name: str
    members: tuple[Member, ...]
    reference: int


# ---------------------------------------------------------------------------------------------- worker
def build(variant: str, setting: Setting, batch_size: int) -> tuple[Any, Any, int, str]:
    """``(compiled model, dataset, rows, initial-weights hash)`` for one variant."""
    import keras
    import numpy as np
    import tensorflow as tf

    from mtl.config import config_from_dict
    from mtl.data import load_data
    from mtl.model import build_model

    cfg = config_from_dict({"data": {"dataset": "adult", "features": FEATURES, "split": {"stratify": "income"}},
                            "tasks": TASKS, "model": {"trunk": {"type": setting.trunk}},
                            "training": {"weighting": setting.weighting}})
    data, tasks = load_data(cfg)
    train = data.train

    weights = {name: np.asarray(w, dtype="float32").copy() for name, w in train.weights.items()}
    if setting.label_fraction < 1:
        unlabelled = np.random.default_rng(SEED).random(len(train)) >= setting.label_fraction
        weights["income"][unlabelled] = 0.0
    labels = {name: np.asarray(y).reshape(-1, 1) for name, y in train.labels.items()}  # F1Score, R2Score: 2-D
    dataset = (tf.data.Dataset.from_tensor_slices((dict(train.features), labels, weights))
               .batch(batch_size).cache().prefetch(2))

    keras.utils.set_random_seed(SEED)
    mtl_model = build_model(cfg.model, tasks, data.features, weighting=cfg.training.weighting.model_dump())
    plain = keras.Model(mtl_model.input, mtl_model.output, name="plain")  # the same layers, a stock train_step
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(w).tobytes() for w in plain.get_weights())).hexdigest()

    common = {"optimizer": keras.optimizers.Adam(1e-3), "steps_per_execution": setting.steps_per_execution,
              "jit_compile": False}
    if variant == "custom":
        if setting.weighting == "fixed":  # the other strategies set the weights themselves
            mtl_model.set_task_weights(LOSS_WEIGHTS)
        mtl_model.compile(**common)
        return mtl_model, dataset, len(train), digest
    plain.compile(loss=PLAIN_LOSSES, loss_weights=LOSS_WEIGHTS,
                  weighted_metrics={name: tasks[name].make_metrics() for name in TASKS}, **common)
    return plain, dataset, len(train), digest


def epoch_timer() -> Any:
    """A Keras callback recording each epoch's wall time, ``on_epoch_begin`` to ``on_epoch_end``."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.times: list[float] = []

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.times.append(time.perf_counter() - self.start)

    return EpochTimer()


def worker(conn: Any, variant: str, setting: Setting, batch_size: int, warmup_epochs: int, log_path: str) -> None:
    """Build and warm up, then answer ``("run", epochs)`` with epoch times until ``("stop",)``."""
    with worker_side(conn, log_path):
        model, dataset, rows, digest = build(variant, setting, batch_size)
        setup_rss = rss_mib()
        hooks = []
        if setting.weighting != "fixed":  # as in mtl.train: DWA updates its weights at the end of each epoch
            from mtl.training import WeightingEpochHooks

            hooks.append(WeightingEpochHooks())
        model.fit(dataset, epochs=warmup_epochs, verbose=0, shuffle=False, callbacks=hooks)
        conn.send({"rows": rows, "hash": digest, "setup_rss": setup_rss, "params": model.count_params()})
        while (command := conn.recv())[0] == "run":
            timer, cpu = epoch_timer(), time.process_time()
            model.fit(dataset, epochs=command[1], verbose=0, shuffle=False, callbacks=[*hooks, timer])
            conn.send({"times": timer.times, "cpu": time.process_time() - cpu})


# ---------------------------------------------------------------------------------------------- parent
def wait_for_quiet(limit: float, budget: list[float]) -> float:
    """Sleep, from the shared ``budget`` of seconds, while other processes keep more than ``limit`` cores
    busy (the workers are idle meanwhile); return the seconds waited."""
    waited = 0.0
    while budget[0] > 0:
        busy, start = busy_cpu(), time.perf_counter()
        time.sleep(0.5)
        wall = time.perf_counter() - start
        if (busy_cpu() - busy) / wall <= limit:
            break
        waited += wall
        budget[0] -= wall
    return waited


class Worker(SpawnedWorker):
    """One (setting, variant)'s spawned worker process and its pipe."""

    def __init__(self, ctx: Any, variant: str, setting: Setting, args: argparse.Namespace) -> None:
        super().__init__(ctx, variant, os.path.join(args.log_dir, f"{setting.slug}-{variant}.log"), worker,
                         (variant, setting, args.batch_size, args.warmup_epochs))
        self.variant = variant

    def run(self, epochs: int) -> dict:
        """Time ``epochs`` epochs; ``other_load``: cores kept busy meanwhile by anything but this worker."""
        busy, start = busy_cpu(), time.perf_counter()
        self.conn.send(("run", epochs))
        reply = self.recv()
        reply["other_load"] = max(0.0, (busy_cpu() - busy - reply["cpu"]) / (time.perf_counter() - start))
        return reply


def measure(groups: list[Group], args: argparse.Namespace) -> dict[Group, dict]:
    """Start one worker per (setting, variant) (a member of two groups shares its worker); then, round by round,
    one run of every member of each group that still lacks quiet rounds, so that all groups see the same
    stretches of machine time."""
    ctx = multiprocessing.get_context("spawn")
    members = list(dict.fromkeys(m for g in groups for m in g.members))
    workers = {(s, v): Worker(ctx, v, s, args) for s, v in members}  # build + warm up in parallel
    state = {g: {"quiet": [], "disturbed": [], "attempts": 0, "waited": 0.0} for g in groups}
    try:
        info = {m: workers[m].recv() for m in members}
        for g in groups:
            if [v for _, v in g.members] == list(VARIANTS) and len({info[m]["hash"] for m in g.members}) > 1:
                raise RuntimeError(f"{g.name}: the two variants do not start from the same weights")
        budget, busy_before = [args.max_wait], False
        for _ in range(args.repeats + args.retries):
            for g in groups:
                st = state[g]
                if len(st["quiet"]) >= args.repeats:
                    continue
                if busy_before:  # the last round was disturbed: let the other load pass first
                    st["waited"] += wait_for_quiet(args.max_other_load, budget)
                shift = st["attempts"] % len(g.members)  # a pair alternates; a larger group rotates
                order = g.members[shift:] + g.members[:shift]
                round_ = {m: workers[m].run(args.epochs) for m in order}
                st["attempts"] += 1
                busy_before = max(r["other_load"] for r in round_.values()) > args.max_other_load
                st["disturbed" if busy_before else "quiet"].append(round_)
        for m, w in workers.items():
            info[m].update(w.stop())
    finally:
        for w in workers.values():
            if w.process.is_alive():
                w.process.kill()
    return {g: summarise(g, info, state[g], args.repeats) for g in groups}


def summarise(group: Group, info: dict[Member, dict], state: dict, repeats: int) -> dict:
    """Per member of a group: medians, and speed relative to the reference, from its rounds of runs."""
    quiet = state["quiet"]
    disturbed = sorted(state["disturbed"], key=lambda round_: max(r["other_load"] for r in round_.values()))
    used = quiet + disturbed[: repeats - len(quiet)]  # short of quiet rounds: the least disturbed ones
    ref = group.members[group.reference]
    out: dict[str, Any] = {}
    for m in group.members:
        r = dict(info[m])
        rows = r["rows"]
        r["samples_per_s"] = [rows / t for round_ in used for t in round_[m]["times"]]
        r["median"] = statistics.median(r["samples_per_s"])
        # CPU time moves less than wall time when other processes compete for the cores: a secondary measure.
        r["per_cpu_s"] = statistics.median(rows * len(u[m]["times"]) / u[m]["cpu"] for u in used)
        out[m] = r
    for m in group.members:
        r, base = out[m], out[ref]
        r["ratio"] = r["median"] / base["median"]
        r["cpu_ratio"] = r["per_cpu_s"] / base["per_cpu_s"]
        r["paired_ratio"] = statistics.median(
            statistics.median(u[ref]["times"]) / statistics.median(u[m]["times"]) for u in used)
    result: dict[str, Any] = {"members": out}
    result["rounds"] = {"quiet": len(quiet), "disturbed": len(disturbed), "disturbed_used": len(used) - len(quiet),
                        "waited_s": state["waited"]}
    result["raw"] = {"used": [{f"{s.name}/{v}": r for (s, v), r in u.items()} for u in used],
                     "set_aside": [{f"{s.name}/{v}": r for (s, v), r in u.items()}
                                   for u in disturbed[repeats - len(quiet):]]}
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs per run (a pair: one run per variant)")
    parser.add_argument("--repeats", type=int, default=30, help="pairs of runs, alternating which variant goes first")
    parser.add_argument("--warmup-epochs", type=int, default=1, help="untimed epochs first (they include tracing)")
    parser.add_argument("--steps-per-execution", type=int, nargs="+", default=[16, 1],
                        help="one setting per value; the masked setting uses the first")
    parser.add_argument("--label-fraction", type=float, default=0.1,
                        help="masked setting: the fraction of rows keeping their income label (1 to skip it)")
    parser.add_argument("--max-other-load", type=float, default=0.25,
                        help="cores other processes may keep busy during a pair before it is set aside")
    parser.add_argument("--retries", type=int, default=None,
                        help="extra pairs allowed per setting (default: half of --repeats)")
    parser.add_argument("--max-wait", type=float, default=60.0,
                        help="seconds in all to wait before pairs for other processes to go quiet")
    parser.add_argument("--log-dir", default=None, help="worker logs (default: a new temporary directory)")
    parser.add_argument("--json", default=None, help="also write the raw results (epoch times, loads, RSS) here")
    parser.add_argument("--strategies", nargs="*", default=None, choices=[*STRATEGIES, *TRUNKS], metavar="NAME",
                        help="also time these weighting strategies and trunks against fixed weights on the shared "
                             f"bottom at the first --steps-per-execution (no names: all of {' '.join(STRATEGIES)} "
                             f"{' '.join(TRUNKS)})")
    e2e = parser.add_argument_group("end to end (--end-to-end): mtl train epochs vs a PyTorch loop, and on Adult")
    e2e.add_argument("--end-to-end", action="store_true", help="time real mtl train runs instead (see _end_to_end.py)")
    e2e.add_argument("--end-to-end-epochs", type=int, default=8, help="epochs per synthetic run (PyTorch alike)")
    e2e.add_argument("--adult-epochs", type=int, default=6, help="epochs per Adult run")
    e2e.add_argument("--skip-adult", action="store_true")
    e2e.add_argument("--torch-threads", type=int, nargs="+", default=[2, 1],
                     help="PyTorch runs per round, one per thread count; mtl is compared with the fastest")
    e2e.add_argument("--rounds", type=int, default=2, help="rounds of runs, the order alternating")
    e2e.add_argument("--split-epochs", type=int, default=5, help="epochs of the in-process overhead-split run")
    e2e.add_argument("--baseline-mtl", default=None,
                     help="a directory holding an older mtl package, timed in the same rounds")
    e2e.add_argument("--torch-python", default=None,
                     help="a Python with torch (default: benchmarks/.venv-torch, created on first use)")
    e2e.add_argument("--work-dir", default=None, help="data and run directories (default: a temporary directory)")
    args = parser.parse_args(argv)
    if args.end_to_end:
        import _end_to_end

        _end_to_end.main(args)
        return
    args.retries = args.repeats // 2 if args.retries is None else args.retries
    args.log_dir = args.log_dir or tempfile.mkdtemp(prefix="mtl-throughput-")
    os.makedirs(args.log_dir, exist_ok=True)

    settings = [Setting(n) for n in args.steps_per_execution]
    if 0 < args.label_fraction < 1:
        settings.append(Setting(args.steps_per_execution[0], args.label_fraction))
    groups = [Group(s.name, ((s, "custom"), (s, "plain")), reference=1) for s in settings]
    strategies = None
    if args.strategies is not None:
        spe = args.steps_per_execution[0]
        names = args.strategies or [*STRATEGIES, *TRUNKS]
        rows = [Setting(spe)] + [Setting(spe, trunk=n) if n in TRUNKS else Setting(spe, weighting=n) for n in names]
        strategies = Group(f"strategies, spe={spe}", tuple((s, "custom") for s in rows), reference=0)

    host = machine()
    print("Training throughput: mtl MultiTaskModel.train_step vs plain Keras compile(loss=...) + fit")
    print(f"machine: {host['cpu']}, {host['cores']} cores; Python {host['python']}, TensorFlow "
          f"{host['tensorflow']}, Keras {host['keras']}; {host['date']}")
    print(f"UCI Adult training split, batch {args.batch_size}, Adam(1e-3), jit_compile=False; "
          f"{args.warmup_epochs} warm-up epoch, then {args.repeats} alternating pairs of {args.epochs}-epoch runs; "
          f"worker logs: {args.log_dir}\n", flush=True)

    start = time.perf_counter()
    measured = measure(groups + ([strategies] if strategies else []), args)
    by_name = {}
    for g, s in zip(groups, settings, strict=True):  # the pairs, in the shape the tables below read
        res = measured[g]
        custom = res["members"][s, "custom"]
        by_name[s.name] = {"custom": custom, "plain": res["members"][s, "plain"], "ratio": custom["ratio"],
                           "paired_ratio": custom["paired_ratio"], "cpu_ratio": custom["cpu_ratio"],
                           "pairs": res["rounds"], "raw": res["raw"]}
    for setting in settings:
        res, p = by_name[setting.name], by_name[setting.name]["pairs"]
        print(f"  {setting.name}: custom {res['custom']['median']:,.0f}/s, plain {res['plain']['median']:,.0f}/s, "
              f"ratio {res['ratio']:.3f} (paired {res['paired_ratio']:.3f}, CPU time {res['cpu_ratio']:.3f}); "
              f"{res['custom']['rows']:,} rows, {res['custom']['params']:,} params, identical initial weights; "
              f"{p['quiet']} quiet pairs, {p['disturbed']} disturbed by other processes"
              + (f" ({p['disturbed_used']} used)" if p["disturbed_used"] else "")
              + (f"; waited {p['waited_s']:.0f} s for quiet" if p["waited_s"] else ""))

    print("\n| setting | variant | samples/s (median) | min–max | samples/CPU-s | peak RSS MiB | RSS before fit MiB "
          "| custom/plain (paired) | by CPU time |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for setting in settings:
        res = by_name[setting.name]
        for v in VARIANTS:
            r = res[v]
            ratio = (f"**{res['ratio']:.3f}** ({res['paired_ratio']:.3f}) | {res['cpu_ratio']:.3f}" if v == "custom"
                     else " | ")
            print(f"| {setting.name} | {v} | {r['median']:,.0f} | {min(r['samples_per_s']):,.0f}–"
                  f"{max(r['samples_per_s']):,.0f} | {r['per_cpu_s']:,.0f} | {r['peak_rss']:,.0f} "
                  f"| {r['setup_rss']:,.0f} | {ratio} |")
    for setting in settings:
        res, base = by_name[setting.name], by_name.get(Setting(setting.steps_per_execution).name)
        if setting.label_fraction < 1 and base:
            print(f"\nmasked / fully labelled, spe={setting.steps_per_execution}: "
                  + ", ".join(f"{v} {res[v]['median'] / base[v]['median']:.3f}" for v in VARIANTS))
    results: dict[str, Any] = {"pairs": by_name}
    if strategies:
        results["strategies"] = print_strategies(strategies, measured[strategies])
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": host, "args": vars(args), "results": results}, f, indent=1)


def print_strategies(group: Group, res: dict) -> dict:
    """Print the strategies table; return its results keyed by row name (for the JSON)."""
    reference = group.members[group.reference]
    ref = res["members"][reference]
    rounds = res["rounds"]
    print(f"\n{group.name}: {rounds['quiet']} quiet rounds, {rounds['disturbed']} disturbed by other processes"
          + (f" ({rounds['disturbed_used']} used)" if rounds["disturbed_used"] else "")
          + (f"; waited {rounds['waited_s']:.0f} s for quiet" if rounds["waited_s"] else ""))
    print("\n| row | params | samples/s (median) | min–max | samples/CPU-s | peak RSS MiB | vs fixed (paired) "
          "| by CPU time |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for m in group.members:
        r = res["members"][m]
        ratio = "1" if m == reference else f"**{r['ratio']:.3f}** ({r['paired_ratio']:.3f})"
        print(f"| {m[0].row} | {r['params']:,} | {r['median']:,.0f} | {min(r['samples_per_s']):,.0f}–"
              f"{max(r['samples_per_s']):,.0f} | {r['per_cpu_s']:,.0f} | {r['peak_rss']:,.0f} | {ratio} "
              f"| {r['cpu_ratio']:.3f} |")
    differ = [m[0].row for m in group.members
              if m[0].trunk == "shared_bottom" and res["members"][m]["hash"] != ref["hash"]]
    if differ:
        print(f"\nnot the reference's initial weights: {', '.join(differ)}")
    return {m[0].row: res["members"][m] for m in group.members} | {"rounds": rounds, "raw": res["raw"]}


if __name__ == "__main__":
    main()
