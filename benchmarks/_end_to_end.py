"""``train_throughput.py --end-to-end``: what a user runs, ``mtl train`` epochs, against a plain PyTorch loop.

* **Synthetic** (the shapes of issue 11): 50,000 rows x 20 numeric features, a binary task with 30 % of its labels
  missing and a regression task with 50 % missing, trunk 64-64, no towers, batch 256, Adam 1e-3. Each round runs
  ``mtl train`` (the CLI, a subprocess) and the PyTorch loop (``_torch_loop.py``, a subprocess in
  ``benchmarks/.venv-torch``), the order alternating. An mtl epoch's time is the spacing of the epoch summaries its
  run writes to TensorBoard (``train/`` ``epoch_loss``: every epoch's training, validation, history and checkpoint
  lie between two of them); the first epoch (tracing) is left out, the median of the others is taken.
* **Adult** (``configs/default.yaml``, early stopping off so that every run has its epochs): the same epoch
  timing; with ``--baseline-mtl DIR`` (a checkout of an older ``mtl`` package), that code is timed in the same
  rounds, so the speed-up is measured side by side.
* **Overhead split**: one in-process ``mtl.training.train`` of the synthetic config with every callback's own hooks
  timed (``keras.Model.fit`` wrapped), validation timed from ``on_test_begin`` to ``on_test_end``; the rest of an
  epoch is the training steps (input pipeline included).

The machine's load average (``/proc/loadavg``) is recorded before and after every run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TORCH_VERSION = "2.13.0"
SYNTHETIC_ROWS, SYNTHETIC_FEATURES = 50_000, 20


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def ensure_torch_venv(venv: Path) -> Path:
    """The benchmark's own PyTorch (CPU) environment; created on first use, never a project dependency."""
    python = venv / "bin" / "python"
    if python.exists():
        return python
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", f"torch=={TORCH_VERSION}", "numpy"]
    cpu_index = subprocess.run([*pip, "--index-url", "https://download.pytorch.org/whl/cpu"], capture_output=True)
    if cpu_index.returncode != 0:  # no route to PyTorch's own index: the PyPI wheel
        subprocess.run(pip, check=True)
    return python


def write_synthetic(work: Path, seed: int = 0) -> tuple[Path, Path]:
    """The synthetic table as Parquet (for mtl) and .npz (for the PyTorch loop); the same numbers."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(SYNTHETIC_ROWS, SYNTHETIC_FEATURES)).astype("float32")
    logit = x @ rng.normal(size=SYNTHETIC_FEATURES) / np.sqrt(SYNTHETIC_FEATURES)
    clicked = (rng.random(SYNTHETIC_ROWS) < 1 / (1 + np.exp(-logit))).astype("float64")
    amount = x[:, :5].sum(axis=1) + rng.normal(size=SYNTHETIC_ROWS)
    clicked[rng.random(SYNTHETIC_ROWS) < 0.3] = np.nan
    amount[rng.random(SYNTHETIC_ROWS) < 0.5] = np.nan
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(SYNTHETIC_FEATURES)])
    frame["clicked"], frame["amount"] = clicked, amount
    frame.to_parquet(work / "synthetic.parquet")
    np.savez(work / "synthetic.npz", x=x, clicked=clicked, amount=amount)
    columns = ", ".join(f"x{i}" for i in range(SYNTHETIC_FEATURES))
    config = work / "synthetic.yaml"
    config.write_text(f"""seed: 0
data:
  path: {work / 'synthetic.parquet'}
  features: {{numeric: [{columns}]}}
tasks:
  clicked: {{type: binary, column: clicked, positive: 1}}
  amount: {{type: regression, column: amount}}
model: {{trunk: {{units: [64, 64]}}, head: {{units: []}}}}
training: {{batch_size: 256, optimizer: adam, learning_rate: 0.001, epochs: 2}}
""")
    return config, work / "synthetic.npz"


def epoch_end_times(run_dir: Path) -> list[float]:
    """Wall times of the run's epoch summaries (``tensorboard/train``, tag ``epoch_loss``), in epoch order."""
    import tensorflow as tf

    times: dict[int, float] = {}
    for path in sorted((run_dir / "tensorboard" / "train").glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            if any(value.tag == "epoch_loss" for value in event.summary.value):
                times[event.step] = event.wall_time
    return [times[k] for k in sorted(times)]


def mtl_run(config: Path, epochs: int, work: Path, mtl_path: Path, extra: list[str]) -> dict[str, Any]:
    """One ``mtl train`` (a subprocess running ``mtl_path``'s package); its steady epochs' times."""
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=work)) / "run"
    env = {**os.environ, "PYTHONPATH": str(mtl_path), "TF_CPP_MIN_LOG_LEVEL": "2"}
    before, start = load(), time.perf_counter()
    usage = os.times()
    # cwd: ``python -m`` puts the working directory first on sys.path, where a checkout's own ``mtl`` would shadow
    # ``mtl_path`` (before 2026-12-01 18:45 UTC every "baseline" run ran the current code this way)
    done = subprocess.run([sys.executable, "-m", "mtl.cli", "train", "--config", str(config), "--run-dir",
                           str(run_dir), "--set", f"training.epochs={epochs}", *extra], env=env, capture_output=True,
                          text=True, cwd=work)
    wall, cpu = time.perf_counter() - start, os.times().children_user + os.times().children_system
    cpu -= usage.children_user + usage.children_system
    if done.returncode != 0:
        raise RuntimeError(f"mtl train failed:\n{done.stderr[-3000:]}")
    ends = epoch_end_times(run_dir)
    steady = [b - a for a, b in zip(ends[:-1], ends[1:], strict=True)]  # epoch 2 onwards: tracing left out
    return {"epoch_s": steady, "median_epoch_s": statistics.median(steady), "run_wall_s": wall, "run_cpu_s": cpu,
            "load_before": before, "load_after": load()}


def imported_mtl(mtl_path: Path, work: Path) -> str:
    """The ``mtl`` package a run with ``mtl_path`` imports (checked to lie under ``mtl_path``)."""
    env = {**os.environ, "PYTHONPATH": str(mtl_path)}
    done = subprocess.run([sys.executable, "-c", "import mtl; print(mtl.__file__)"], env=env, capture_output=True,
                          text=True, check=True, cwd=work)
    found = done.stdout.strip().splitlines()[-1]
    if not Path(found).resolve().is_relative_to(Path(mtl_path).resolve()):
        raise RuntimeError(f"a run with PYTHONPATH={mtl_path} imports {found}")
    return found


def torch_run(python: Path, data: Path, epochs: int, batch_size: int, threads: int) -> dict[str, Any]:
    before = load()
    done = subprocess.run([str(python), str(HERE / "_torch_loop.py"), str(data), "--epochs", str(epochs),
                           "--batch-size", str(batch_size), "--threads", str(threads)], capture_output=True, text=True,
                          check=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    steady = [e["wall"] for e in out["epochs"][1:]]
    return {"rows": out["rows"], "epoch_s": steady, "median_epoch_s": statistics.median(steady),
            "cpu_s": [e["cpu"] for e in out["epochs"][1:]], "torch": out["torch"], "load_before": before,
            "load_after": load()}


def rows_of(config: Path) -> int:
    """Training rows of ``config``'s split (what one epoch trains on)."""
    code = ("import sys; from mtl.config import load_config; from mtl.data import load_data; "
            "print(len(load_data(load_config(sys.argv[1]))[0].train))")
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", code, str(config)], env=env, capture_output=True, text=True,
                          check=True)
    return int(done.stdout.strip().splitlines()[-1])


def overhead_split(config: str, epochs: int, work: str, conn: Any) -> None:
    """In a spawned process: ``mtl.training.train`` with each callback hook and validation timed per epoch."""
    import functools

    import keras

    from mtl.config import load_config
    from mtl.training import train

    spent: dict[str, list[float]] = {}
    epoch_wall: list[float] = []
    hooks = ("on_epoch_begin", "on_epoch_end", "on_train_batch_begin", "on_train_batch_end", "on_test_begin",
             "on_test_end", "on_test_batch_end")

    def timed(callback: Any) -> Any:
        for hook in hooks:
            if getattr(type(callback), hook) is getattr(keras.callbacks.Callback, hook):
                continue  # not overridden: left alone, so Keras' dispatch (asynchronous or not) is unchanged
            original, key = getattr(callback, hook), f"{type(callback).__name__}.{hook}"

            @functools.wraps(original)
            def wrapper(*a: Any, _original: Any = original, _key: str = key, **k: Any) -> Any:
                start = time.perf_counter()
                try:
                    return _original(*a, **k)
                finally:
                    spent.setdefault(_key, [0.0] * epochs)[len(epoch_wall)] += time.perf_counter() - start
            setattr(callback, hook, wrapper)
        return callback

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.start = time.perf_counter()

        def on_test_begin(self, logs: dict | None = None) -> None:
            self.validation = time.perf_counter()

        def on_test_end(self, logs: dict | None = None) -> None:
            spent.setdefault("validation", [0.0] * epochs)[len(epoch_wall)] += time.perf_counter() - self.validation

    class Stop(keras.callbacks.Callback):  # last: after every other callback's epoch end
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            epoch_wall.append(time.perf_counter() - clock.start)

    clock, fit = Clock(), keras.Model.fit

    def timed_fit(self: Any, *args: Any, callbacks: list | None = None, **kwargs: Any) -> Any:
        return fit(self, *args, callbacks=[clock, *(timed(c) for c in callbacks or []), Stop()], **kwargs)

    keras.Model.fit = timed_fit
    cfg = load_config(config)
    cfg.training.epochs, cfg.training.verbose = epochs, 0
    train(cfg, Path(tempfile.mkdtemp(prefix="split-", dir=work)) / "run")
    conn.send({"epoch_s": epoch_wall, "parts": spent})


def split_table(result: dict[str, Any]) -> list[str]:
    """Median per steady epoch (epoch 2 onwards) of each part, and the training steps as the rest."""
    steady = slice(1, None)
    epoch = statistics.median(result["epoch_s"][steady])
    parts = {k: statistics.median(v[steady]) for k, v in result["parts"].items()}
    validation = parts.pop("validation", 0.0)
    callbacks = sum(parts.values())
    lines = ["| part of a steady epoch | ms (median) | share |", "|---|---:|---:|"]
    rows = [("whole epoch", epoch), ("training steps (input pipeline included)", epoch - validation - callbacks),
            ("validation (forward pass and metrics over the val split)", validation)]
    rows += [(k, v) for k, v in sorted(parts.items(), key=lambda kv: -kv[1]) if v >= 5e-5]
    for name, seconds in rows:
        lines.append(f"| {name} | {seconds * 1000:,.1f} | {seconds / epoch:.1%} |")
    return lines


def main(args: argparse.Namespace) -> None:
    import multiprocessing

    sys.path.insert(0, str(HERE))
    from _host import machine

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="mtl-e2e-"))
    work.mkdir(parents=True, exist_ok=True)
    config, npz = write_synthetic(work)
    adult = REPO / "configs" / "default.yaml"
    adult_args = ["--set", "training.early_stopping=null"]
    python = Path(args.torch_python) if args.torch_python else ensure_torch_venv(HERE / ".venv-torch")
    host = machine()
    print("End to end: mtl train epochs vs a plain PyTorch eager loop, and on Adult")
    print(f"machine: {host['cpu']}, {host['cores']} cores; Python {host['python']}, TensorFlow {host['tensorflow']}, "
          f"Keras {host['keras']}; {host['date']}; load average at start {load()}")
    synthetic_rows, adult_rows = rows_of(config), rows_of(adult)
    baselines = {"mtl": REPO} | ({"baseline": Path(args.baseline_mtl)} if args.baseline_mtl else {})
    for name, path in baselines.items():
        print(f"{name}: {imported_mtl(path, work)}")
    rounds: list[dict[str, Any]] = []
    for r in range(args.rounds):
        round_: dict[str, Any] = {}
        jobs = [(f"torch {t} threads", t) for t in args.torch_threads] + list(baselines.items())
        if r % 2:
            jobs.reverse()
        for name, path in jobs:
            if name.startswith("torch"):
                round_[name] = torch_run(python, npz, args.end_to_end_epochs, args.batch_size, path)
            else:
                round_[f"{name} synthetic"] = mtl_run(config, args.end_to_end_epochs, work, path, [])
        for name, path in (reversed(baselines.items()) if r % 2 else baselines.items()):
            if not args.skip_adult:  # a baseline checkout's own configs/default.yaml when it has one (its schema)
                own = Path(path) / "configs" / "default.yaml"
                round_[f"{name} adult"] = mtl_run(own if own.exists() else adult, args.adult_epochs, work, path,
                                                  adult_args)
        rounds.append(round_)
        summary = ", ".join(f"{k} {v['median_epoch_s']:.3f} s/epoch (load {v['load_before']})"
                            for k, v in round_.items())
        print(f"round {r + 1}: {summary}", flush=True)

    def speed(key: str, rows: int) -> list[float]:
        return [rows / rd[key]["median_epoch_s"] for rd in rounds if key in rd]

    torch_keys = [f"torch {t} threads" for t in args.torch_threads]
    torch_rows = rounds[0][torch_keys[0]]["rows"]
    for rd in rounds:  # PyTorch at its faster thread count in that round
        rd["torch"] = min((rd[k] for k in torch_keys), key=lambda run: run["median_epoch_s"])
    table = {"mtl train (synthetic)": (speed("mtl synthetic", synthetic_rows), synthetic_rows)}
    table |= {f"PyTorch eager loop, {k[6:]} (synthetic)": (speed(k, torch_rows), torch_rows) for k in torch_keys}
    if args.baseline_mtl:
        table["baseline mtl train (synthetic)"] = (speed("baseline synthetic", synthetic_rows), synthetic_rows)
    if not args.skip_adult:
        table["mtl train (Adult, configs/default.yaml)"] = (speed("mtl adult", adult_rows), adult_rows)
        if args.baseline_mtl:
            table["baseline mtl train (Adult)"] = (speed("baseline adult", adult_rows), adult_rows)
    print("\n| loop | training rows | samples/s per steady epoch, each round | median |")
    print("|---|---:|---|---:|")
    for name, (speeds, rows) in table.items():
        print(f"| {name} | {rows:,} | {', '.join(f'{s:,.0f}' for s in speeds)} | {statistics.median(speeds):,.0f} |")
    paired = [rd["torch"]["median_epoch_s"] / torch_rows / (rd["mtl synthetic"]["median_epoch_s"] / synthetic_rows)
              for rd in rounds]
    print("\nmtl / PyTorch (its faster thread count) samples/s, per round (target >= 1.25): "
          + ", ".join(f"{p:.2f}" for p in paired))
    if args.baseline_mtl:
        for data in ("synthetic",) + (() if args.skip_adult else ("adult",)):
            gain = [rd[f"baseline {data}"]["median_epoch_s"] / rd[f"mtl {data}"]["median_epoch_s"] for rd in rounds]
            print(f"mtl / baseline epoch throughput, {data}, per round: {', '.join(f'{g:.2f}' for g in gain)}")

    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=overhead_split, args=(str(config), args.split_epochs, str(work), sender))
    before = load()
    process.start()
    split = receiver.recv()
    process.join()
    print(f"\nOverhead split, synthetic config, {args.split_epochs} epochs in process (load {before} -> {load()}):\n")
    print("\n".join(split_table(split)))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": host, "args": vars(args), "rounds": rounds,
                                               "split": split}, indent=1, default=str))
