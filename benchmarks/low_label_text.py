"""Low-label benchmark on text: does an auxiliary task labelled on every row help a main task labelled on few?

Women's clothing reviews (``review_text``; 22,641 rows with text): the main task ``recommended`` (binary,
``recommended_ind``) is labelled on 2 %, 5 % or 100 % of the training rows, the auxiliary ``rating`` (regression,
1-5 stars) on all of them. The score is the test ROC AUC of ``recommended`` (all test rows are labelled).

Run (see ``benchmarks/README.md`` for the measured tables)::

    .venv/bin/python benchmarks/low_label_text.py --out /tmp/low_label_text.json
    .venv/bin/python benchmarks/low_label_text.py --quick --skip-finetune          # a minute: a smoke run
    # single-task, shared-trunk MTL, linked MTL and the aux-weight-0 control, 5 seeds, frozen MiniLM through mtl
    # (its encoder cache embeds each review once) and fine-tuned until single-task plateaus on validation:
    .venv/bin/python benchmarks/low_label_text.py --frozen-through-mtl --variants single,mtl,linked,control \\
        --finetune-variants single,mtl,linked,control --finetune-converge --finetune-val-rows 1000

Design:

* **Data.** Rows without text are dropped. One stratified 80/10/10 split on ``recommended`` with a fixed seed
  (``DATA_SEED``), passed to mtl as ``data.split.column``, so every run sees the same train/val/test rows.
* **Seeds.** A seed chooses which training rows keep their ``recommended`` label and seeds the run (weight
  initialisation, dropout, shuffling). Label subsets are stratified by class (at least one row per class) and
  nested: the 2 % rows of a seed are among its 5 % rows. The masking is done here (the label cell is left empty),
  which is what ``tasks.recommended.label_fraction`` does, so that the single-task model can get the same rows.
* **Variants.** All train ``recommended`` with the same model and optimizer; the score is always its test AUC.

  - ``single``: a single-task model on the main task alone: its training table holds only the rows with a
    ``recommended`` label. They are repeated (``ceil(train rows / labelled rows)`` copies) so that one of its
    epochs has as many batches as the multi-task loop's: the same number of optimizer steps and the same
    early-stopping patience in steps, each step on a full batch of labelled rows.
  - ``mtl``: ``recommended`` + ``rating``, fixed equal weights (1, 1), every training row (masked loop).
  - ``linked``: ``mtl`` with a task link, ``tasks.recommended.inputs: [rating]``: the ``recommended`` head reads
    the ``rating`` head's output beside the trunk. Task links are built into mtl's model, so the frozen part runs
    it through ``mtl train`` (``--frozen-through-mtl``, for every variant, so that the pairs are comparable).
  - ``linked_only``: ``linked`` with ``tasks.recommended.reads_trunk: false``: the ``recommended`` head reads only
    the ``rating`` head's output (a small model stacked on the auxiliary prediction, trained end to end).
  - ``control``: the multi-task loop of ``mtl`` with ``tasks.rating.weight: 0``: the same rows, batches and steps,
    ``recommended`` labelled on the same rows, but the rating loss does not count. ``mtl`` minus ``control`` is
    the auxiliary task's effect; ``control`` minus ``single`` is the training loop's (each batch holds few
    labelled rows, so there are many small steps).
  - ``uncertainty``, ``pcgrad``, ``gradnorm``, ``dwa``: ``mtl`` with that ``training.weighting``.
  - ``mtl, rating head`` (frozen part, not a separate run): the ``mtl`` model's *rating* prediction used as the
    score for ``recommended``. It shows how much of the main task the auxiliary head alone already ranks.

* **Frozen MiniLM.** Every review is embedded once by the frozen all-MiniLM-L6-v2 (``SentenceEmbedder``, mean
  pooling, ``--embed-max-length`` word pieces), cached in ``--cache`` as ``.npy`` (keyed by the text count and a
  hash), and mtl's model trains on the 384-wide vector (``train_frozen``). This is the frozen-backbone model with
  mean pooling: a frozen backbone's pooled vectors do not change during training, so computing them once is exact
  up to dropout in the frozen backbone (mtl's frozen MiniLM still applies its 0.1 dropout in training, as Keras'
  ``Dropout`` ignores ``trainable``; the cached vectors have none). The vector is standardised per component in
  the graph, as mtl does numeric columns. Trunk ``[128]`` (dropout 0.1), a linear head per task, Adam 1e-3, batch
  256, up to ``--epochs`` epochs with early stopping on the validation AUC of ``recommended`` (patience
  ``--patience``, best weights restored).
* **Frozen MiniLM through mtl** (``--frozen-through-mtl``). The same runs through ``mtl.training.train`` on the text
  column: ``model.backbone.trainable: false`` and the frozen-encoder cache in ``--cache``/``encoder_cache``, shared
  by all runs (each review embedded once, in the first run). No per-component standardisation of the vector (mtl
  feeds the pooled vector to the trunk as it is), so its AUCs are not those of the vector path.
* **Fine-tuned MiniLM.** The real text model through mtl (``data.features.text: review_text``,
  ``model.backbone: {preset: all-MiniLM-L6-v2, trainable: true}``, the optimizer of
  ``configs/womens_clothing.yaml``: AdamW 5e-5, weight decay 0.01, cosine with 20 % warm-up, batch 32), on a
  fixed stratified subset of ``--finetune-rows`` training rows, ``--finetune-max-length`` word pieces, one epoch,
  scored on ``--finetune-test-rows`` test rows (fixed). A one-epoch run on 1,000 rows takes about 60 s on 2 idle
  CPU cores (2,000 rows: 252 s on shared ones), hence the small sizes; the whole benchmark, 5 seeds, takes
  34 min. ``control`` is run at fractions below 1 only: at 100 % it has the single-task model's rows and steps.
  ``--finetune-converge`` trains up to ``--finetune-max-epochs`` epochs with early stopping on the validation AUC
  (``--finetune-patience``, best weights restored): the converged comparison, once single-task has plateaued.

Reported per part, fraction and variant: mean ± sample std of the test AUC over the seeds, n, LibMTL's relative
gain over single-task for one metric, ``Δm = (AUC - AUC_single) / AUC_single × 100`` (of the means), the paired
difference ``AUC - AUC_single`` per seed (mean ± std) and in how many seeds the variant beat single-task.
``--out`` writes every run (seed, fraction, variant, AUC, epochs, seconds) as JSON.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import logging
import math
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from _host import machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DATA_SEED = 42
MAIN, AUX = "recommended", "rating"
TEXT = "review_text"
FROZEN_VARIANTS = ("single", "mtl", "linked", "linked_only", "control", "uncertainty", "pcgrad", "gradnorm", "dwa")
FINETUNE_VARIANTS = ("single", "mtl", "linked", "linked_only", "control")
LINKED = ("linked", "linked_only")
WEIGHTINGS = ("uncertainty", "pcgrad", "gradnorm", "dwa")


# ----------------------------------------------------------------------------- data
def load_reviews(max_rows: int | None = None) -> pd.DataFrame:
    """Reviews with text: ``review_text``, ``recommended_ind``, ``rating``, ``split`` (fixed, stratified 80/10/10).

    ``max_rows`` keeps a stratified subset (for smoke runs) before the split.
    """
    from sklearn.model_selection import train_test_split

    from mtl.data import read_table

    frame = read_table(dataset="womens_clothing")[0]
    frame = frame[frame[TEXT].notna() & (frame[TEXT].astype(str).str.strip() != "")]
    frame = frame[[TEXT, "recommended_ind", "rating"]].reset_index(drop=True)
    if max_rows is not None and max_rows < len(frame):
        keep, _ = train_test_split(np.arange(len(frame)), train_size=max_rows, random_state=DATA_SEED,
                                   stratify=frame["recommended_ind"])
        frame = frame.iloc[np.sort(keep)].reset_index(drop=True)
    positions = np.arange(len(frame))
    y = frame["recommended_ind"].to_numpy()
    train, rest = train_test_split(positions, test_size=0.2, random_state=DATA_SEED, stratify=y)
    val, test = train_test_split(rest, test_size=0.5, random_state=DATA_SEED, stratify=y[rest])
    split = np.empty(len(frame), dtype=object)
    split[train], split[val], split[test] = "train", "val", "test"
    frame["split"] = split
    return frame


def label_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Positions (into ``labels``) that keep their label: stratified by class, at least one per class, nested
    across fractions for the same seed."""
    if fraction >= 1.0:
        return np.arange(len(labels))
    rng = np.random.default_rng([seed, 7919])
    kept = []
    for value in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == value))
        kept.append(rows[:max(1, int(round(fraction * len(rows))))])
    return np.sort(np.concatenate(kept))


def embed_reviews(texts: list[str], cache: Path, max_length: int) -> np.ndarray:
    """Frozen MiniLM sentence vectors ``[n, 384]``, cached as ``.npy`` keyed by the text count and a hash."""
    digest = hashlib.sha1("\x00".join(texts).encode("utf-8")).hexdigest()[:12]
    path = cache / f"minilm_l6_len{max_length}_n{len(texts)}_{digest}.npy"
    if path.is_file():
        return np.load(path)
    from mtl.model import SentenceEmbedder

    vectors = SentenceEmbedder.load(max_length=max_length, batch_size=64).embed(texts)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    os.replace(tmp, path)
    return vectors


def training_table(frame: pd.DataFrame, kept: np.ndarray, variant: str) -> pd.DataFrame:
    """The table one run reads: ``recommended_ind`` empty on training rows outside ``kept`` (positions among the
    training rows); for ``single``, only the labelled training rows, repeated to the multi-task epoch's length."""
    train = frame[frame["split"] == "train"]
    held = frame[frame["split"] != "train"]
    if variant == "single":
        copies = math.ceil(len(train) / len(kept))
        train = pd.concat([train.iloc[kept]] * copies, ignore_index=True)
    else:
        main = pd.Series(np.nan, index=train.index, dtype="float64")
        main.iloc[kept] = train["recommended_ind"].iloc[kept].astype("float64")
        train = train.assign(recommended_ind=main)
    return pd.concat([train, held], ignore_index=True)


# ----------------------------------------------------------------------------- configs
def variant_tasks(variant: str) -> dict[str, Any]:
    """``linked``: the shared-trunk model whose ``recommended`` head also reads the ``rating`` head's output
    (``tasks.recommended.inputs: [rating]``, a task link); ``linked_only``: the head reads that output alone
    (``reads_trunk: false``)."""
    tasks: dict[str, Any] = {MAIN: {"type": "binary", "column": "recommended_ind", "positive": 1}}
    if variant in LINKED:
        tasks[MAIN]["inputs"] = [AUX]
    if variant == "linked_only":
        tasks[MAIN]["reads_trunk"] = False
    if variant != "single":
        tasks[AUX] = {"type": "regression", "column": "rating", "weight": 0.0 if variant == "control" else 1.0}
    return tasks


def frozen_config(variant: str, seed: int, epochs: int, patience: int) -> dict:
    """mtl config of a frozen-MiniLM run. ``emb_row`` (the numeric input mtl prepares) only points at the row's
    vector; ``train_frozen`` feeds the 384-wide vector itself."""
    training: dict[str, Any] = {
        "epochs": epochs, "batch_size": 256, "learning_rate": 1e-3, "verbose": 0, "steps_per_execution": 16,
        "early_stopping": {"monitor": f"val_{MAIN}_auc", "patience": patience, "restore_best_weights": True},
    }
    if variant in WEIGHTINGS:
        training["weighting"] = variant
    return {
        "seed": seed,
        "data": {"path": "<in memory>", "features": {"numeric": ["emb_row"]}, "split": {"column": "split"}},
        "tasks": variant_tasks(variant),
        "model": {"trunk": {"units": [128], "dropout": 0.1}, "head": {"units": []}},
        "training": training,
    }


def frozen_text_config(variant: str, seed: int, epochs: int, patience: int, max_length: int,
                       cache_dir: Path) -> dict:
    """mtl config of a frozen-MiniLM run through ``mtl.training.train`` (``--frozen-through-mtl``): the text column,
    the backbone frozen, its encodings cached in ``cache_dir`` (shared by every run, so each review is embedded
    once), the trunk, heads and optimizer of ``frozen_config``."""
    raw = frozen_config(variant, seed, epochs, patience)
    raw["data"] = {"path": "<written per run>", "features": {"text": TEXT}, "split": {"column": "split"},
                   "max_length": max_length}
    raw["model"]["backbone"] = {"preset": "all-MiniLM-L6-v2", "trainable": False, "cache_dir": str(cache_dir)}
    return raw


def finetune_config(variant: str, seed: int, max_length: int, converge: tuple[int, int] | None = None) -> dict:
    """mtl config of a fine-tuned MiniLM run (the optimizer of ``configs/womens_clothing.yaml``: one learning rate
    for backbone and heads), one epoch; ``converge`` ``(max epochs, patience)``: early stopping on the validation AUC
    of ``recommended``, best weights restored (``--finetune-converge``)."""
    training: dict[str, Any] = {
        "epochs": 1, "batch_size": 32, "optimizer": "adamw", "learning_rate": 5e-5, "weight_decay": 0.01,
        "lr_schedule": {"type": "cosine", "warmup_epochs": 0.2}, "steps_per_execution": 1,
        "bucket_by_length": True, "verbose": 0}
    if converge is not None:
        training["epochs"] = converge[0]
        training["early_stopping"] = {"monitor": f"val_{MAIN}_auc", "patience": converge[1],
                                      "restore_best_weights": True}
    return {
        "seed": seed,
        "data": {"path": "<written per run>", "features": {"text": TEXT}, "split": {"column": "split"},
                 "max_length": max_length},
        "tasks": variant_tasks(variant),
        "model": {"backbone": {"preset": "all-MiniLM-L6-v2", "trainable": True, "learning_rate": 5e-5, "warmup": 0},
                  "trunk": {"units": []}, "head": {"units": [64], "dropout": 0.1}},
        "training": training,
    }


# ----------------------------------------------------------------------------- runs
def peak_rss_mib() -> float:
    """This process's peak resident set size so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _finish(record: dict[str, Any], wall: float, cpu: float) -> dict[str, Any]:
    import keras

    keras.backend.clear_session()
    gc.collect()
    return {**record, "seconds": round(time.perf_counter() - wall, 2), "cpu_seconds": round(cpu_seconds() - cpu, 2)}


def _scores(metrics: dict, epochs: int) -> dict[str, Any]:
    return {"auc": float(metrics["test"][MAIN]["auc"]), "val_auc": float(metrics["val"][MAIN]["auc"]),
            "rating_rmse": float(metrics["test"][AUX]["rmse"]) if AUX in metrics["test"] else None,
            "epochs_run": epochs, "test_rows": int(metrics["test"][MAIN]["n"])}


def train_frozen(raw: dict, table: pd.DataFrame, vectors: np.ndarray) -> dict[str, Any]:
    """A frozen-MiniLM run: mtl's data preparation, trunk, heads, ``MultiTaskModel`` (masked ``train_step``,
    weighting strategies), loss-weight callbacks and evaluation, on one 384-wide input.

    This is ``mtl.training.train`` without the run directory (checkpoints, plots, TensorBoard, ``model.keras``)
    and with one vector input in place of 384 scalar numeric columns: through ``train`` each of those gets its own
    input, fill and normalisation layers (1,152 layers), and tracing and checkpointing them cost about 100 s per
    run on the shared 2 cores. The normalisation is the same (per component, training mean and variance).
    """
    import keras

    from mtl.config import config_from_dict
    from mtl.data import SplitData, prepare
    from mtl.evaluation import evaluate_split, predict
    from mtl.model import MultiTaskModel, build_trunk
    from mtl.tasks import build_tasks
    from mtl.training import DivergenceGuard, LossWeightScheduler, WeightingEpochHooks, to_dataset
    from mtl.weighting import LossWeightSchedule

    wall, cpu = time.perf_counter(), cpu_seconds()
    config = config_from_dict(raw)
    tasks = build_tasks(config.tasks)
    data = prepare(table, config, tasks, "the low-label table")
    splits = {name: SplitData({"embedding": vectors[split.features["emb_row"].astype("int64")]}, split.labels,
                              split.weights, split.rows) for name, split in data.splits().items()}
    t = config.training
    keras.utils.set_random_seed(config.seed)
    inputs = {"embedding": keras.Input((vectors.shape[1],), name="embedding")}
    train_x = splits["train"].features["embedding"]
    x = keras.layers.Normalization(axis=-1, mean=train_x.mean(0), variance=np.maximum(train_x.var(0), 1e-12),
                                   name="embedding_normalise")(inputs["embedding"])
    trunk = build_trunk(x, config.model.trunk, list(tasks))
    outputs = {name: task.build_head(trunk.representations[name], config.model.head) for name, task in tasks.items()}
    weighting = {k: v for k, v in t.weighting.model_dump().items() if v is not None}
    if weighting["name"] == "gradnorm":
        weighting["layers"] = [layer.name for layer in trunk.last_shared]
    model = MultiTaskModel(inputs=inputs, outputs=outputs, tasks=[task.get_config() for task in tasks.values()],
                           weighting=weighting, name="multitask")
    steps = math.ceil(len(splits["train"]) / t.batch_size)
    model.compile(optimizer=keras.optimizers.Adam(t.learning_rate),
                  steps_per_execution=min(t.steps_per_execution, steps))
    if weighting["name"] == "fixed":
        schedules = {name: LossWeightSchedule.from_config(cfg.weight, t.epochs) for name, cfg in config.tasks.items()}
        callbacks: list = [LossWeightScheduler(schedules)]
    else:
        callbacks = [WeightingEpochHooks()]
    es = t.early_stopping
    callbacks += [DivergenceGuard(), keras.callbacks.EarlyStopping(
        monitor=es.monitor, patience=es.patience, mode="max", restore_best_weights=es.restore_best_weights)]
    history = model.fit(to_dataset(splits["train"], t.batch_size, shuffle=True, seed=config.seed),
                        validation_data=to_dataset(splits["val"], t.batch_size), epochs=t.epochs,
                        callbacks=callbacks, verbose=0, shuffle=False)
    predictions = {name: predict(model, splits[name]) for name in ("val", "test")}
    metrics = {name: evaluate_split(tasks, splits[name], predictions[name]) for name in ("val", "test")}
    record = _scores(metrics, len(history.history["loss"]))
    if AUX in tasks:  # the rating head's prediction used as the score for recommended
        from sklearn.metrics import roc_auc_score

        test = splits["test"]
        record["rating_head_auc"] = float(roc_auc_score(test.labels[MAIN][test.labelled(MAIN)].reshape(-1),
                                                        predictions["test"][AUX][test.labelled(MAIN)].reshape(-1)))
    return _finish(record, wall, cpu)


def train_finetuned(raw: dict, table: pd.DataFrame, work: Path) -> dict[str, Any]:
    """A fine-tuned MiniLM run: ``table`` written as Parquet, then ``mtl.training.train`` in a temporary run
    directory (removed afterwards)."""
    import shutil

    from mtl.config import config_from_dict
    from mtl.training import train

    work.mkdir(parents=True, exist_ok=True)
    path = work / "table.parquet"
    table.to_parquet(path, index=False)
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = train(config_from_dict({**raw, "data": {**raw["data"], "path": str(path)}}), work / "run")
    record = _scores(result.metrics, int(len(result.history)))
    del result
    shutil.rmtree(work, ignore_errors=True)
    return _finish(record, wall, cpu)


def run_grid(part: str, frame: pd.DataFrame, fractions: list[float], seeds: list[int], variants: list[str],
             run: Any) -> list[dict]:
    """Every (fraction, seed, variant) of one part; ``run(table, variant, seed)`` trains one and returns its scores."""
    records = []
    train_labels = frame.loc[frame["split"] == "train", "recommended_ind"].to_numpy()
    for fraction in fractions:
        for seed in seeds:
            kept = label_subset(train_labels, fraction, seed)
            for variant in variants:
                if part == "finetune" and variant == "control" and fraction >= 1.0:
                    continue  # at 100 % the control has the single-task model's rows and steps
                record = {"part": part, "fraction": fraction, "seed": seed, "variant": variant,
                          "labels": len(kept), "train_rows": int((frame["split"] == "train").sum()),
                          **run(training_table(frame, kept, variant), variant, seed)}
                records.append(record)
                if variant == "mtl" and "rating_head_auc" in record:
                    records.append({**record, "variant": "mtl, rating head", "auc": record["rating_head_auc"],
                                    "seconds": 0.0, "cpu_seconds": 0.0})
                print(f"  {part} {fraction:>5.0%} seed {seed} {variant:<11} AUC {record['auc']:.4f}  "
                      f"epochs {record['epochs_run']:>2}  {record['seconds']:6.1f} s", flush=True)
    return records


# ----------------------------------------------------------------------------- report
def summarise(records: list[dict]) -> list[dict]:
    """One row per (part, fraction, variant): mean ± std AUC, n, Δm and the paired difference to single-task."""
    rows = []
    keys = sorted({(r["part"], r["fraction"]) for r in records}, key=lambda k: (k[0] != "frozen", k[1]))
    for part, fraction in keys:
        these = [r for r in records if r["part"] == part and r["fraction"] == fraction]
        single = {r["seed"]: r["auc"] for r in these if r["variant"] == "single"}
        variants = list(dict.fromkeys(r["variant"] for r in these))
        for variant in variants:
            runs = [r for r in these if r["variant"] == variant]
            aucs = [r["auc"] for r in runs]
            row: dict[str, Any] = {
                "part": part, "fraction": fraction, "variant": variant, "n": len(aucs),
                "labels": runs[0]["labels"], "auc_mean": statistics.fmean(aucs),
                "auc_std": statistics.stdev(aucs) if len(aucs) > 1 else 0.0,
                "epochs_mean": statistics.fmean(r["epochs_run"] for r in runs),
                "seconds_mean": statistics.fmean(r["seconds"] for r in runs),
            }
            paired = [r["auc"] - single[r["seed"]] for r in runs if r["seed"] in single]
            if single and variant != "single" and paired:
                base = statistics.fmean(single.values())
                row["delta_m"] = (row["auc_mean"] - base) / base * 100
                row["paired_mean"] = statistics.fmean(paired)
                row["paired_std"] = statistics.stdev(paired) if len(paired) > 1 else 0.0
                row["wins"] = sum(d > 0 for d in paired)
            rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    """The summary as markdown tables, one per part."""
    out = []
    for part in dict.fromkeys(r["part"] for r in rows):
        title = "frozen MiniLM (embeddings computed once)" if part == "frozen" else "fine-tuned MiniLM"
        out += [f"**{title}**", "",
                "| main labels | variant | n | test AUC (mean ± std) | Δm vs single | AUC − single (paired) "
                "| beats single | epochs | s/run |",
                "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in (r for r in rows if r["part"] == part):
            label = f"{r['fraction']:.0%} ({r['labels']:,})"
            if "delta_m" in r:
                delta = f"{r['delta_m']:+.2f} %"
                paired = f"{r['paired_mean']:+.4f} ± {r['paired_std']:.4f}"
                wins = f"{r['wins']}/{r['n']}"
            else:
                delta, paired, wins = "—", "—", "—"
            derived = r["variant"].endswith("rating head")  # scored from the mtl runs, not trained
            epochs, seconds = ("—", "—") if derived else (f"{r['epochs_mean']:.1f}", f"{r['seconds_mean']:.1f}")
            out.append(f"| {label} | {r['variant']} | {r['n']} | {r['auc_mean']:.4f} ± {r['auc_std']:.4f} | {delta} "
                       f"| {paired} | {wins} | {epochs} | {seconds} |")
        out.append("")
    return "\n".join(out)


# ----------------------------------------------------------------------------- main
def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def names(allowed: tuple[str, ...]) -> Any:
    def parse(text: str) -> list[str]:
        chosen = [v.strip() for v in text.split(",") if v.strip()]
        unknown = [v for v in chosen if v not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown variant(s) {unknown}; choose from {', '.join(allowed)}")
        return chosen
    return parse


DEFAULTS = {"seeds": 5, "fractions": [0.02, 0.05, 1.0], "epochs": 30, "patience": 4,
            "variants": ["single", "mtl", "control", "uncertainty"], "finetune_seeds": 5,
            "finetune_fractions": [0.05, 1.0], "finetune_rows": 1000, "finetune_test_rows": 1000}
QUICK = {"seeds": 1, "fractions": [0.05, 1.0], "epochs": 2, "patience": 1, "variants": ["single", "mtl", "control"],
         "finetune_seeds": 1, "finetune_fractions": [0.05], "finetune_rows": 200, "finetune_test_rows": 200}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    d = DEFAULTS
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, help=f"seeds 0..N-1 of the frozen part ({d['seeds']})")
    p.add_argument("--fractions", type=floats, help=f"main-task label fractions ({d['fractions']})")
    p.add_argument("--epochs", type=int, help=f"frozen part: maximum epochs, early stopping ({d['epochs']})")
    p.add_argument("--patience", type=int, help=f"frozen part: early-stopping patience in epochs ({d['patience']})")
    p.add_argument("--variants", type=names(FROZEN_VARIANTS),
                   help=f"frozen part, from {', '.join(FROZEN_VARIANTS)} ({','.join(d['variants'])})")
    p.add_argument("--embed-max-length", type=int, default=128, help="word pieces per review for the embeddings")
    p.add_argument("--max-rows", type=int, default=None, help="a stratified subset of the reviews (smoke runs)")
    p.add_argument("--skip-finetune", action="store_true", help="run the frozen part only")
    p.add_argument("--skip-frozen", action="store_true", help="run the fine-tuned part only")
    p.add_argument("--finetune-seeds", type=int, help=f"seeds 0..N-1 of the fine-tuned part ({d['finetune_seeds']})")
    p.add_argument("--finetune-fractions", type=floats, help=f"({d['finetune_fractions']})")
    p.add_argument("--finetune-variants", type=names(FINETUNE_VARIANTS), default=list(FINETUNE_VARIANTS))
    p.add_argument("--finetune-rows", type=int, help=f"training rows of the fine-tuned part ({d['finetune_rows']})")
    p.add_argument("--finetune-val-rows", type=int, default=128, help="validation rows (not used for selection)")
    p.add_argument("--finetune-test-rows", type=int, help=f"fine-tuned part: test rows ({d['finetune_test_rows']})")
    p.add_argument("--finetune-max-length", type=int, default=64, help="word pieces per review when fine-tuning")
    p.add_argument("--finetune-converge", action="store_true",
                   help="fine-tuned part: train until the validation AUC plateaus (early stopping, best weights) "
                        "instead of one epoch; use a larger --finetune-val-rows")
    p.add_argument("--finetune-max-epochs", type=int, default=10, help="with --finetune-converge (10)")
    p.add_argument("--finetune-patience", type=int, default=2, help="with --finetune-converge: epochs (2)")
    p.add_argument("--frozen-through-mtl", action="store_true",
                   help="frozen part: train through mtl train on the text column (frozen backbone, encoder cache in "
                        "--cache) instead of on precomputed vectors; needed by the linked variant")
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "mtl_low_label_text",
                   help="where the embeddings are cached")
    p.add_argument("--out", type=Path, default=None, help="write the runs and the summary as JSON")
    p.add_argument("--quick", action="store_true", help="smoke-run defaults: " + ", ".join(
        f"{k.replace('_', '-')} {v}" for k, v in QUICK.items()))
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if set(LINKED) & set(args.variants) and not args.skip_frozen and not args.frozen_through_mtl:
        p.error("the linked variant needs the model mtl builds (task links): add --frozen-through-mtl")
    return args


def subset_for_finetune(frame: pd.DataFrame, train_rows: int, val_rows: int, test_rows: int) -> pd.DataFrame:
    """A fixed stratified subset of each split (the same for every fine-tune run)."""
    from sklearn.model_selection import train_test_split

    parts = []
    for split, size in (("train", train_rows), ("val", val_rows), ("test", test_rows)):
        part = frame[frame["split"] == split]
        if size < len(part):
            part, _ = train_test_split(part, train_size=size, random_state=DATA_SEED,
                                       stratify=part["recommended_ind"])
        parts.append(part.sort_index())
    return pd.concat(parts, ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("mtl").setLevel(logging.WARNING)
    started, cpu_start = time.perf_counter(), cpu_seconds()
    frame = load_reviews(args.max_rows)
    counts = frame["split"].value_counts()
    print(f"reviews with text: {len(frame):,} (train {counts['train']:,}, val {counts['val']:,}, "
          f"test {counts['test']:,}); {frame['recommended_ind'].mean():.1%} recommended", flush=True)
    records: list[dict] = []
    timings: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="low_label_text_") as tmp:
        work = Path(tmp)
        if not args.skip_frozen:
            if args.frozen_through_mtl:  # the encoder cache embeds each review once, in the first run
                wall, cpu = time.perf_counter(), cpu_seconds()
                records += run_grid(
                    "frozen", frame, args.fractions, list(range(args.seeds)), args.variants,
                    lambda table, variant, seed: train_finetuned(
                        frozen_text_config(variant, seed, args.epochs, args.patience, args.embed_max_length,
                                           args.cache / "encoder_cache"), table, work / f"frozen-{seed}"))
            else:
                wall, cpu = time.perf_counter(), cpu_seconds()
                vectors = embed_reviews(frame[TEXT].astype(str).tolist(), args.cache, args.embed_max_length)
                timings["embed"] = {"seconds": time.perf_counter() - wall, "cpu_seconds": cpu_seconds() - cpu,
                                 "peak_rss_mib": peak_rss_mib()}
                print(f"embeddings {vectors.shape} in {timings['embed']['seconds']:.0f} s", flush=True)
                embedded = frame.drop(columns=[TEXT]).assign(emb_row=np.arange(len(frame)))
                wall, cpu = time.perf_counter(), cpu_seconds()
                records += run_grid(
                    "frozen", embedded, args.fractions, list(range(args.seeds)), args.variants,
                    lambda table, variant, seed: train_frozen(
                        frozen_config(variant, seed, args.epochs, args.patience), table, vectors))
            timings["frozen"] = {"seconds": time.perf_counter() - wall, "cpu_seconds": cpu_seconds() - cpu,
                                 "peak_rss_mib": peak_rss_mib()}
        if not args.skip_finetune:
            small = subset_for_finetune(frame, args.finetune_rows, args.finetune_val_rows, args.finetune_test_rows)
            wall, cpu = time.perf_counter(), cpu_seconds()
            records += run_grid(
                "finetune", small, args.finetune_fractions, list(range(args.finetune_seeds)),
                args.finetune_variants,
                lambda table, variant, seed: train_finetuned(
                    finetune_config(variant, seed, args.finetune_max_length,
                                    (args.finetune_max_epochs, args.finetune_patience)
                                    if args.finetune_converge else None),
                    table, work / f"finetune-{seed}"))
            timings["finetune"] = {"seconds": time.perf_counter() - wall, "cpu_seconds": cpu_seconds() - cpu,
                                 "peak_rss_mib": peak_rss_mib()}
    timings["total"] = {"seconds": time.perf_counter() - started, "cpu_seconds": cpu_seconds() - cpu_start,
                         "peak_rss_mib": peak_rss_mib()}
    rows = summarise(records)
    print()
    print(markdown(rows))
    print("time: " + ", ".join(f"{k} {v['seconds']:.0f} s wall / {v['cpu_seconds']:.0f} s CPU, peak RSS "
                                f"{v['peak_rss_mib']:,.0f} MiB" for k, v in timings.items()))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"machine": machine(), "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
        args.out.write_text(json.dumps({"meta": meta, "timings": timings, "summary": rows, "runs": records},
                                       indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
