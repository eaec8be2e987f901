"""The run configuration: a validated pydantic schema, YAML loading and ``--set`` overrides.

Every key is documented in docs/config-reference.md, generated from this schema (docs/gen_config_reference.py):
a field's ``description`` is its meaning there. Errors name the file and the key path, and an unknown key comes
with the nearest valid one, e.g. ``my.yaml: tasks.income.tpye: unknown key (did you mean 'type'?)``.
Task types and feature kinds own their keys: ``tasks.<name>`` is the union of the registered types'
``config_class`` (``mtl.tasks``), ``data.features`` has one key per registered kind (``mtl.features``).
A config file larger than ``MAX_CONFIG_BYTES`` or expanding (through YAML aliases) to more than
``MAX_CONFIG_NODES`` values is refused before it is built.
"""

from __future__ import annotations

import builtins
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, Field, ValidationError, create_model, field_validator, model_validator

from mtl._schema import Strict as _Strict
from mtl._schema import WeightSchedule
from mtl.errors import MtlError
from mtl.features import FEATURE_KINDS, configured_columns
from mtl.features import shown as quote_value
from mtl.tasks import TASK_TYPES, check_links

__all__ = [
    "BackboneConfig",
    "Config",
    "WeightSchedule",
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_NODES",
    "load_config",
    "apply_overrides",
    "config_from_dict",
    "dump_config",
]

MAX_CONFIG_BYTES = 1024 * 1024
MAX_CONFIG_NODES = 100_000


# ----------------------------------------------------------------------------- data
class _FeaturesBase(_Strict):
    @model_validator(mode="after")
    def _distinct(self) -> _FeaturesBase:
        seen: dict[str, str] = {}
        for kind, column in configured_columns(self):
            if column in seen:
                raise ValueError(f"column {column!r} is listed as {seen[column]} and as {kind}")
            seen[column] = kind
        if not seen:
            raise ValueError(f"no input features: list columns under {', '.join(FEATURE_KINDS)}")
        return self

    def columns(self) -> list[str]:
        return [column for _, column in configured_columns(self)]


def _features_fields() -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for kind, cls in FEATURE_KINDS.items():
        fields[kind] = (list[str], Field(default_factory=list, description=cls.description)) if cls.many else (
            str | None, Field(None, description=cls.description))
    return fields


FeaturesConfig = create_model("FeaturesConfig", __base__=_FeaturesBase, **_features_fields())


class SplitConfig(_Strict):
    train: float = Field(0.8, gt=0, lt=1)
    val: float = Field(0.1, ge=0, lt=1)
    test: float = Field(0.1, ge=0, lt=1)
    stratify: str | None = None
    column: str | None = Field(None, description="a column naming each row's split: train, val or test")
    key: str | None = Field(None, description="a column whose stable hash decides each row's split (and which "
                            "labels label_fraction keeps), the same in every run, worker and mode")

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        if self.column is not None:
            if self.stratify is not None:
                raise ValueError("stratify does not apply when column gives each row's split")
            if self.key is not None:
                raise ValueError("key does not apply when column gives each row's split")
            return self
        if self.key is not None and self.stratify is not None:
            raise ValueError("stratify does not apply when the hash of key decides each row's split")
        total = self.train + self.val + self.test
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(
                f"split fractions must sum to 1, got train {self.train} + val {self.val} "
                f"+ test {self.test} = {total:g}"
            )
        return self


class WindowConfig(_Strict):
    """Read texts longer than ``data.max_length`` whole, in windows that start every ``stride`` word pieces."""

    stride: int = Field(ge=1)


class DataConfig(_Strict):
    path: str | None = None
    dataset: str | None = None
    features: FeaturesConfig
    split: SplitConfig = SplitConfig()
    max_length: int = Field(256, ge=8, description="text: word pieces per window, [CLS] and [SEP] included")
    window: WindowConfig | None = None
    max_tokens: int | None = Field(None, ge=1, description="categorical: keep at most this many values in each "
                                   "vocabulary, the most frequent in the training split; the rest share the "
                                   "out-of-vocabulary bucket")
    streaming: bool = Field(False, description="read data.path (Parquet or CSV files) in record batches each epoch "
                            "instead of holding the table in memory (docs/streaming.md)")
    shuffle_buffer: int = Field(65536, ge=1, description="streaming: rows held to shuffle training rows (with the "
                                "file order, shuffled each epoch)")
    non_finite: Literal["error", "missing"] = Field(
        "error", description="a non-finite number (inf) in a numeric or vector feature: an error naming its column "
        "and row, or read as missing")

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if (self.path is None) == (self.dataset is None):
            raise ValueError("set exactly one of data.path (a CSV, Parquet or JSON Lines file, a directory or a "
                             "glob of them) or data.dataset")
        if self.streaming and self.path is None:
            raise ValueError("streaming reads data.path (Parquet or CSV files); a built-in dataset is read whole")
        if self.streaming and self.split.stratify is not None:
            raise ValueError("split.stratify needs the whole table; with streaming the split is a stable hash "
                             "(split.key, or the file and row position)")
        if self.window is not None and self.window.stride > self.max_length - 2:
            raise ValueError(f"window.stride {self.window.stride} would skip word pieces: a window holds "
                             f"max_length - 2 = {self.max_length - 2}; use a stride no larger than that")
        return self


# ----------------------------------------------------------------------------- tasks
TASK_TYPE_NAMES = tuple(TASK_TYPES)

TaskConfig = Annotated[Union[tuple(cls.config_class for cls in TASK_TYPES.values())],  # noqa: UP007
                       Field(discriminator="type")]


# ----------------------------------------------------------------------------- model
def _positive_units(units: list[int]) -> list[int]:
    if any(u <= 0 for u in units):
        raise ValueError("layer widths must be positive integers")
    return units


class DenseStack(_Strict):
    units: list[int] = Field(default_factory=lambda: [64])
    activation: str = "relu"
    dropout: float = Field(0.0, ge=0, lt=1)
    norm: Literal["none", "batch", "layer"] = "none"

    _check_units = field_validator("units")(_positive_units)


class TrunkConfig(DenseStack):
    type: Literal["shared_bottom", "mmoe", "ple"] = "shared_bottom"
    units: list[int] = Field(default_factory=lambda: [128, 64], description="shared_bottom: the shared layers")
    experts: int = Field(4, ge=1, description="mmoe: shared experts")
    expert_units: list[int] = Field(default_factory=lambda: [64], description="mmoe, ple: each expert's layers")
    levels: int = Field(2, ge=1, description="ple: extraction layers")
    shared_experts: int = Field(2, ge=1, description="ple: shared experts per level")
    task_experts: int = Field(1, ge=1, description="ple: experts per task per level")

    _check_expert_units = field_validator("expert_units")(_positive_units)


class BackboneArchitecture(_Strict):
    """A small BERT built from these numbers, randomly initialised (tests, experiments); real vocabulary."""

    vocabulary: str | None = Field(None, description="a vocab.txt; default: all-MiniLM-L6-v2's")
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(2, ge=1)
    hidden_dim: int = Field(32, ge=2)
    intermediate_dim: int = Field(64, ge=1)
    max_sequence_length: int = Field(512, ge=8)

    @model_validator(mode="after")
    def _heads_divide(self) -> BackboneArchitecture:
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"hidden_dim {self.hidden_dim} must be a multiple of num_heads {self.num_heads}")
        return self


class LastLayers(_Strict):
    last_n_layers: int = Field(ge=0)


class BackboneConfig(_Strict):
    """The text encoder: a keras-hub preset, an ``hf://`` handle, a local directory, or an ``architecture``."""

    preset: str | None = Field("all-MiniLM-L6-v2", description="default: the offline all-MiniLM-L6-v2 weights")
    architecture: BackboneArchitecture | None = None
    trainable: bool | LastLayers = True
    pooling: Literal["mean", "cls"] = "mean"
    learning_rate: float = Field(
        5e-5, gt=0, description="a trainable backbone's own learning rate (trunk and heads: training.learning_rate); "
        "above 1e-3 is a warning")
    warmup: float = Field(0.1, ge=0, le=1, description="fraction of the training steps over which the backbone's "
                          "learning rate rises linearly from 0")
    cache: bool = Field(True, description="a frozen backbone (trainable: false): compute each distinct text's "
                        "encodings once and reuse them in every epoch")
    cache_dir: str | None = Field(None, description="where the frozen encodings are kept (shareable across runs); "
                                  "default: encoder_cache/ in the run directory")
    cache_memory_mb: float = Field(1024, ge=0, description="encodings up to this size are held in memory; past it "
                                   "they are read from cache_dir's files (memory-mapped)")

    @model_validator(mode="before")
    @classmethod
    def _architecture_replaces_preset(cls, value: Any) -> Any:
        if isinstance(value, dict) and value.get("architecture") is not None and "preset" not in value:
            value = {**value, "preset": None}
        return value

    @model_validator(mode="after")
    def _one_source(self) -> BackboneConfig:
        if (self.preset is None) == (self.architecture is None):
            raise ValueError("set exactly one of preset (a name, hf:// handle or directory) or architecture")
        return self


class ModelConfig(_Strict):
    backbone: BackboneConfig | None = Field(None, description="text: default all-MiniLM-L6-v2 when text is set")
    trunk: TrunkConfig = TrunkConfig()
    heads: dict[str, DenseStack] = Field(
        default_factory=dict, description="per-task tower; a task not named gets `head`"
    )
    head: DenseStack = Field(default_factory=lambda: DenseStack(units=[32]))
    embedding_dim: int | Literal["auto"] = "auto"


# ----------------------------------------------------------------------------- training
class LrSchedule(_Strict):
    type: Literal["constant", "reduce_on_plateau", "cosine"] = "constant"
    monitor: str = "val_loss"
    factor: float = Field(0.5, gt=0, lt=1)
    patience: int = Field(2, ge=0)
    min_lr: float = Field(1e-6, ge=0)
    warmup_epochs: float = Field(0.0, ge=0)
    alpha: float = Field(0.0, ge=0, le=1, description="cosine: final lr as a fraction of the peak")


class EarlyStopping(_Strict):
    monitor: str = "val_loss"
    patience: int = Field(3, ge=0)
    mode: Literal["auto", "min", "max"] = "auto"
    restore_best_weights: bool = True
    min_delta: float = 0.0


class SmoteConfig(_Strict):
    task: str
    sampling_strategy: float | Literal["auto", "minority", "not majority", "not minority", "all"] = "auto"
    k_neighbors: int = Field(5, ge=1)


WEIGHTING_PARAMS = {"gradnorm": ("alpha", "lr"), "dwa": ("temperature",), "cagrad": ("c",), "rlw": ("seed",)}


class WeightingConfig(_Strict):
    """``training.weighting``: a strategy name, or ``{name: ..., <its parameters>}``."""

    name: Literal["fixed", "uncertainty", "gradnorm", "dwa", "rlw", "pcgrad", "cagrad"] = "fixed"
    alpha: float | None = Field(None, ge=0, description="gradnorm: restoring-force strength (default 1.5)")
    lr: float | None = Field(None, gt=0, description="gradnorm: the weights' learning rate (default 0.025)")
    temperature: float | None = Field(None, gt=0, description="dwa: softmax temperature (default 2)")
    c: float | None = Field(None, ge=0, description="cagrad: the ball's radius relative to |g0| (default 0.4)")
    seed: int | None = Field(None, description="rlw: seed of the random weights (default 0)")

    @model_validator(mode="after")
    def _own_params(self) -> WeightingConfig:
        for key in ("alpha", "lr", "temperature", "c", "seed"):
            if getattr(self, key) is not None and key not in WEIGHTING_PARAMS.get(self.name, ()):
                owners = [n for n, keys in WEIGHTING_PARAMS.items() if key in keys]
                raise ValueError(f"{key!r} is a parameter of {', '.join(owners)}, not of {self.name}")
        return self


def _weighting(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


class DistributeConfig(_Strict):
    """``training.distribute``: data-parallel training on ``tf.distribute`` (docs/scaling.md)."""

    strategy: Literal["none", "mirrored", "multi_worker"] = Field(
        "none", description="mirrored: every local device; multi_worker: the cluster named by TF_CONFIG")
    max_restarts: int = Field(0, ge=0, description="mtl train --workers/--ray: restart a failed job this many times")
    timeout_seconds: float = Field(120.0, gt=0, description="how long a worker waits for the chief to be reachable")


class TrainingConfig(_Strict):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(256, ge=1)
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float | None = Field(None, ge=0)
    lr_schedule: LrSchedule = LrSchedule()
    early_stopping: EarlyStopping | None = None
    smote: SmoteConfig | None = None
    steps_per_execution: int = Field(64, ge=1)
    jit_compile: bool = False
    verbose: Literal["auto", 0, 1, 2] = Field(
        "auto", description="progress: 0 none, 1 a bar per epoch, 2 one line per epoch; auto: 1 on a terminal, else 2")
    weighting: WeightingConfig = WeightingConfig()
    mixed_precision: Literal["float32", "mixed_bfloat16", "mixed_float16"] = "float32"
    bucket_by_length: bool = Field(False, description="text: batch training rows of similar length together")
    skip_unlabelled_rows: bool = Field(True, description="iterate only over training rows that carry a label after "
                                       "label_fraction and SMOTE (false: every row, as many steps per epoch as rows)")
    distribute: DistributeConfig = Field(DistributeConfig(), description="data-parallel training on several devices "
                                         "or workers (see [Scaling out](scaling.md))")

    _coerce_weighting = field_validator("weighting", mode="before")(_weighting)


class ExportConfig(_Strict):
    """Export the trained model as a TF Serving SavedModel at the end of a run (``base_path/name/<version>``)."""

    base_path: str = "exports"
    name: str
    version: int | None = None  # default: one more than the highest existing version


class OutputConfig(_Strict):
    run_dir: str | None = None
    export: ExportConfig | None = None


# ----------------------------------------------------------------------------- tune
class TuneObjective(_Strict):
    """``tune.objective``: the validation metric of one task that ``mtl tune`` optimises."""

    task: str
    metric: str
    direction: Literal["maximize", "minimize"] | None = None  # default: minimise rmse/mae/mse, maximise the rest


class TuneParam(_Strict):
    """One dimension of ``tune.space``: a list (or ``{choice: [...]}``), ``{uniform: [low, high]}``,
    ``{log_uniform: [low, high]}`` or ``{int: [low, high]}``; ``step`` for uniform and int, ``log`` for int."""

    choice: list[Any] | None = None
    uniform: tuple[float, float] | None = None
    log_uniform: tuple[float, float] | None = None
    int: tuple[builtins.int, builtins.int] | None = None
    step: builtins.int | float | None = Field(None, gt=0)
    log: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _list_is_choice(cls, value: Any) -> Any:
        if isinstance(value, list):
            return {"choice": value}
        if not isinstance(value, dict):
            raise ValueError(f"expected a list of choices or a range such as {{log_uniform: [1.0e-4, 1.0e-2]}}, "
                             f"got {value!r}")
        return value

    @model_validator(mode="after")
    def _one_range(self) -> TuneParam:
        kinds = [k for k in ("choice", "uniform", "log_uniform", "int") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("give exactly one of a list of choices, choice, uniform, log_uniform or int, "
                             f"got {', '.join(kinds) or 'none'}")
        kind = kinds[0]
        if kind == "choice":
            texts = [yaml.safe_dump(c) for c in self.choice or []]
            if not texts or len(set(texts)) != len(texts):
                raise ValueError("choices must be a non-empty list of distinct values")
            if self.step is not None or self.log:
                raise ValueError("step and log apply to uniform and int ranges, not to choices")
            return self
        low, high = getattr(self, kind)
        if not low < high:
            raise ValueError(f"{kind}: [low, high] needs low < high, got [{low}, {high}]")
        if kind == "log_uniform" and low <= 0:
            raise ValueError(f"log_uniform: low must be > 0, got {low}")
        if self.log and (kind != "int" or low < 1 or self.step is not None):
            raise ValueError("log: true applies to an int range with low >= 1 and no step (else use log_uniform)")
        if self.step is not None:
            if kind == "log_uniform" or (kind == "int" and self.step != round(self.step)):
                raise ValueError(f"step: {self.step:g} does not fit a {kind} range (int ranges take integer steps)")
            if not math.isclose((high - low) / self.step, round((high - low) / self.step), abs_tol=1e-9):
                raise ValueError(f"step: high - low ({high - low:g}) must be a multiple of step ({self.step:g})")
        return self


class TuneConfig(_Strict):
    """``tune``: the search of ``mtl tune`` (``mtl.tuning``). ``mtl train`` validates it and otherwise ignores it."""

    objective: TuneObjective
    sampler: Literal["tpe", "random"] = "tpe"
    space: dict[str, TuneParam] = {}


class Config(_Strict):
    """The whole run configuration, as in ``configs/default.yaml``."""

    seed: int = 42
    data: DataConfig
    tasks: dict[str, TaskConfig]
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    output: OutputConfig = OutputConfig()
    tune: TuneConfig | None = None

    @field_validator("tasks")
    @classmethod
    def _some_tasks(cls, v: dict[str, Any]) -> dict[str, Any]:
        if not v:
            raise ValueError("define at least one task")
        for name in v:
            if not name.isidentifier():
                raise ValueError(f"task name {name!r} must be a Python identifier (letters, digits, _)")
        return v

    @model_validator(mode="after")
    def _cross_references(self) -> Config:
        names = list(self.tasks)
        classifiers = [n for n, t in self.tasks.items() if TASK_TYPES[t.type].classifier]
        strat = self.data.split.stratify
        if strat is not None and strat not in classifiers:
            raise ValueError(_ref_message("data.split.stratify", strat, classifiers, "a binary or multiclass task"))
        for head in self.model.heads:
            if head not in names:
                raise ValueError(_ref_message(f"model.heads.{head}", head, names, "a task"))
        features = self.data.features.columns()
        for name, task in self.tasks.items():
            if task.column in features:
                raise ValueError(f"tasks.{name}.column: {task.column!r} is also an input feature; "
                                 "a target cannot be an input")
            if name in features:
                raise ValueError(f"tasks.{name}: a task cannot share its name with the input feature {name!r}; "
                                 "rename the task")
        self._check_weighting()
        self._check_features()
        self._check_parents()
        check_links({name: task.links() for name, task in self.tasks.items()},
                    {name: TASK_TYPES[task.type] for name, task in self.tasks.items()},
                    {name: task.reads_trunk for name, task in self.tasks.items()})
        smote = self.training.smote
        if smote is not None and self.data.streaming:
            raise ValueError("training.smote: SMOTE resamples the whole training table in memory; it is not "
                             "available with data.streaming")
        if smote is not None and smote.task not in classifiers:
            if smote.task in self.tasks:
                kinds = " or ".join(name for name, cls in TASK_TYPES.items() if cls.classifier)
                raise ValueError(f"training.smote.task: SMOTE needs a {kinds} task, "
                                 f"but {smote.task!r} is a {self.tasks[smote.task].type} task")
            raise ValueError(_ref_message("training.smote.task", smote.task, classifiers, "a classification task"))
        return self

    def _check_features(self) -> None:
        """Each configured kind checks the rest of the config (a text column needs a backbone, ...); word-level
        tasks need a kind that gives words."""
        kinds = {kind for kind, _ in configured_columns(self.data.features)}
        word_level = [n for n, t in self.tasks.items() if TASK_TYPES[t.type].level == "word"]
        if word_level and not any(FEATURE_KINDS[k].provides_words for k in kinds):
            raise ValueError(f"tasks.{word_level[0]}: a {self.tasks[word_level[0]].type} task needs "
                             "data.features.text (the words it tags)")
        for kind in FEATURE_KINDS:
            FEATURE_KINDS[kind].check_config(self, kind in kinds)

    def _check_parents(self) -> None:
        for name, task in self.tasks.items():
            parent = getattr(task, "parent", None)
            if parent is None:
                continue
            same_type = [n for n, t in self.tasks.items() if t.type == task.type and n != name]
            if parent not in same_type:
                raise ValueError(_ref_message(f"tasks.{name}.parent", parent, same_type,
                                              f"another {task.type} task"))
            seen, node = [name], parent
            while node is not None:
                if node in seen:
                    raise ValueError(f"tasks.{name}.parent: the parents form a cycle: {' -> '.join(seen + [node])}")
                seen.append(node)
                node = getattr(self.tasks[node], "parent", None)

    def _check_weighting(self) -> None:
        name = self.training.weighting.name
        if name == "fixed":
            return
        if len(self.tasks) < 2:
            raise ValueError(f"training.weighting: {name} balances two or more tasks, but the config defines "
                             f"{len(self.tasks)}; use fixed")
        for task_name, task in self.tasks.items():
            if task.weight != 1.0:
                raise ValueError(f"tasks.{task_name}.weight: per-task weights apply only with training.weighting "
                                 f"fixed; {name} sets the weights itself")
        trunk = self.model.trunk
        if name == "gradnorm" and not (trunk.units if trunk.type == "shared_bottom" else trunk.expert_units):
            key = "units" if trunk.type == "shared_bottom" else "expert_units"
            raise ValueError(f"training.weighting: gradnorm needs a shared layer, but model.trunk.{key} is empty")


def _ref_message(key: str, value: str, valid: list[str], what: str) -> str:
    hint = difflib.get_close_matches(value, valid, n=1)
    tail = f" (did you mean {hint[0]!r}?)" if hint else f"; valid: {', '.join(valid) or 'none'}"
    return f"{key}: {value!r} is not {what}{tail}"


# ----------------------------------------------------------------------------- loading
def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config, apply ``key.path=value`` overrides and validate it."""
    path = Path(path)
    if not path.is_file():
        raise MtlError(f"config file not found: {path}")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise MtlError(f"the config file has {size:,} bytes, more than the limit of {MAX_CONFIG_BYTES:,}",
                       where=str(path))
    try:
        raw = read_yaml(path.read_text(encoding="utf-8"), str(path))
    except UnicodeDecodeError:
        raise MtlError("not UTF-8 text", where=str(path)) from None
    if raw is None:
        raise MtlError("the config file is empty", where=str(path))
    if not isinstance(raw, dict):
        raise MtlError("the config must be a mapping of keys to values", where=str(path))
    raw = apply_overrides(raw, overrides or [])
    return config_from_dict(raw, source=str(path), overrides=overrides)


def read_yaml(text: str, where: str) -> Any:
    """Parse YAML safely; a document that expands (through aliases) to more than ``MAX_CONFIG_NODES`` values, or
    nests too deeply, is refused before it is built."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        nodes = _expanded_nodes(node)
        if nodes > MAX_CONFIG_NODES:
            raise MtlError(f"the config expands to more than {MAX_CONFIG_NODES:,} values (YAML aliases?)", where=where)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{where}:{mark.line + 1}" if mark else where
        raise MtlError(f"not valid YAML ({getattr(exc, 'problem', None) or str(exc).splitlines()[0]})",
                       where=at) from None
    except RecursionError:
        raise MtlError("the config nests too deeply", where=where) from None
    finally:
        loader.dispose()


def _expanded_nodes(root: yaml.Node) -> int:
    """How many values the document holds once every alias is expanded (each node counted once per use)."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else (
            node.value if isinstance(node, yaml.SequenceNode) else [])
        if done or not children:
            sizes[id(node)] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[id(node)] > MAX_CONFIG_NODES:
                return sizes[id(node)]
            continue
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Return a copy of ``raw`` with each ``a.b.c=value`` set (value parsed as YAML)."""
    import copy

    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise MtlError(f"--set {item!r}: expected key.path=value")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise MtlError(f"--set {item!r}: {part!r} holds a value, not a mapping")
            node = child
        node[parts[-1]] = value
    return raw


def config_from_dict(raw: dict, source: str = "config", overrides: list[str] | None = None) -> Config:
    """Validate a plain dict; the first error becomes one ``MtlError`` line naming the key path, and the
    ``--set KEY=VALUE`` override (of ``overrides``) that set that key rather than ``source`` when one did."""
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        error = _most_telling(exc.errors())
        message = _describe(error, raw)
        path = ".".join(str(p) for p in _clean_loc(error["loc"], raw)[1])
        blamed = next((item for item in overrides or [] if _override_sets(item, path, message)), None)
        raise MtlError(message, where=f"--set {blamed}" if blamed else source) from None


def _override_sets(item: str, path: str, message: str) -> bool:
    """Whether the override ``item`` (``key=value``) set the key an error is about (at, above or below ``path``,
    or named in a cross-reference error's message)."""
    key = item.partition("=")[0].strip()
    if not key:
        return False
    if path:
        return path == key or path.startswith(f"{key}.") or key.startswith(f"{path}.")
    return message.startswith(f"{key}:") or f" {key}" in message or message.startswith(key)


def _most_telling(errors: list[dict]) -> dict:
    """Of a union's errors, prefer the member the input was meant for (a mapping is not a number)."""
    for error in errors:
        mismatch = isinstance(error.get("input"), dict) and (error["type"].endswith(("_type", "_parsing"))
                                                             or error["type"].startswith("literal"))
        if not mismatch:
            return error
    return errors[0]


def dump_config(config: Config) -> str:
    """The resolved config as YAML (what a run directory keeps as ``config.yaml``)."""
    data = config.model_dump(mode="json", exclude={"tune"})
    if config.tune is not None:  # shown only when set; a space dimension shows only its own range
        data["tune"] = config.tune.model_dump(mode="json", exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False)


def _describe(error: dict, raw: dict) -> str:
    loc, shown = _clean_loc(error["loc"], raw)
    path = ".".join(str(p) for p in shown)
    kind = error["type"]
    if kind == "extra_forbidden":
        valid = _valid_keys(loc[:-1], raw)
        hint = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
        tail = f" (did you mean {hint[0]!r}?)" if hint else f" (valid keys: {', '.join(valid)})"
        return f"{path}: unknown key{tail}"
    if kind == "missing":
        return f"{path}: required key is missing"
    if kind == "union_tag_invalid" or kind == "union_tag_not_found":
        tags = error.get("ctx", {}).get("expected_tags", ", ".join(TASK_TYPE_NAMES))
        return f"{path}.type: must be one of {tags}" if kind == "union_tag_not_found" else (
            f"{path}.type: "
            f"{quote_value(error['input'].get('type') if isinstance(error['input'], dict) else error['input'])}"
            f" is not a task type; expected one of {tags}"
        )
    message = error["msg"].removeprefix("Value error, ")
    if kind.endswith("_type") or kind.endswith("_parsing") or kind.startswith("literal"):
        return f"{path}: {message}, got {quote_value(error['input'])}" if path else message
    return f"{path}: {message}" if path else message


def _clean_loc(loc: tuple, raw: dict) -> tuple[tuple, list]:
    """Drop pydantic's union-member markers (e.g. the task type tag) from an error location."""
    shown, node = [], raw
    kept = []
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
            shown.append(part)
            kept.append(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            shown.append(part)
            kept.append(part)
        elif isinstance(part, str) and (part in TASK_TYPE_NAMES or "[" in part
                                        or part in ("float", "int", "str", "bool", "WeightSchedule", "none",
                                                    "LastLayers")
                                        or part.startswith("constrained-")
                                        or (part[:1].isupper() and part.isidentifier())):  # a model's class name
            continue  # a union member's name, not a key
        else:
            shown.append(part)
            kept.append(part)
            node = None
    return tuple(kept), shown


def _valid_keys(loc: tuple, raw: dict) -> list[str]:
    """The keys a mapping at ``loc`` may hold, found by walking the schema along the raw config."""
    model: Any = Config
    node: Any = raw
    for part in loc:
        node = node.get(part) if isinstance(node, dict) else None
        model = _child_model(model, part, node)
        if model is None:
            return []
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def _child_model(model: Any, part: Any, node: Any) -> Any:
    annotation = model.model_fields[part].annotation if (
        isinstance(model, type) and issubclass(model, BaseModel) and part in model.model_fields
    ) else model
    if annotation is model and not (isinstance(model, type) and issubclass(model, BaseModel)):
        # ``model`` is a dict[str, X] annotation: step into X.
        args = typing.get_args(model)
        annotation = args[1] if len(args) == 2 else None
    return _pick(annotation, node)


def _pick(annotation: Any, node: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _pick(typing.get_args(annotation)[0], node)
    if origin in (Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
        if isinstance(node, dict) and "type" in node:
            for m in models:
                field = m.model_fields.get("type")
                if field is not None and node["type"] in typing.get_args(field.annotation):
                    return m
        if models:
            return models[0]
        dicts = [m for m in members if typing.get_origin(m) is dict]
        return dicts[0] if dicts else None
    return annotation
