"""Write ``docs/config-reference.md`` from the config schema (``mtl.config.Config`` and the plug-ins' config classes).

    python docs/gen_config_reference.py           # rewrite the page
    python docs/gen_config_reference.py --check   # exit 1 when the page differs from the schema (CI, tests)

Every key, its type and default come from the pydantic models, so the page cannot drift from the code. A key's
meaning is its ``Field(description=...)``; for keys whose field has none yet, ``NOTES`` below gives it (moved from
the old README table). A note for a key that is not in the schema is an error, so a note cannot outlive its key.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

PAGE = Path(__file__).resolve().parent / "config-reference.md"

NOTES = {
    "seed": "seeds the split, the label fractions, SMOTE, weight initialisation and shuffling",
    "data.path": "a CSV, TSV, Parquet, JSON or JSON Lines file (`.csv .tsv .parquet .pq .json .jsonl .ndjson`), or a "
                 "CoNLL column file (`.conll`: read as `text` and `ner_tags`). Set this or `data.dataset`",
    "data.dataset": "a built-in real dataset: `adult`, `womens_clothing`, `california_housing` (snake_case column "
                    "names); text: `atis` (`text`, `intent`, `slots`, `split`), `conll2003` (`text`, `ner_tags`, "
                    "`pos_tags`, `chunk_tags`, `split`)",
    "data.features": "the input columns, listed under their kind (see [Adding a feature kind](extending.md))",
    "data.split.train": "fraction of rows for training; train, val and test must sum to 1",
    "data.split.val": "fraction of rows for validation (early stopping, reduce-on-plateau, tune's objective)",
    "data.split.test": "fraction of rows for the test metrics",
    "data.split.stratify": "a binary or multiclass task to stratify the split on; rows missing its label form "
                           "their own stratum",
    "data.window": "text: read a text longer than `max_length` whole, in windows pooled into one prediction",
    "data.window.stride": "word pieces between the starts of two windows",
    "tasks": "one entry per task, keyed by its name (a Python identifier); the keys depend on `type`",
    "tasks.<name>.column": "the label column. An empty or NaN cell means no label for this task on this row",
    "tasks.<name>.loss": "a name or `{name, gamma, alpha, delta}`; the valid names depend on the type",
    "tasks.<name>.loss.name": "the loss (binary: `binary_crossentropy`, `focal`; regression: `mse`, `mae`, `huber`, "
                              "`log_cosh` on the standardised target; multiclass: "
                              "`sparse_categorical_crossentropy`, `focal`)",
    "tasks.<name>.metrics": "the metrics reported (default: the type's list)",
    "tasks.<name>.weight": "the loss weight: a number, or a schedule over epochs (used by `training.weighting: "
                           "fixed`)",
    "tasks.<name>.weight.schedule": "how the weight moves from `start` to `end` over the epochs",
    "tasks.<name>.weight.start": "the weight in the first epoch",
    "tasks.<name>.weight.end": "the weight reached at epoch `epochs - 1`",
    "tasks.<name>.label_fraction": "keep this task's labels on only this fraction of the labelled training rows "
                                   "(seeded) and mask the rest; val and test keep all theirs",
    "tasks.<name>.trainable": "`false` freezes the task's head",
    "tasks.<name>.type": "the task type",
    "tasks.<name>.positive": "binary: the positive label (every other value is negative). Without it the column "
                             "must hold two values, and `1`/`True`/`yes` (else the second in sort order) is positive",
    "tasks.<name>.threshold": "binary: the decision threshold for accuracy, precision, recall, F1 and `_label`",
    "tasks.<name>.class_weight": "`balanced` (n / (k * count)) or `{label: weight}`",
    "tasks.<name>.unseen_labels": "a val/test label not seen in training: `error` names its row, `ignore` leaves "
                                  "it unlabelled",
    "model.trunk": "the shared layers; `activation`, `dropout` and `norm` apply to every expert too",
    "model.trunk.type": "`shared_bottom` (one shared stack), `mmoe` (Ma et al., KDD 2018) or `ple` (Tang et al., "
                        "RecSys 2020)",
    "model.trunk.activation": "the activation of every Dense layer of the trunk",
    "model.trunk.dropout": "dropout after every layer of the trunk",
    "model.trunk.norm": "normalisation after every layer of the trunk",
    "model.head": "the tower before each task's output layer",
    "model.head.units": "the tower's layer widths",
    "model.head.activation": "the tower's activation",
    "model.head.dropout": "dropout after every tower layer",
    "model.head.norm": "normalisation after every tower layer",
    "model.embedding_dim": "the embedding width of categorical features; `auto` is min(16, ceil(1.6 n^0.56))",
    "model.backbone.trainable": "`false` freezes the backbone; `{last_n_layers: k}` trains only its last k layers",
    "model.backbone.pooling": "the sentence vector: the masked `mean` over word pieces, or `cls`",
    "training.epochs": "passes over the training rows",
    "training.batch_size": "rows per batch",
    "training.optimizer": "`sgd` has momentum 0.9",
    "training.learning_rate": "the peak learning rate",
    "training.weight_decay": "passed to the optimizer",
    "training.lr_schedule": "`reduce_on_plateau` (`monitor`, `factor`, `patience`, `min_lr`) or `cosine` "
                            "(`warmup_epochs`, then cosine decay to `alpha` times the peak)",
    "training.lr_schedule.monitor": "reduce_on_plateau: any logged metric, e.g. `val_income_auc`",
    "training.early_stopping": "stop when `monitor` stops improving; `monitor` may be any logged metric (`loss`, "
                               "`<task>_loss`, `<task>_<metric>`, with or without `val_`)",
    "training.early_stopping.mode": "`auto` minimises losses and errors and maximises the rest",
    "training.smote": "SMOTE (SMOTE-NC with categorical features) on the training rows that carry `task`'s label; "
                      "synthetic rows carry no label for the other tasks",
    "training.smote.task": "a binary or multiclass task",
    "training.steps_per_execution": "batches per compiled call; small models are bound by per-step overhead",
    "training.jit_compile": "XLA; it cannot compile categorical lookups and gives no speed-up for small models on CPU",
    "training.weighting": "how task losses are combined: a name or `{name, <parameters>}` (see "
                          "[Low-label multi-task learning](low-label.md))",
    "training.weighting.name": "all but `fixed` need two or more tasks and leave every task weight at 1; "
                               "`gradnorm` needs a shared layer",
    "training.mixed_precision": "compute in 16 bits with float32 weights; restored after the run",
    "output.run_dir": "where the run is written (default `runs/run-<time>`); `--run-dir` overrides it",
    "output.export": "export the model at the end of a successful run, before `metrics.json`",
    "tune": "the search of `mtl tune`; `mtl train` validates it and otherwise ignores it",
    "tune.objective.task": "the task whose validation metric is optimised",
    "tune.objective.metric": "one of that task's metrics",
    "tune.objective.direction": "default: minimise `rmse`, `mae`, `mse`, maximise the rest",
    "tune.sampler": "Optuna's `TPESampler` or `RandomSampler`, seeded from `seed`",
    "tune.space": "dotted config keys to search, each a list of choices or a range",
    "tune.space.<dotted key>.choice": "one of these values (a plain list means the same)",
    "tune.space.<dotted key>.uniform": "a float in `[low, high]`",
    "tune.space.<dotted key>.log_uniform": "a float in `[low, high]`, sampled on a log scale",
    "tune.space.<dotted key>.int": "an integer in `[low, high]`, both ends included",
    "tune.space.<dotted key>.step": "uniform and int: the grid step (`high - low` a multiple of it)",
    "tune.space.<dotted key>.log": "int: sample on a log scale",
    "model.backbone.architecture.num_layers": "transformer layers",
    "model.backbone.architecture.num_heads": "attention heads (they divide `hidden_dim`)",
    "model.backbone.architecture.hidden_dim": "the hidden width",
    "model.backbone.architecture.intermediate_dim": "the feed-forward width",
    "model.backbone.architecture.max_sequence_length": "the longest window it can read",
    "model.backbone.trainable.last_n_layers": "train only the last k transformer layers",
    "model.heads.<name>.units": "the tower's layer widths, for this task",
    "model.heads.<name>.activation": "the tower's activation",
    "model.heads.<name>.dropout": "dropout after every tower layer",
    "model.heads.<name>.norm": "normalisation after every tower layer",
    "training.lr_schedule.type": "`constant`, `reduce_on_plateau` or `cosine`",
    "training.lr_schedule.factor": "reduce_on_plateau: the learning rate is multiplied by this",
    "training.lr_schedule.patience": "reduce_on_plateau: epochs without improvement before reducing",
    "training.lr_schedule.min_lr": "reduce_on_plateau: the floor",
    "training.lr_schedule.warmup_epochs": "cosine: epochs of linear warm-up from 0 (may be fractional)",
    "training.early_stopping.monitor": "any logged metric, e.g. `val_income_auc`",
    "training.early_stopping.patience": "epochs without improvement before stopping",
    "training.early_stopping.restore_best_weights": "end with the best epoch's weights (and metrics)",
    "training.early_stopping.min_delta": "the smallest change that counts as an improvement",
    "training.smote.sampling_strategy": "imbalanced-learn's `sampling_strategy`",
    "training.smote.k_neighbors": "neighbours to interpolate between; every class needs more labelled rows",
    "output.export.base_path": "the export base folder",
    "output.export.name": "the model name: the export goes to `base_path/name/<version>`",
    "output.export.version": "default: one more than the highest existing version",
    "tasks.<name>.loss.gamma": "focal losses: the focusing parameter",
}


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation may hold (through Optional, unions, lists, dicts, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        for model in _models_in(arg):
            if model not in found:
                found.append(model)
    return found


def _type_text(annotation: Any) -> str:
    """A short, readable type: ``int``, ``"a" | "b"``, ``list of int``, ``mapping``, ``section``."""
    origin = typing.get_origin(annotation)
    if annotation is type(None):
        return "null"
    if origin is Literal:
        return " \\| ".join(json.dumps(a) for a in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        return " \\| ".join(_type_text(a) for a in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _type_text(typing.get_args(annotation)[0])
    if origin in (list, tuple):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        inner = " \\| ".join(dict.fromkeys(_type_text(a) for a in args)) or "any"
        return f"list of {inner}"
    if origin is dict:
        return "mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _default_of(field: Any) -> Any:
    if field.is_required():
        return PydanticUndefined
    return field.default_factory() if field.default_factory is not None else field.default


def _default_text(value: Any) -> str:
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, BaseModel):
        return "(below)"
    return f"`{json.dumps(value)}`"


def _first_line(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n")[0].split()).replace("``", "`")


def _sections(model: type[BaseModel], prefix: str, out: dict[str, list[tuple]], used: set[str],
              defaults: BaseModel | None = None) -> None:
    """Fill ``out[section] = [(key, type, default, meaning), ...]`` for ``model`` and its nested sections.

    ``defaults``: the section's default instance in its parent (``model.head`` defaults to 32 units, not to the
    64 of its class), whose values are the defaults shown."""
    rows = out.setdefault(prefix or "top level", [])
    nested: list[tuple[str, type[BaseModel], Any]] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}.{name}" if prefix else name
        annotation = field.annotation
        models = _models_in(annotation)
        default = getattr(defaults, name) if defaults is not None else _default_of(field)
        child_prefix = key
        if typing.get_origin(annotation) is dict:
            child_prefix = f"{key}.<name>" if name != "space" else f"{key}.<dotted key>"
        meaning = field.description or NOTES.get(key) or (_first_line(models[0].__doc__) if len(models) == 1 else "")
        if not meaning and models:
            meaning = f"a section: `{child_prefix}` below"
        if key in NOTES:
            used.add(key)
        rows.append((key, _type_text(annotation), _default_text(default), meaning.replace("|", "\\|")))
        for child in models:
            nested.append((child_prefix, child, default if isinstance(default, child) else None))
    for child_prefix, child, child_defaults in nested:
        if child_prefix == "tasks.<name>":
            continue  # task types get one section each (below)
        _sections(child, child_prefix, out, used, child_defaults)


def config_reference() -> str:
    """The Markdown of the config reference page."""
    from mtl.config import Config
    from mtl.tasks import TASK_TYPES

    general: dict[str, list[tuple]] = {}
    used: set[str] = set()
    _sections(Config, "", general, used)
    task_sections: dict[str, list[tuple]] = {}
    intros: dict[str, str] = {}  # a task type's losses and metrics, read from its class
    for type_name, cls in TASK_TYPES.items():
        found: dict[str, list[tuple]] = {}
        _sections(cls.config_class, "tasks.<name>", found, used)
        title = f"tasks.<name> (type: {type_name})"
        task_sections[title] = found.pop("tasks.<name>")
        intros[title] = (f"Losses: {', '.join(f'`{n}`' for n in cls.losses)} (default `{cls.default_loss}`). "
                         f"Metrics: {', '.join(f'`{n}`' for n in cls.metric_names())} (default "
                         f"{', '.join(f'`{n}`' for n in cls.default_metrics)}).")
        for key, rows in found.items():
            task_sections.setdefault(key, rows)
    sections: dict[str, list[tuple]] = {}  # the tasks' sections right after data's
    for title, rows in general.items():
        if title.startswith("model") and not any(t.startswith("tasks") for t in sections):
            sections.update(task_sections)
        sections[title] = rows
    unknown = sorted(set(NOTES) - used)
    if unknown:
        raise SystemExit(f"NOTES name keys that are not in the schema: {', '.join(unknown)}")

    lines = [
        "# Config reference",
        "",
        "<!-- Generated by docs/gen_config_reference.py from mtl/config.py: do not edit by hand. -->",
        "",
        "Every key of a config file, its type and its default, generated from the schema the config is validated",
        "with. Unknown keys are errors that suggest the nearest valid key; `--set a.b.c=value` overrides any key",
        "(the value is read as YAML: `--set model.trunk.units=[64,32]`). A run's `config.yaml` holds the resolved",
        "config, every default filled in.",
        "",
    ]
    for title, rows in sections.items():
        if not rows:
            continue
        lines += [f"## `{title}`", ""] + ([intros[title], ""] if title in intros else [])
        lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
        lines += [f"| `{key}` | {kind} | {default} | {meaning} |" for key, kind, default, meaning in rows]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from mtl._progress import quiet_tensorflow_startup

    quiet_tensorflow_startup()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale, write nothing")
    args = parser.parse_args(argv)
    text = config_reference()
    if args.check:
        if not PAGE.is_file() or PAGE.read_text(encoding="utf-8") != text:
            print(f"{PAGE} is stale: run python docs/gen_config_reference.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
