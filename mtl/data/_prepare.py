"""From a raw table to model-ready splits: validate columns, split, encode labels, mask, resample.

Missing labels are normal: an empty or NaN label means "no label for this task on this row". Each
split carries, per task, the encoded target (0 where absent, never NaN) and a row weight that is 0
where the label is absent and the class weight where it is present. The model masks on that weight.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from mtl.data._labels import data_row, label_text, missing_mask
from mtl.errors import MtlError
from mtl.features import Feature, build_features

log = logging.getLogger("mtl")


class LabelCodec(Protocol):
    """What the data stage needs of a task (``mtl.tasks.Task`` provides it)."""

    name: str
    column: str
    type: str

    def check_rows(self, frame: pd.DataFrame, text_column: str | None) -> None: ...
    def fit(self, labels: pd.Series) -> Any: ...
    def encode(self, labels: pd.Series) -> tuple[np.ndarray, np.ndarray]: ...
    def class_weights(self, y: np.ndarray) -> np.ndarray: ...


@dataclass
class SplitData:
    """One split as arrays: ``features[column]``, ``labels[task]``, ``weights[task]`` (0 = unlabelled).

    ``rows`` are the source's 0-based row numbers (-1 for synthetic SMOTE rows).
    """

    features: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    weights: dict[str, np.ndarray]
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    def labelled(self, task: str) -> np.ndarray:
        return self.weights[task] > 0

    def subset(self, keep: np.ndarray) -> SplitData:
        return SplitData(
            {k: v[keep] for k, v in self.features.items()},
            {k: v[keep] for k, v in self.labels.items()},
            {k: v[keep] for k, v in self.weights.items()},
            self.rows[keep],
        )


@dataclass
class PreparedData:
    """The three splits and the input features, fitted on the training split (``features[column]``)."""

    streaming: ClassVar[bool] = False  # held in memory (``mtl.data.StreamingData`` reads its splits each epoch)

    train: SplitData
    val: SplitData
    test: SplitData
    features: dict[str, Feature]
    source: str = ""
    notes: dict[str, Any] = field(default_factory=dict)

    def splits(self) -> dict[str, SplitData]:
        return {"train": self.train, "val": self.val, "test": self.test}

    @property
    def words_column(self) -> str | None:
        """The column whose words word-level tasks read (the text feature), if any."""
        return next((c for c, f in self.features.items() if f.provides_words), None)


def check_columns(frame: pd.DataFrame, config: Any, source: str) -> None:
    """Every configured feature and label column must exist in the table."""
    from mtl.features import configured_columns

    wanted = [(c, f"data.features.{kind}") for kind, c in configured_columns(config.data.features)]
    if config.data.split.column is not None:
        wanted.append((config.data.split.column, "data.split.column"))
    if config.data.split.key is not None:
        wanted.append((config.data.split.key, "data.split.key"))
    wanted += [(t.column, f"tasks.{name}.column") for name, t in config.tasks.items()]
    columns = list(frame.columns)
    for column, key in wanted:
        if column not in frame.columns:
            hint = difflib.get_close_matches(column, columns, n=1)
            tail = f" (did you mean {hint[0]!r}?)" if hint else f"; columns: {', '.join(columns[:20])}"
            raise MtlError(f"column {column!r} not found in {source}{tail}", where=key)


def prepare(frame: pd.DataFrame, config: Any, tasks: dict[str, LabelCodec], source: str = "data") -> PreparedData:
    """Validate and split ``frame`` as ``config`` says; parse every feature column with its kind's parser (the one
    raw-value rule), fit the features and the tasks' label encoders on the training split only."""
    check_columns(frame, config, source)
    features = build_features(config.data)
    parsed = {c: f.parse(frame[c].to_numpy(), where=f"data.features.{f.kind} ({source})") for c, f in features.items()}
    seed = config.seed
    words = next((c for c, f in features.items() if f.provides_words), None)
    if words is not None:
        keep = _rows_with_text(frame, words, source)
        frame, parsed = frame[keep], {c: v[keep] for c, v in parsed.items()}
    for task in tasks.values():
        task.check_rows(frame, words)

    present = {name: ~missing_mask(frame[t.column]) for name, t in tasks.items()}
    any_label = np.logical_or.reduce(list(present.values()))
    dropped = int((~any_label).sum())
    if dropped:
        log.info("dropped %d of %d rows that carry no label for any task", dropped, len(frame))
        frame = frame[any_label]
        parsed = {c: v[any_label] for c, v in parsed.items()}
        present = {k: v[any_label] for k, v in present.items()}
    if len(frame) == 0:
        raise MtlError(f"no row of {source} carries a label for any task", where="tasks")

    parts = _split_rows(frame, config, tasks, present)
    train_frame = frame.iloc[parts["train"]]
    for name, task in tasks.items():
        labels = train_frame[task.column]
        if not present[name][parts["train"]].any():
            raise MtlError(
                f"no labels for this task in the training split (column {task.column!r})", where=f"tasks.{name}"
            )
        task.fit(labels[~missing_mask(labels)])
    for task in tasks.values():
        if getattr(task, "parent", None):
            _fit_tree(task, tasks[task.parent], train_frame)

    splits = {}
    for split_name, positions in parts.items():
        sub = frame.iloc[positions]
        labels, weights = {}, {}
        for name, task in tasks.items():
            y, has = task.encode(sub[task.column])
            labels[name], weights[name] = y, has.astype("float32")
        splits[split_name] = SplitData(
            {c: v[positions] for c, v in parsed.items()}, labels, weights, sub.index.to_numpy()
        )

    train = splits["train"]
    key = config.data.split.key
    for name, cfg in config.tasks.items():
        if cfg.label_fraction < 1.0 and key is not None:  # the same rule as streaming: a hash of the key
            from mtl.data._streaming import key_hash, label_kept

            drop = ~label_kept(key_hash(frame[key].iloc[parts["train"]]), name, cfg.label_fraction, seed)
            train.weights[name][drop], train.labels[name][drop] = 0.0, 0
        elif cfg.label_fraction < 1.0:
            _keep_fraction(train, name, cfg.label_fraction, seed)
    if config.training.smote is not None:
        from mtl.data._resample import smote_resample

        smote = config.training.smote
        numeric = [c for c, v in train.features.items() if v.ndim == 1 and v.dtype.kind == "f"]
        categorical = [c for c, v in train.features.items() if v.dtype == object]
        train = smote_resample(train, smote.task, numeric, categorical, smote.sampling_strategy,
                               smote.k_neighbors, seed)
    for name, task in tasks.items():
        mask = train.weights[name] > 0
        train.weights[name][mask] = task.class_weights(train.labels[name][mask])
    for column, feature in features.items():
        feature.fit(train.features[column])

    prepared = PreparedData(train, splits["val"], splits["test"], features, source)
    for split_name, split in prepared.splits().items():
        counts = ", ".join(f"{t} {int(split.labelled(t).sum())}" for t in tasks)
        log.info("%s: %d rows; labelled: %s", split_name, len(split), counts)
    return prepared


def _rows_with_text(frame: pd.DataFrame, column: str, source: str) -> np.ndarray:
    """Rows whose text is not missing or blank (the others are dropped, logged); no text at all is an error."""
    has_text = ~missing_mask(frame[column]) & (frame[column].astype("string").str.strip() != "").fillna(False) \
        .to_numpy(dtype=bool)
    if not has_text.any():
        raise MtlError(f"column {column!r} of {source} holds no text", where="data.features.text")
    if not has_text.all():
        log.info("dropped %d of %d rows with no text in %r", int((~has_text).sum()), len(frame), column)
    return has_text


def _fit_tree(child: Any, parent: Any, train: pd.DataFrame) -> None:
    """Learn which parent class each child class sits under, from training rows that carry both labels."""
    both = ~missing_mask(train[child.column]) & ~missing_mask(train[parent.column])
    pairs = pd.DataFrame({"child": train[child.column][both].map(label_text),
                          "parent": train[parent.column][both].map(label_text)})
    where = f"tasks.{child.name}.parent"
    first = pairs.drop_duplicates("child")
    tree = dict(zip(first["child"], first["parent"], strict=True))
    conflicts = pairs[pairs["parent"] != pairs["child"].map(tree)]
    if len(conflicts):
        index, row = next(conflicts.iterrows())
        raise MtlError(f"{data_row(index)}: class {row['child']!r} of {child.column!r} sits under "
                       f"{row['parent']!r} here but under {tree[row['child']]!r} on an earlier row; a label tree "
                       "gives each class one parent", where=where)
    orphans = [c for c in child.classes_ if c not in tree]
    if orphans:
        raise MtlError(f"class(es) {orphans[:5]} never occur with a {parent.column!r} label in the training split",
                       where=where)
    child.fit_tree(tree, parent.classes_)


def _split_rows(frame: pd.DataFrame, config: Any, tasks: dict[str, LabelCodec],
                present: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Positions of train/val/test rows; stratified on ``data.split.stratify`` (missing is a stratum), or as
    ``data.split.column`` names them."""
    split = config.data.split
    if split.column is not None:
        return _split_by_column(frame[split.column], split.column)
    if split.key is not None:  # a stable hash of the key, as data.streaming splits (mtl.data._streaming)
        from mtl.data._streaming import SPLIT_CODES, hash_split, key_hash

        codes = hash_split(key_hash(frame[split.key]), split)
        if not (codes == 0).any():
            raise MtlError("the training split is empty", where="data.split")
        return {name: np.flatnonzero(codes == code) for name, code in SPLIT_CODES.items()}
    positions = np.arange(len(frame))
    strata = None
    if split.stratify is not None:
        task = tasks[split.stratify]
        strata = np.where(present[split.stratify], frame[task.column].astype(str).to_numpy(), "<missing>")
    held = split.val + split.test
    warned: list[bool] = []

    def cut(idx: np.ndarray, size: float, labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if size <= 0:
            return idx, idx[:0]
        try:
            return train_test_split(idx, test_size=size, random_state=config.seed, stratify=labels)
        except ValueError as exc:
            if labels is None:
                raise MtlError(f"cannot split {len(idx)} rows: {exc}", where="data.split") from None
            if not warned:  # the second cut (val/test) would fail for the same reason: say it once
                log.warning("stratified split not possible (%s); splitting at random", exc)
                warned.append(True)
            return train_test_split(idx, test_size=size, random_state=config.seed)

    train, rest = cut(positions, held, strata)
    if held <= 0:
        val, test = rest, rest
    elif split.val <= 0 or split.test <= 0:  # one of the two held-out splits is empty
        val, test = (rest[:0], rest) if split.val <= 0 else (rest, rest[:0])
    else:
        val, test = cut(rest, split.test / held, None if strata is None else strata[rest])
    if len(train) == 0:
        raise MtlError("the training split is empty", where="data.split")
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def _split_by_column(values: pd.Series, column: str, require_train: bool = True) -> dict[str, np.ndarray]:
    names = values.astype("string").str.strip().str.lower().fillna("")
    aliases = {"train": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val", "test": "test"}
    unknown = ~names.isin(list(aliases))
    if unknown.any():
        pos = int(np.flatnonzero(unknown.to_numpy())[0])
        raise MtlError(f"column {column!r}, {data_row(values.index[pos])}: {values.iloc[pos]!r} is not a split "
                       "(train, val or test)", where="data.split.column")
    names = names.map(aliases).to_numpy()
    parts = {name: np.flatnonzero(names == name) for name in ("train", "val", "test")}
    if require_train and len(parts["train"]) == 0:
        raise MtlError(f"no row of column {column!r} says train", where="data.split.column")
    return parts


def _keep_fraction(train: SplitData, task: str, fraction: float, seed: int) -> None:
    """Keep ``task``'s labels on ``fraction`` of the labelled training rows (seeded); mask the rest."""
    labelled = np.flatnonzero(train.weights[task] > 0)
    n_keep = max(1, int(round(fraction * len(labelled))))
    if n_keep >= len(labelled):
        return
    rng = np.random.default_rng([seed, 7919])
    keep = rng.choice(labelled, size=n_keep, replace=False)
    drop = np.setdiff1d(labelled, keep)
    train.weights[task][drop] = 0.0
    train.labels[task][drop] = 0
    log.info("label_fraction: kept %s labels on %d of %d training rows", task, n_keep, len(labelled))


def prepare_labelled(frame: pd.DataFrame, features: dict[str, Feature], tasks: dict[str, LabelCodec],
                     source: str = "data") -> SplitData:
    """One labelled table as a split, for fitted ``features`` and ``tasks`` (a trained model's): every feature
    column parsed by its kind's parser and every label encoded by its task, as ``prepare`` does for the test split
    (rows without text are dropped; a task whose column is absent is left unlabelled, logged)."""
    missing = [c for c in features if c not in frame.columns]
    if missing:
        hint = difflib.get_close_matches(missing[0], [str(c) for c in frame.columns], n=1)
        tail = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise MtlError(f"input column(s) {missing} not found{tail}; the model takes {list(features)}", where=source)
    labelled = [t for t in tasks.values() if t.column in frame.columns]
    if not labelled:
        raise MtlError(f"no label column of the model's tasks ({', '.join(t.column for t in tasks.values())}) is "
                       "in the data", where=source)
    for task in tasks.values():
        if task not in labelled:
            log.info("%s: column %r is not in %s; the task is not scored", task.name, task.column, source)
    parsed = {c: f.parse(frame[c].to_numpy(), where=f"data.features.{f.kind} ({source})") for c, f in features.items()}
    words = next((c for c, f in features.items() if f.provides_words), None)
    if words is not None:
        keep = _rows_with_text(frame, words, source)
        frame, parsed = frame[keep], {c: v[keep] for c, v in parsed.items()}
    for task in labelled:
        task.check_rows(frame, words)
    labels, weights = {}, {}
    for name, task in tasks.items():
        if task in labelled:
            y, present = task.encode(frame[task.column])
        else:
            y, present = task.encode(pd.Series([None] * len(frame), index=frame.index, dtype=object))
        labels[name], weights[name] = y, present.astype("float32")
    return SplitData(parsed, labels, weights, frame.index.to_numpy())
