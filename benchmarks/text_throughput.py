"""Text throughput: sentences/s of MiniLM embedding and training steps, batch trimming on and off, fp32 and bf16.

Run (the defaults take roughly 45 minutes on 2 shared cores; ``--quick`` is a one-minute smoke run)::

    nice -n 5 .venv/bin/python benchmarks/text_throughput.py
    MTL_REFERENCE_PYTHON=/tmp/refvenv/bin/python nice -n 5 .venv/bin/python benchmarks/text_throughput.py \
        --n 1000 --train-steps 20 --repeats 3 --json /tmp/text_throughput.json

Data: the first ``--n`` non-empty ``review_text`` values of the Women's clothing reviews (real sentences).

* ``embedding``: ``SentenceEmbedder`` on all-MiniLM-L6-v2 (mean pooling, max_length 256 as sentence-transformers,
  batch 32, texts sorted by length), after a warm-up pass on ``min(n, 256)`` texts. Each timed run embeds the
  ``n`` texts once.
* ``training``: the model of ``configs/womens_clothing.yaml`` (MiniLM fine-tuned, its max_length and windows) with
  two tasks, recommended (binary) and rating (regression), built with ``mtl.model.build_model``, compiled with
  AdamW and ``steps_per_execution=1``, fed by ``mtl.training._batches.to_dataset`` (batch 32, bucketed by length
  as the config asks). ``--warmup-steps`` batches are trained untimed first (tracing), then each timed run is
  one ``fit`` epoch over the next ``--train-steps`` batches (the same batches every run).

Variants: batch trimming on (each batch padded to its longest text) or off (``TextEncoder.trim = False``: padded
to max_length), and fp32 or bf16 (``keras.config.set_dtype_policy("mixed_bfloat16")`` before the model is built).
Every (part, variant) runs in its own spawned worker process, so its dtype policy and peak RSS (``ru_maxrss``)
are its own. The workers of a part build and warm up together; then, round by round, each variant times one run,
the starting variant rotating, so that load from other processes on a shared machine falls on all of them alike;
the medians over ``--repeats`` rounds are reported.

Training workers hold about 3-4 GiB each, so only ``--train-workers`` of them live at once: the variants are
interleaved within such a group, the groups run one after the other: by default fp32 and bf16 with trimming, then
both padded, so that the subtler ratio, bf16/fp32, is the one timed interleaved.

Where the reference implementation is installed (``$MTL_REFERENCE_PYTHON``, or ``--reference-python``: a Python
with sentence-transformers and torch), ``benchmarks/reference_embed_speed.py`` embeds the same ``n`` texts once per
round (batch 32, its own warm-up, model loading untimed) with each of ``--reference-threads`` torch threads,
interleaved with the embedding variants; each mtl variant is shown as a ratio of the faster reference setting
(target >= 1.0). Its peak RSS is that of the largest reference process. sentences/CPU-s divides by the CPU time
of the worker during the run (of the reference process during its timed pass): steadier than wall time when
other processes compete for the cores. "min cosine" compares each text's vector
with the fp32 trimmed one (trimming must not change the vectors; bf16 rounds them).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _host import SpawnedWorker, busy_cpu, machine, rss_mib, worker_side

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # inherited by the spawned workers

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_SCRIPT = ROOT / "benchmarks" / "reference_embed_speed.py"
CONFIG = ROOT / "configs" / "womens_clothing.yaml"
TASKS = ("recommended", "rating")
BATCH_SIZE = 32
EMBED_MAX_LENGTH = 256  # all-MiniLM-L6-v2's max_seq_length in sentence-transformers
PRECISIONS = {"fp32": "float32", "bf16": "mixed_bfloat16"}
REFERENCE = "sentence-transformers (PyTorch"  # + ", 2 threads)"


def reference_name(threads: int) -> str:
    """The reference's row name, e.g. ``sentence-transformers (PyTorch, 2 threads)``."""
    return f"{REFERENCE}, {threads} thread{'s' if threads > 1 else ''})"


@dataclass(frozen=True)
class Variant:
    part: str  # "embedding" or "training"
    precision: str  # "fp32" or "bf16"
    trim: bool

    @property
    def name(self) -> str:
        return f"{self.precision}, {'trim' if self.trim else 'pad'}"

    @property
    def slug(self) -> str:
        return f"{self.part}-{self.precision}-{'trim' if self.trim else 'pad'}"


# ---------------------------------------------------------------------------------------------- worker
def sentences(n: int) -> list[str]:
    """The first ``n`` non-empty review texts."""
    from mtl.data import read_table

    texts = read_table(dataset="womens_clothing")[0]["review_text"].dropna().astype(str).tolist()
    if len(texts) < n:
        raise ValueError(f"only {len(texts)} reviews, asked for {n}")
    return texts[:n]


def build_embedding(variant: Variant, n: int) -> tuple[Any, dict]:
    """A ``run()`` embedding the ``n`` texts once (returns the vectors), and facts about the model."""
    import tensorflow as tf

    from mtl.config import BackboneConfig
    from mtl.model import SentenceEmbedder, TextEncoder, load_backbone

    backbone, tokenizer = load_backbone(BackboneConfig(preset="all-MiniLM-L6-v2"))
    encoder = TextEncoder(backbone, tokenizer, max_length=EMBED_MAX_LENGTH, pooling="mean", trim=variant.trim)
    embedder = SentenceEmbedder(encoder, batch_size=BATCH_SIZE)
    texts = sentences(n)
    embedder.embed(texts[: min(n, 8 * BATCH_SIZE)])  # warm-up: traces, and meets most batch shapes
    pieces = tokenizer(tf.constant(texts))
    lengths = [len(p) for p in (pieces.to_list() if hasattr(pieces, "to_list") else pieces)]
    info = {"rows": n, "params": backbone.count_params(), "max_length": EMBED_MAX_LENGTH,
            "mean_pieces": statistics.mean(min(x + 2, EMBED_MAX_LENGTH) for x in lengths),
            "dtype_policy": backbone.dtype_policy.name}
    return lambda: embedder.embed(texts), info


def build_training(variant: Variant, warmup_steps: int, steps: int) -> tuple[Any, dict]:
    """A ``run()`` training one epoch of ``steps`` batches of 32, after ``warmup_steps`` untimed ones."""
    import keras
    import tensorflow as tf
    import yaml

    from mtl.config import config_from_dict
    from mtl.data import load_data
    from mtl.model import TextEncoder, build_model
    from mtl.training import to_dataset

    raw = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    raw["tasks"] = {name: raw["tasks"][name] for name in TASKS}
    raw["training"].update(epochs=1, verbose=0, batch_size=BATCH_SIZE, steps_per_execution=1)
    cfg = config_from_dict(raw, source=str(CONFIG))
    t = cfg.training
    data, tasks = load_data(cfg)
    text = data.words_column

    keras.utils.set_random_seed(cfg.seed)
    model = build_model(cfg.model, tasks, data.features, weighting=t.weighting.model_dump())
    encoder = next(layer for layer in model.layers if isinstance(layer, TextEncoder))
    encoder.trim = variant.trim
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=t.learning_rate, weight_decay=t.weight_decay),
                  steps_per_execution=1, jit_compile=False)

    batches = to_dataset(data.train, BATCH_SIZE, bucket_by=text if t.bucket_by_length else None)
    batches = batches.take(warmup_steps + steps).cache()
    rows = [int(features[text].shape[0]) for features, _, _ in batches]  # fills the cache
    if len(rows) < warmup_steps + steps:
        raise ValueError(f"the training split has only {len(rows)} batches")
    # A known cardinality: fit then stops after the last batch instead of running a step into the end of the
    # data, which (bucketed batches have an unknown cardinality) leaves a Grappler temporary variable behind in
    # the per-step container, so that the next fit fails with AlreadyExistsError.
    batches = batches.apply(tf.data.experimental.assert_cardinality(warmup_steps + steps))
    timed = batches.skip(warmup_steps)
    model.fit(batches.take(warmup_steps), epochs=1, verbose=0, shuffle=False)

    def run() -> None:
        model.fit(timed, epochs=1, verbose=0, shuffle=False)

    info = {"rows": sum(rows[warmup_steps:]), "params": model.count_params(), "max_length": cfg.data.max_length,
            "stride": encoder.stride, "dtype_policy": encoder.backbone.dtype_policy.name,
            "optimizer": f"AdamW({t.learning_rate:g}, weight_decay={t.weight_decay:g})"}
    return run, info


def worker(conn: Any, variant: Variant, args: dict, log_path: str) -> None:
    """Build and warm up, then answer ``("run",)`` with the wall and CPU time of one run until ``("stop",)``."""
    with worker_side(conn, log_path):
        import keras

        keras.config.set_dtype_policy(PRECISIONS[variant.precision])  # before anything is built
        if variant.part == "embedding":
            run, info = build_embedding(variant, args["n"])
        else:
            run, info = build_training(variant, args["warmup_steps"], args["train_steps"])
        info["setup_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        info["rss_after_setup"] = rss_mib()
        conn.send(info)
        first = True
        while conn.recv()[0] == "run":
            cpu, start = time.process_time(), time.perf_counter()
            out = run()
            reply = {"time": time.perf_counter() - start, "cpu": time.process_time() - cpu, "rss": rss_mib()}
            if first and out is not None:
                reply["vectors"] = out  # compared across variants: trimming must not change the vectors
            first = False
            conn.send(reply)


# ---------------------------------------------------------------------------------------------- parent
class Worker(SpawnedWorker):
    """One variant's spawned worker process and its pipe."""

    def __init__(self, ctx: Any, variant: Variant, args: argparse.Namespace) -> None:
        settings = {"n": args.n, "warmup_steps": args.warmup_steps, "train_steps": args.train_steps}
        super().__init__(ctx, variant.slug, os.path.join(args.log_dir, f"{variant.slug}.log"), worker,
                         (variant, settings))
        self.variant = variant

    def run(self) -> dict:
        busy = busy_cpu()
        self.conn.send(("run",))
        reply = self.recv()
        reply["other_load"] = max(0.0, (busy_cpu() - busy - reply["cpu"]) / reply["time"])
        return reply


# Runs reference_embed_speed.py as __main__, noting the process's CPU time wherever its ``measure`` reads the clock
# (the start and end of each timed pass), so that the reference too gets sentences per CPU-second; prints that as a
# second JSON line.
CPU_TIME_WRAPPER = """
import json, runpy, sys, time
marks, clock = [], time.perf_counter
def perf_counter():
    if sys._getframe(1).f_code.co_name == "measure":
        marks.append(time.process_time())
    return clock()
time.perf_counter = perf_counter
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
print(json.dumps({"cpu_s": [end - start for start, end in zip(marks[::2], marks[1::2])]}))
"""


def run_reference(python: str, n: int, threads: int) -> dict:
    """One pass of sentence-transformers over the same ``n`` texts, in its own process."""
    busy, child_cpu = busy_cpu(), _children_cpu()
    start = time.perf_counter()
    result = subprocess.run([python, "-c", CPU_TIME_WRAPPER, str(REFERENCE_SCRIPT), "--n", str(n), "--batch-size",
                             str(BATCH_SIZE), "--runs", "1", "--threads", str(threads)],
                            capture_output=True, text=True, check=False, cwd=ROOT)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"reference_embed_speed.py failed:\n{result.stderr[-3000:]}")
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    reply = next(line for line in lines if "sentences_per_s" in line)
    cpu_s = next((line["cpu_s"] for line in lines if line.get("cpu_s")), None)
    if cpu_s and len(cpu_s) == len(reply["runs_s"]):
        reply["cpu"] = cpu_s[0]
    cpu = _children_cpu() - child_cpu
    reply["time"] = reply["runs_s"][0]
    reply["other_load"] = max(0.0, (busy_cpu() - busy - cpu) / wall)  # over the whole process, loading included
    return reply


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(part: str, variants: list[Variant], args: argparse.Namespace, reference: str | None) -> dict[str, dict]:
    """Start the part's workers (build and warm up in parallel), then ``--repeats`` rounds of one run each,
    rotating the order; the reference (embedding only) takes its turn in every round."""
    ctx = multiprocessing.get_context("spawn")
    workers = {v.name: Worker(ctx, v, args) for v in variants}
    references = {reference_name(t): t for t in (args.reference_threads if reference else [])}
    names = list(workers) + list(references)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    try:
        info = {name: w.recv() for name, w in workers.items()}
        for r in range(args.repeats):
            order = names[r % len(names):] + names[: r % len(names)]
            for name in order:
                runs[name].append(run_reference(reference, args.n, references[name]) if name in references
                                  else workers[name].run())
                print(f"  {part} round {r + 1}/{args.repeats}: {name}: {runs[name][-1]['time']:.1f} s", flush=True)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # before any worker is reaped
        for name, threads in references.items():  # the largest reference process of all
            info[name] = {"rows": args.n, "peak_rss": peak, "threads": threads}
        for name, w in workers.items():
            info[name].update(w.stop())
    finally:
        for w in workers.values():
            if w.process.is_alive():
                w.process.kill()
    return summarise(part, info, runs)


def summarise(part: str, info: dict[str, dict], runs: dict[str, list[dict]]) -> dict[str, dict]:
    """Per variant: sentences/s (median, min, max), sentences per CPU-second, load from other processes."""
    import numpy as np

    out: dict[str, dict] = {}
    first = runs.get("fp32, trim")
    base = first[0]["vectors"] if first and "vectors" in first[0] else None
    for name, rs in runs.items():
        rows = info[name]["rows"]
        speeds = [rows / r["time"] for r in rs]
        res = {**info[name], "part": part,
               "sentences_per_s": statistics.median(speeds), "min": min(speeds), "max": max(speeds),
               "other_load": statistics.mean(r["other_load"] for r in rs),
               "raw": [{k: v for k, v in r.items() if k != "vectors"} for r in rs]}
        if rs and "cpu" in rs[0]:
            res["per_cpu_s"] = statistics.median(rows / r["cpu"] for r in rs)
        if base is not None and rs and "vectors" in rs[0]:  # cosine of each text's vector with the first variant's
            res["min_cosine"] = float(np.min(np.sum(rs[0]["vectors"] * base, axis=1)))
        out[name] = res
    return out


def _ratio(res: dict[str, dict], a: str, b: str) -> tuple[float, float | None] | None:
    """``a / b`` in sentences/s and in sentences per CPU-second (None without CPU times), or None."""
    if a not in res or b not in res:
        return None
    cpu = res[a]["per_cpu_s"] / res[b]["per_cpu_s"] if "per_cpu_s" in res[a] and "per_cpu_s" in res[b] else None
    return res[a]["sentences_per_s"] / res[b]["sentences_per_s"], cpu


def ratios(results: dict[str, dict[str, dict]]) -> list[tuple[str, str, float, float | None]]:
    """``(part, comparison, ratio of sentences/s, ratio of sentences per CPU-second)`` for trim/pad, bf16/fp32
    and mtl/reference, where both sides were measured."""
    rows: list[tuple[str, str, float, float | None]] = []
    for part, res in results.items():
        pairs = [(f"{p}, trim", f"{p}, pad", f"trim / pad, {p}") for p in PRECISIONS]
        pairs += [(f"bf16, {t}", f"fp32, {t}", f"bf16 / fp32, {t}") for t in ("trim", "pad")]
        refs = [name for name in res if name.startswith(REFERENCE)]
        pairs += [(name, ref, f"mtl {name} / {ref}") for ref in refs for name in res if name not in refs]
        for a, b, label in pairs:
            if (r := _ratio(res, a, b)) is not None:
                rows.append((part, label, *r))
    return rows


def table(results: dict[str, dict[str, dict]]) -> str:
    """The markdown tables: one row per (part, variant), then the ratios."""
    lines = ["| part | variant | sentences/s (median) | min–max | sentences/CPU-s | peak RSS MiB | "
             "vs sentence-transformers | min cosine vs fp32, trim |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for part, res in results.items():
        refs = [r for name, r in res.items() if name.startswith(REFERENCE)]
        ref = max(refs, key=lambda r: r["sentences_per_s"]) if refs else None  # the faster setting
        for name, r in res.items():
            per_cpu = f"{r['per_cpu_s']:,.1f}" if "per_cpu_s" in r else "–"
            rss = f"{r['peak_rss']:,.0f}" if r.get("peak_rss") else "–"
            vs = f"{r['sentences_per_s'] / ref['sentences_per_s']:.2f}" if ref else "–"
            cosine = f"{r['min_cosine']:.4f}" if "min_cosine" in r else "–"
            lines.append(f"| {part} | {name} | {r['sentences_per_s']:,.1f} | {r['min']:,.1f}–{r['max']:,.1f} "
                         f"| {per_cpu} | {rss} | {vs} | {cosine} |")
    lines += ["", "| part | ratio | sentences/s | by CPU time |", "|---|---|---:|---:|"]
    for part, label, wall, cpu in ratios(results):
        lines.append(f"| {part} | {label} | **{wall:.2f}** | {'–' if cpu is None else f'{cpu:.2f}'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, dict[str, dict]]:
    """Measure, print the tables, and return the results by part and variant."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="texts embedded per timed run")
    parser.add_argument("--train-steps", type=int, default=20, help="timed training steps (batches of 32) per run")
    parser.add_argument("--warmup-steps", type=int, default=3, help="untimed training steps first (tracing)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds: each variant times one run per round")
    parser.add_argument("--parts", nargs="+", choices=("embedding", "training"), default=["embedding", "training"])
    parser.add_argument("--precisions", nargs="+", choices=tuple(PRECISIONS), default=list(PRECISIONS))
    parser.add_argument("--trim", nargs="+", choices=("on", "off"), default=["on", "off"], help="batch trimming")
    parser.add_argument("--train-workers", type=int, default=2,
                        help="training workers alive at once (each holds 3-4 GiB); the variants are timed "
                             "interleaved within each such group, the groups one after the other")
    parser.add_argument("--reference-python", default=os.environ.get("MTL_REFERENCE_PYTHON"),
                        help="a Python with sentence-transformers and torch (default: $MTL_REFERENCE_PYTHON)")
    parser.add_argument("--reference-threads", type=int, nargs="+", default=[len(os.sched_getaffinity(0))],
                        help="torch threads; one reference row per value (1 is steadier on a shared machine)")
    parser.add_argument("--no-reference", action="store_true", help="skip sentence-transformers")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 64 texts, 2 steps, 1 round")
    parser.add_argument("--log-dir", default=None, help="worker logs (default: a new temporary directory)")
    parser.add_argument("--json", default=None, help="also write the results (raw times, RSS) here")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.train_steps, args.warmup_steps, args.repeats = 64, 2, 1, 1
    args.log_dir = args.log_dir or tempfile.mkdtemp(prefix="mtl-text-throughput-")
    os.makedirs(args.log_dir, exist_ok=True)

    reference, note = None, ""
    if "embedding" in args.parts and not args.no_reference:
        if not args.reference_python:
            note = "reference skipped: set MTL_REFERENCE_PYTHON to a Python with sentence-transformers and torch"
        elif not REFERENCE_SCRIPT.is_file():
            note = f"reference skipped: {REFERENCE_SCRIPT.relative_to(ROOT)} is missing"
        elif not Path(args.reference_python).exists():
            note = f"reference skipped: {args.reference_python} does not exist"
        else:
            reference = args.reference_python

    host = machine()
    print("Text throughput: all-MiniLM-L6-v2 embedding and training steps, batch 32, trimming on/off, fp32/bf16")
    print(f"machine: {host['cpu']}, {host['cores']} cores, {host['ram']} RAM, bf16/AMX instructions: "
          f"{host['bf16_instructions']}; Python {host['python']}, TensorFlow {host['tensorflow']}, Keras "
          f"{host['keras']}, keras-hub {host['keras-hub']}; {host['date']}; niceness {os.nice(0)}")
    print(f"Women's clothing review_text; embedding: first {args.n} texts, max_length {EMBED_MAX_LENGTH}; training: "
          f"{args.warmup_steps} warm-up + {args.train_steps} timed steps, workers in groups of {args.train_workers}; "
          f"{args.repeats} interleaved rounds; worker logs: {args.log_dir}")
    if note:
        print(note)
    print(flush=True)

    start = time.perf_counter()
    results: dict[str, dict[str, dict]] = {}
    trims = [t == "on" for t in args.trim]
    for part in args.parts:
        variants = [Variant(part, p, t) for t in trims for p in args.precisions]
        size = args.train_workers if part == "training" else len(variants)
        results[part] = {}
        for i in range(0, len(variants), size):  # training: a few workers at a time, for memory
            group = variants[i:i + size]
            results[part].update(measure(part, group, args, reference if part == "embedding" else None))
    wall = time.perf_counter() - start

    print()
    for part, res in results.items():
        some = next(r for name, r in res.items() if not name.startswith(REFERENCE))
        extra = f", windows every {some['stride']} pieces, {some['optimizer']}" if part == "training" else ""
        mean = f", {some['mean_pieces']:.0f} word pieces per text on average" if "mean_pieces" in some else ""
        load = statistics.mean(r["other_load"] for r in res.values())
        print(f"{part}: {some['rows']} sentences per run, max_length {some['max_length']}{mean}{extra}, "
              f"{some['params']:,} params; dtype policies "
              + ", ".join(f"{name}: {r['dtype_policy']}" for name, r in res.items() if "dtype_policy" in r)
              + f"; other processes kept {load:.1f} cores busy on average")
    print()
    print(table(results))
    print(f"\ntotal {wall:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": host, "args": vars(args), "note": note, "wall_s": wall, "results": results,
                       "ratios": ratios(results)}, f, indent=1)
    return results


if __name__ == "__main__":
    main()
