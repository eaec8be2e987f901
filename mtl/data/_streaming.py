"""Data larger than memory (``data.streaming: true``): Parquet or CSV shards read in record batches each epoch.

One streaming pass over every row parses each feature with its kind's own parser (``Feature.parse``, the one
raw-value rule), checks every cell, and fits the features and tasks on the training split through their streaming
hooks (``fit_partial`` / ``finish_fit``: exact running mean and variance, value counts), so nothing holds the table.
Each epoch then reads the files again, in an order shuffled from ``(seed, epoch)``, and shuffles rows within a
bounded buffer (``data.shuffle_buffer``) before they become batches of the same ``(features, labels, weights)``
structure that ``mtl.training.to_dataset`` yields.

Which split a row belongs to (and whether ``label_fraction`` keeps its label) is a pure function of a stable hash
of the row's ``data.split.key`` value, or of its file name and row position: every run, every worker and the
in-memory mode with the same key see the same rows in the same split. Why row groups and files are read in order
(``pyarrow.parquet.ParquetFile.iter_batches``, ``pyarrow.csv.open_csv``): a row's position must be the same in
every pass for the position hash to be stable.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa

from mtl.data._labels import missing_mask
from mtl.data._prepare import check_columns
from mtl.errors import MtlError
from mtl.features import Feature, build_features

log = logging.getLogger("mtl")

__all__ = ["Chunk", "CodedColumn", "StreamingData", "StreamingSplit", "data_files", "hash_split", "label_kept",
           "load_streaming", "sample_table", "shard_schema"]

SHARD_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
_READ_ROWS = 65_536  # rows per record batch read from a file
_UNIT = 2.0**-53


# ----------------------------------------------------------------------------- files and schemas
def is_multi_path(path: str) -> bool:
    """``data.path`` names several files: a directory, or a glob pattern."""
    return any(c in path for c in "*?[") or Path(path).is_dir()


def data_files(path: str) -> list[Path]:
    """The Parquet and CSV files a directory (searched recursively) or a glob pattern names, sorted; hidden files
    and ones starting with ``_`` (``_SUCCESS``) are skipped. None found, or a mix of formats, is an ``MtlError``."""
    if Path(path).is_dir():
        found = [p for p in Path(path).rglob("*") if p.is_file()]
    elif any(c in path for c in "*?["):
        found = [Path(p) for p in glob.glob(path, recursive=True) if Path(p).is_file()]
    else:
        found = [Path(path)] if Path(path).is_file() else []
        if not found:
            raise MtlError(f"file not found: {path}", where="data.path")
    files = sorted(p for p in found if p.suffix.lower() in SHARD_FORMATS and not p.name.startswith((".", "_")))
    if not files:
        raise MtlError(f"no Parquet or CSV files (.parquet, .pq, .csv) match {path}", where="data.path")
    formats = {SHARD_FORMATS[p.suffix.lower()] for p in files}
    if len(formats) > 1:
        raise MtlError(f"{path} mixes Parquet and CSV files; use one format", where="data.path")
    return files


def _csv_header(file: Path) -> list[str]:
    with file.open(encoding="utf-8", newline="") as handle:
        try:
            return next(csv.reader(handle))
        except StopIteration:
            raise MtlError(f"{file} is empty", where="data.path") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise MtlError(f"{file}: cannot read its header row ({exc})", where="data.path") from None


def _file_schema(file: Path) -> pa.Schema:
    """A file's columns and types (CSV columns are text: cells are read as written)."""
    if SHARD_FORMATS[file.suffix.lower()] == "csv":
        return pa.schema([(name, pa.string()) for name in _csv_header(file)])
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(file)
    except (pa.ArrowException, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MtlError(f"cannot read {file} as parquet: {first}", where="data.path") from None


def _type_name(kind: pa.DataType) -> str:
    return "string" if kind == pa.large_string() else str(kind)


def shard_schema(files: list[Path], needed: list[tuple[str, str]], key: str | None) -> pa.Schema:
    """The schema every file shares. ``needed`` is ``[(column, config key)]``. One line naming the file and the
    column when a file lacks the key column or a needed column, a CSV file has no header row, or two files'
    columns differ."""
    first, reference = files[0], _file_schema(files[0])
    for file in files:
        schema = reference if file == first else _file_schema(file)
        names = schema.names
        if key is not None and key not in names:
            raise MtlError(_missing_column(file, key, names, " (the split key)"), where="data.split.key")
        for column, config_key in needed:
            if column not in names:
                raise MtlError(_missing_column(file, column, names), where=config_key)
        if file == first:
            continue
        theirs = {f.name: _type_name(f.type) for f in schema}
        ours = {f.name: _type_name(f.type) for f in reference}
        for name in ours:
            if name not in theirs:
                raise MtlError(f"{file}: no column {name!r}, which {first} has; every file needs the same columns",
                               where="data.path")
            if theirs[name] != ours[name]:
                raise MtlError(f"{file}: column {name!r} is {theirs[name]} here but {ours[name]} in {first}; every "
                               "file needs the same column types", where="data.path")
        extra = next(name for name in theirs if name not in ours) if len(theirs) > len(ours) else None
        if extra is not None:
            raise MtlError(f"{file}: column {extra!r} is not in {first}; every file needs the same columns",
                           where="data.path")
    return reference


def _missing_column(file: Path, column: str, names: list[str], what: str = "") -> str:
    """Why ``column`` is not in ``file``: a CSV whose first line looks like data has no header row."""
    if SHARD_FORMATS[file.suffix.lower()] == "csv":
        looks_like_data = any(_is_number(n) for n in names) or len(set(names)) < len(names) or "" in names
        if looks_like_data:
            return (f"{file}: no column {column!r}{what}; the first line ({', '.join(names[:4])}, ...) looks like "
                    "data, not a header row: streaming reads CSV files whose first line names the columns")
    return f"{file}: no column {column!r}{what}; every file needs it; columns: {', '.join(names[:20])}"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_batches(file: Path, columns: list[str], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """A file's record batches of ``columns``, always in row order."""
    if SHARD_FORMATS[file.suffix.lower()] == "csv":
        from pyarrow import csv as pa_csv

        reader = pa_csv.open_csv(
            file, read_options=pa_csv.ReadOptions(block_size=1 << 22),
            convert_options=pa_csv.ConvertOptions(
                column_types={name: pa.string() for name in schema.names}, include_columns=columns,
                strings_can_be_null=False, quoted_strings_can_be_null=False))
        yield from reader
        return
    import pyarrow.parquet as pq

    yield from pq.ParquetFile(file).iter_batches(batch_size=_READ_ROWS, columns=columns)


# ----------------------------------------------------------------------------- stable hashes
def _text_hash(values: pa.Array | np.ndarray | pd.Series) -> np.ndarray:
    """A stable 64-bit hash of each value's text form (so 7 and "7" agree, and int and string keys hash alike)."""
    if not isinstance(values, pa.Array | pa.ChunkedArray):
        try:
            values = pa.array(np.asarray(values), from_pandas=True)
        except (pa.ArrowException, TypeError, ValueError):
            values = pa.array([None if v is None else str(v) for v in values], pa.string())
    import pyarrow.compute as pc

    texts = pc.fill_null(values.cast(pa.string()), "")
    return pd.util.hash_array(np.asarray(texts.to_numpy(zero_copy_only=False), dtype=object))


def _salt(text: str) -> np.uint64:
    return np.uint64(int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little"))


def _uniform(hashes: np.ndarray) -> np.ndarray:
    """Hashes -> numbers in [0, 1)."""
    return (hashes >> np.uint64(11)).astype("float64") * _UNIT


def position_hash(file_name: str, rows_in_file: np.ndarray) -> np.ndarray:
    """The stable hash of rows by file name and 0-based row position (when no split key is configured)."""
    return pd.util.hash_array(rows_in_file.astype("uint64") ^ _salt(file_name))


def key_hash(values: pa.Array | np.ndarray | pd.Series) -> np.ndarray:
    """The stable hash of rows by their split-key value: integer keys by their value (fast), others by their
    text. A key column of integers with no missing value hashes the same read by pandas or by pyarrow."""
    if isinstance(values, pa.Array | pa.ChunkedArray):
        if pa.types.is_integer(values.type) and values.null_count == 0:
            return pd.util.hash_array(values.to_numpy().astype("int64"))
    elif np.asarray(values).dtype.kind in "iu":
        return pd.util.hash_array(np.asarray(values).astype("int64"))
    return _text_hash(values)


def hash_split(hashes: np.ndarray, split: Any) -> np.ndarray:
    """Each row's split code (0 train, 1 val, 2 test) from its hash and the ``data.split`` fractions."""
    u = _uniform(hashes)
    return np.where(u < split.train, 0, np.where(u < split.train + split.val, 1, 2)).astype("int8")


def label_kept(hashes: np.ndarray, task: str, fraction: float, seed: int) -> np.ndarray:
    """Whether ``label_fraction`` keeps ``task``'s label on each row: a hash of the row, the task and the seed."""
    if fraction >= 1.0:
        return np.ones(len(hashes), dtype=bool)
    return _uniform(pd.util.hash_array(hashes ^ _salt(f"{task}:{seed}"))) < fraction


# ----------------------------------------------------------------------------- parsing one record batch
def _distinct(array: pa.Array) -> tuple[np.ndarray, np.ndarray] | None:
    """``(distinct values, index of each row's value)``, or None when the values are mostly distinct (or of a type
    Arrow cannot dictionary-encode, such as lists)."""
    if pa.types.is_floating(array.type):
        return None
    try:
        encoded = array.dictionary_encode(null_encoding="encode")
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    if len(encoded.dictionary) * 2 > len(array):
        return None
    return encoded.dictionary.to_numpy(zero_copy_only=False), encoded.indices.to_numpy(zero_copy_only=False)


def _parsed_distinct(array: pa.Array, parse: Callable[[np.ndarray, bool], np.ndarray]
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    """``(parse(distinct values, True), each row's index into them)``, or ``(parse(every row, False), None)`` when
    the values are mostly distinct: a record batch of categories is parsed once per distinct value. An error is
    raised by parsing every row, so it names the right row."""
    coded = _distinct(array)
    if coded is None:
        return parse(array.to_numpy(zero_copy_only=False), False), None
    try:
        return parse(coded[0], True), coded[1]
    except MtlError:
        return parse(array.to_numpy(zero_copy_only=False), False), None


def _by_distinct(array: pa.Array, parse: Callable[[np.ndarray, bool], np.ndarray]) -> np.ndarray:
    """``parse`` once per distinct value of ``array`` (``_parsed_distinct``), spread back to the rows."""
    parsed, index = _parsed_distinct(array, parse)
    return parsed if index is None else np.take(parsed, index, axis=0)


@dataclass(frozen=True)
class CodedColumn:
    """A text column of a chunk as its distinct values (``table``, UTF-8 bytes) and each row's index into them
    (``codes``, int32): the form ``tf.data`` takes cheaply (an int32 array and a short table convert at once, a
    column of strings one Python object at a time) and one ``tf.gather`` in the graph turns back into the column.
    Rows move through the shuffle buffer as their codes."""

    table: np.ndarray
    codes: np.ndarray

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, index: np.ndarray | slice) -> CodedColumn:
        return CodedColumn(self.table, self.codes[index])

    @staticmethod
    def concat(parts: list[CodedColumn]) -> CodedColumn:
        offsets = np.cumsum([0, *(len(p.table) for p in parts[:-1])], dtype="int64")
        codes = np.concatenate([p.codes + np.int32(o) for p, o in zip(parts, offsets, strict=True)])
        return CodedColumn(np.concatenate([p.table for p in parts]), codes).compact(slack=2)

    def compact(self, slack: int = 1) -> CodedColumn:
        """The same rows over only the values they use, once the table holds more than ``slack`` times as many
        values as there are rows (a shuffle buffer's pool keeps the tables of rows it has handed on)."""
        if len(self.table) <= slack * max(len(self.codes), 1):
            return self
        used, codes = np.unique(self.codes, return_inverse=True)
        return CodedColumn(self.table[used], codes.astype("int32").reshape(-1))

    def values(self) -> np.ndarray:
        return np.take(self.table, self.codes, axis=0)


def _as_bytes(values: np.ndarray, few: bool) -> np.ndarray:
    """Parsed text as UTF-8 bytes (what a ``tf.string`` tensor holds), converted once per distinct value; a few
    distinct values as a fixed-width bytes array (rows copy and convert to tensors without Python objects)."""
    encoded = [v.encode("utf-8") if isinstance(v, str) else v for v in values]
    return np.asarray(encoded, dtype="S" if few and encoded else object)


@dataclass
class CodedLabels:
    """One task's raw labels of a record batch: its distinct values and each row's index into them (or every
    row's value, ``index`` None, when the labels are mostly distinct or unhashable)."""

    values: pd.Series
    index: np.ndarray | None
    rows: np.ndarray  # row numbers in the file, for messages

    @staticmethod
    def of(array: pa.Array, rows: np.ndarray) -> CodedLabels:
        coded = _distinct(array)
        if coded is None:
            return CodedLabels(pd.Series(array.to_numpy(zero_copy_only=False), index=rows, dtype=object), None, rows)
        return CodedLabels(pd.Series(coded[0], dtype=object), coded[1], rows)

    def take(self, keep: np.ndarray) -> CodedLabels:
        if self.index is None:
            return CodedLabels(self.values.iloc[keep], None, self.rows[keep])
        return CodedLabels(self.values, self.index[keep], self.rows[keep])

    def spread(self, per_value: np.ndarray) -> np.ndarray:
        return per_value if self.index is None else per_value[self.index]

    def series(self) -> pd.Series:
        """Every row's raw label, indexed by its row in the file."""
        if self.index is None:
            return self.values
        return pd.Series(self.values.to_numpy()[self.index], index=self.rows, dtype=object)

    def present(self) -> np.ndarray:
        return self.spread(~missing_mask(self.values))

    def encode(self, task: Any) -> tuple[np.ndarray, np.ndarray]:
        """``task.encode`` once per distinct label; on an error, per row, so the message names its row."""
        if self.index is None:
            return task.encode(self.values)
        try:
            y, has = task.encode(self.values)
        except MtlError:
            return task.encode(self.series())
        return y[self.index], has[self.index]


@dataclass
class Chunk:
    """Rows of one record batch that belong to one split: model inputs, targets, weights, global row numbers."""

    features: dict[str, np.ndarray | CodedColumn]  # text columns coded only in ``read_split(coded=True)``
    labels: dict[str, np.ndarray]
    weights: dict[str, np.ndarray]
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    @staticmethod
    def join(chunks: list[Chunk]) -> Chunk:
        def cat(parts: list[Any]) -> Any:
            if len(parts) == 1:
                return parts[0]
            if isinstance(parts[0], CodedColumn):
                return CodedColumn.concat(parts)
            if parts[0].ndim == 2 and len({p.shape[1] for p in parts}) > 1:  # per-word targets of other widths
                width = max(p.shape[1] for p in parts)
                parts = [np.pad(p, ((0, 0), (0, width - p.shape[1])), constant_values=-1) for p in parts]
            return np.concatenate(parts)

        first = chunks[0]
        return Chunk({k: cat([c.features[k] for c in chunks]) for k in first.features},
                     {k: cat([c.labels[k] for c in chunks]) for k in first.labels},
                     {k: cat([c.weights[k] for c in chunks]) for k in first.weights},
                     np.concatenate([c.rows for c in chunks]))

    def take(self, index: np.ndarray | slice) -> Chunk:
        return Chunk({k: v[index] for k, v in self.features.items()}, {k: v[index] for k, v in self.labels.items()},
                     {k: v[index] for k, v in self.weights.items()}, self.rows[index])


# ----------------------------------------------------------------------------- the streaming data
@dataclass
class StreamingSplit:
    """What a run needs of a split it does not hold: its row count, a digest of its row numbers (the same one
    ``split_fingerprint`` computes of an in-memory split) and a way to read it (``chunks``)."""

    name: str
    source: StreamingData
    count: int = 0
    labelled_counts: dict[str, int] = field(default_factory=dict)
    teaching_count: int = 0  # rows with at least one label that label_fraction keeps: what training iterates over
    digest: Any = field(default_factory=hashlib.sha256)

    def __len__(self) -> int:
        return self.count

    @property
    def rows_sha256(self) -> str:
        return self.digest.hexdigest()

    def chunks(self, shuffle: bool = False, seed: int = 0, epoch: int = 0) -> Iterator[Chunk]:
        """This split's rows, one record batch at a time (files in order; shuffled files with ``shuffle``)."""
        return self.source.read_split(SPLIT_CODES[self.name], shuffle, seed, epoch)


class StreamingData:
    """The three splits of ``data.path`` as streams, and the features fitted on the training split.

    Stands in for ``PreparedData`` in a run: ``train``/``val``/``test`` have a length, ``dataset`` gives the
    ``tf.data`` pipeline of a split and each held-out split's ``chunks`` give its rows for evaluation.
    """

    streaming: ClassVar[bool] = True

    def __init__(self, config: Any, tasks: dict[str, Any], files: list[Path], schema: pa.Schema) -> None:
        self.config, self.tasks, self.files, self.schema = config, tasks, files, schema
        self.features: dict[str, Feature] = build_features(config.data)
        self.source = config.data.path
        self.notes: dict[str, Any] = {"streaming": True, "files": len(files)}
        self.train, self.val, self.test = (StreamingSplit(name, self) for name in SPLIT_CODES)
        split = config.data.split
        wanted = [*self.features, *(t.column for t in tasks.values())]
        wanted += [c for c in (split.key, split.column) if c is not None]
        self.columns = list(dict.fromkeys(wanted))
        self.fitted = False

    @property
    def words_column(self) -> str | None:
        return next((c for c, f in self.features.items() if f.provides_words), None)

    def splits(self) -> dict[str, StreamingSplit]:
        return {"train": self.train, "val": self.val, "test": self.test}

    # ------------------------------------------------------------------ the fitting pass
    def fit(self) -> StreamingData:
        """One pass over every row: parse and check every cell, count each split, fit features and tasks on the
        training split (``fit_partial`` / ``finish_fit``)."""
        if self.fitted:  # a second pass would count every split twice
            raise RuntimeError("StreamingData.fit ran already (load_streaming fits the data it returns)")
        fitted_on: dict[str, int] = {}  # training rows labelled per task (before label_fraction)
        for chunk, codes, present, kept in self._parsed_batches(range(len(self.files))):
            for code, split in enumerate(self.splits().values()):
                mine = codes == code
                if not mine.any():
                    continue
                split.count += int(mine.sum())
                split.digest.update(np.ascontiguousarray(chunk.rows[mine], dtype="int64").tobytes())
                if code == 0:
                    for column, feature in self.features.items():
                        feature.fit_partial(chunk.features[column][mine])
                    for name, task in self.tasks.items():
                        labelled = mine & present[name]
                        if labelled.any():
                            task.fit_partial(chunk.labels[name].take(np.flatnonzero(labelled)).series())
                            fitted_on[name] = fitted_on.get(name, 0) + int(labelled.sum())
                for name in self.tasks:
                    split.labelled_counts[name] = split.labelled_counts.get(name, 0) + int((mine & kept[name]).sum())
                split.teaching_count += int((mine & np.logical_or.reduce(list(kept.values()))).sum())
        if not self.train.count:
            raise MtlError(f"the training split of {self.source} is empty", where="data.split")
        for name, task in self.tasks.items():
            if not fitted_on.get(name):
                raise MtlError(f"no labels for this task in the training split (column {task.column!r})",
                               where=f"tasks.{name}")
            task.finish_fit()
        for feature in self.features.values():
            feature.finish_fit()
        self.fitted = True
        for name, split in self.splits().items():
            counts = ", ".join(f"{t} {split.labelled_counts.get(t, 0)}" for t in self.tasks)
            log.info("%s: %d rows (streamed from %d file(s)); labelled: %s", name, len(split), len(self.files), counts)
        return self

    def _parsed_batches(self, file_order: Any, code: int | None = None, coded: bool = False
                        ) -> Iterator[tuple[Chunk, np.ndarray, dict, dict]]:
        """``(chunk with raw labels, split codes, label present masks, masks of the labels label_fraction keeps)``
        of each record batch, rows without any label (or without text, when a feature gives words) dropped, as the
        in-memory stage drops them. ``code`` None (the fitting pass): every cell is parsed, so an error names its
        row; a split ``code`` (reading a split for the model): only that split's rows are parsed, their text values
        as the UTF-8 bytes a ``tf.string`` holds (each text column a ``CodedColumn`` with ``coded``)."""
        config = self.config
        offsets = self._file_offsets()
        words = self.words_column
        for file_index in file_order:
            file = self.files[file_index]
            start = 0
            for batch in read_batches(file, self.columns, self.schema):
                n = batch.num_rows
                if n == 0:
                    continue
                in_file = np.arange(start, start + n, dtype="int64")
                column = {name: batch.column(name) for name in self.columns}
                labels = {name: CodedLabels.of(column[task.column], in_file) for name, task in self.tasks.items()}
                present = {name: coded.present() for name, coded in labels.items()}
                keep = np.logical_or.reduce(list(present.values()))
                if words is not None:
                    texts = column[words].to_pandas()
                    keep &= ~missing_mask(texts) & (texts.astype("string").str.strip() != "").fillna(False) \
                        .to_numpy(dtype=bool)
                codes, hashes = self._split_codes(file, column, in_file)
                kept = dict(present)  # label_fraction masks training labels only, after the tasks are fitted
                for name, cfg in config.tasks.items():
                    if cfg.label_fraction < 1.0:
                        kept[name] = present[name] & ((codes != 0) | label_kept(hashes, name, cfg.label_fraction,
                                                                                config.seed))
                if code is not None:
                    keep &= codes == code
                index = None if keep.all() else np.flatnonzero(keep)
                selected = pa.array(index) if code is not None and index is not None else None
                features = {}
                for name, feature in self.features.items():
                    values = column[name] if selected is None else column[name].take(selected)
                    features[name] = self._parse(feature, values, file, start, code is not None, coded)
                if index is not None:
                    if selected is None:
                        features = {k: v[index] for k, v in features.items()}
                    labels = {k: v.take(index) for k, v in labels.items()}
                    present = {k: v[index] for k, v in present.items()}
                    kept = {k: v[index] for k, v in kept.items()}
                    codes, in_file = codes[index], in_file[index]
                start += n
                yield Chunk(features, labels, {}, offsets[file_index] + in_file), codes, present, kept

    @staticmethod
    def _parse(feature: Feature, values: pa.Array, file: Path, start: int, for_model: bool,
               coded: bool = False) -> np.ndarray | CodedColumn:
        """One column of a record batch through its feature's parser, once per distinct value; with ``coded``, a
        text column one value a row is returned as a ``CodedColumn``."""
        to_bytes = for_model and feature.dtype == "string"

        def parse(cells: np.ndarray, few: bool) -> np.ndarray:
            parsed = feature.parse(cells, where=f"data.features.{feature.kind} ({file})", first_row=start + 1)
            return _as_bytes(parsed, few) if to_bytes else parsed

        if coded and to_bytes and feature.input_shape() == ():
            parsed, index = _parsed_distinct(values, parse)
            return CodedColumn(parsed, np.arange(len(parsed), dtype="int32") if index is None
                               else index.astype("int32", copy=False))
        return _by_distinct(values, parse)

    def _split_codes(self, file: Path, column: dict[str, pa.Array], in_file: np.ndarray) -> tuple[np.ndarray,
                                                                                                np.ndarray]:
        """Each row's split code (0 train, 1 val, 2 test; -1 none) and its stable hash."""
        split = self.config.data.split
        if split.column is not None:
            from mtl.data._prepare import _split_by_column

            codes = np.full(len(in_file), -1, dtype="int8")
            values = column[split.column].to_pandas()
            values.index = in_file
            for name, positions in _split_by_column(values, split.column, require_train=False).items():
                codes[positions] = SPLIT_CODES[name]
            return codes, position_hash(file.name, in_file)
        hashes = key_hash(column[split.key]) if split.key else position_hash(file.name, in_file)
        return hash_split(hashes, split), hashes

    def _file_offsets(self) -> list[int]:
        """The global row number of each file's first row (files in sorted order)."""
        if not hasattr(self, "_offsets"):
            counts = [self._row_count(file) for file in self.files]
            self._offsets = [0, *np.cumsum(counts)[:-1].tolist()]
        return self._offsets

    def _row_count(self, file: Path) -> int:
        if SHARD_FORMATS[file.suffix.lower()] == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(file).metadata.num_rows
        first = self.schema.names[0]
        return sum(batch.num_rows for batch in read_batches(file, [first], self.schema))

    # ------------------------------------------------------------------ reading a split
    def read_split(self, code: int, shuffle: bool = False, seed: int = 0, epoch: int = 0,
                   coded: bool = False) -> Iterator[Chunk]:
        """The rows of split ``code`` as encoded chunks (targets, weights), one per record batch; with ``coded``
        each text column is a ``CodedColumn``."""
        order = np.arange(len(self.files))
        if shuffle:
            order = np.random.default_rng([seed, epoch, 1]).permutation(len(self.files))
        for chunk, _, _, kept in self._parsed_batches(order, code=code, coded=coded):  # rows of this split only
            if not len(chunk):
                continue
            labels, weights = {}, {}
            for name, task in self.tasks.items():
                y, has = chunk.labels[name].encode(task)
                has = has & kept[name]
                labels[name] = np.where(has, y, 0).astype(y.dtype) if y.ndim == 1 else y
                weights[name] = has.astype("float32")
            yield Chunk(chunk.features, labels, weights, chunk.rows)

    def dataset(self, split: str, batch_size: int, shuffle: bool = False, seed: int = 0,
                first_epoch: int = 0, with_labels: bool = True, skip_unlabelled: bool = False,
                cache_file: str | Path | None = None) -> Any:
        """A ``tf.data`` pipeline of the split's ``(features, labels, weights)`` batches; with ``shuffle`` the n-th
        pass is epoch ``first_epoch + n``: its file order and buffer shuffle are drawn from ``(seed, epoch)``.
        ``skip_unlabelled`` leaves out the rows that carry no label after ``label_fraction`` (training).
        ``cache_file`` (a split read in the same order each pass, such as validation): the first pass writes the
        batches to that file (``tf.data.Dataset.cache``) and later passes read them back instead of parsing every
        file again for the split's rows; the caller removes it.

        Pieces of many batches leave the Python generator packed (``_Packing``) and are unpacked by one graph
        function before ``rebatch``: the generator holds the GIL against the training step, so it does as little
        per row as it can."""
        import tensorflow as tf

        part = self.splits()[split]
        epochs = iter(range(first_epoch, 1 << 62))
        packing = _Packing(self.features)

        def elements() -> Iterator[tuple]:
            for chunk in self.pieces(split, batch_size, shuffle, seed, next(epochs), skip_unlabelled):
                packed = packing.pack(chunk.features, len(chunk))
                yield (packed, chunk.labels, chunk.weights) if with_labels else packed

        signature = self._signature(with_labels)
        specs = (packing.signature(), *signature[1:]) if with_labels else packing.signature()
        dataset = tf.data.Dataset.from_generator(elements, output_signature=specs)
        if with_labels:
            dataset = dataset.map(lambda packed, labels, weights: (packing.unpack(packed), labels, weights))
        else:
            dataset = dataset.map(lambda *packed: packing.unpack(packed))
        count = math.ceil((part.teaching_count if skip_unlabelled else len(part)) / batch_size)
        dataset = dataset.rebatch(batch_size).apply(tf.data.experimental.assert_cardinality(count))
        if cache_file is not None:
            if shuffle:
                raise ValueError("a shuffled split differs each pass; it cannot be cached")
            dataset = dataset.cache(str(cache_file))
        return dataset.prefetch(tf.data.AUTOTUNE)

    def pieces(self, split: str, batch_size: int, shuffle: bool, seed: int, epoch: int,
               skip_unlabelled: bool = False) -> Iterator[Chunk]:
        """One epoch of a split in pieces of whole batches (the last may end with a partial one), text columns as
        ``CodedColumn``. With ``shuffle``: files in an order drawn from ``(seed, epoch)``, and rows
        through a buffer of ``data.shuffle_buffer`` rows that is permuted whenever it is full, its first half then
        handed on. ``skip_unlabelled`` leaves out rows that carry no label after ``label_fraction`` (they teach
        nothing)."""
        buffer = self.config.data.shuffle_buffer
        piece = batch_size * max(1, 8192 // batch_size)  # rows per element handed to tf.data
        rng = np.random.default_rng([seed, epoch, 2])
        pool: Chunk | None = None
        for chunk in self.read_split(SPLIT_CODES[split], shuffle, seed, epoch, coded=True):
            if skip_unlabelled:
                chunk = chunk.take(np.flatnonzero(np.logical_or.reduce([w > 0 for w in chunk.weights.values()])))
            pool = chunk if pool is None else Chunk.join([pool, chunk])
            if shuffle and len(pool) < buffer:
                continue
            if shuffle:
                pool = pool.take(rng.permutation(len(pool)))
            ready = (len(pool) - (buffer // 2 if shuffle else 0)) // batch_size * batch_size
            for begin in range(0, ready, piece):
                yield pool.take(slice(begin, min(begin + piece, ready)))
            pool = pool.take(slice(ready, None))
        if pool is not None and len(pool):
            if shuffle:
                pool = pool.take(rng.permutation(len(pool)))
            for begin in range(0, len(pool), piece):
                yield pool.take(slice(begin, begin + piece))

    def _signature(self, with_labels: bool) -> tuple | dict:
        import tensorflow as tf

        features = {c: tf.TensorSpec((None, *f.input_shape()), tf.string if f.dtype == "string" else tf.float32)
                    for c, f in self.features.items()}
        if not with_labels:
            return features
        labels, weights = {}, {}
        for name, task in self.tasks.items():
            y, _ = task.encode(pd.Series([], dtype=object))
            labels[name] = tf.TensorSpec((None,) * y.ndim, tf.as_dtype(y.dtype))
            weights[name] = tf.TensorSpec((None,), tf.float32)
        return features, labels, weights


class _Packing:
    """How a piece's features cross from the generator into ``tf.data`` (``from_generator`` converts each array in
    Python, holding the GIL): the scalar numeric columns as one float32 matrix, the text columns (``CodedColumn``)
    as one table of their values and one int32 matrix of codes into it, any other feature as itself."""

    def __init__(self, features: dict[str, Feature]) -> None:
        self.order = list(features)
        scalar = {c for c, f in features.items() if f.input_shape() == ()}
        self.numbers = [c for c in self.order if c in scalar and features[c].dtype != "string"]
        self.texts = [c for c in self.order if c in scalar and features[c].dtype == "string"]
        self.others = {c: f for c, f in features.items() if c not in scalar}

    def pack(self, features: dict[str, Any], rows: int) -> tuple:
        numbers = np.empty((rows, len(self.numbers)), dtype="float32")
        for i, column in enumerate(self.numbers):
            numbers[:, i] = features[column]
        coded = [features[column].compact() for column in self.texts]
        offsets = np.cumsum([0, *(len(c.table) for c in coded)])
        codes = np.empty((rows, len(coded)), dtype="int32")
        for i, column in enumerate(coded):
            codes[:, i] = column.codes + offsets[i]
        table = np.concatenate([c.table for c in coded]) if coded else np.zeros(0, dtype="S1")
        return {c: features[c] for c in self.others}, numbers, table, codes

    def signature(self) -> tuple:
        import tensorflow as tf

        others = {c: tf.TensorSpec((None, *f.input_shape()), tf.string if f.dtype == "string" else tf.float32)
                  for c, f in self.others.items()}
        return (others, tf.TensorSpec((None, len(self.numbers)), tf.float32), tf.TensorSpec((None,), tf.string),
                tf.TensorSpec((None, len(self.texts)), tf.int32))

    def unpack(self, packed: tuple) -> dict[str, Any]:
        """The features by name again (in the graph)."""
        import tensorflow as tf

        others, numbers, table, codes = packed
        features = dict(others)
        for i, column in enumerate(self.numbers):
            features[column] = numbers[:, i]
        for i, column in enumerate(self.texts):
            features[column] = tf.gather(table, codes[:, i])
        return {c: features[c] for c in self.order}


def load_streaming(config: Any, tasks: dict[str, Any]) -> StreamingData:
    """Check the files of ``data.path`` (same columns and types in each, the configured columns present, CSV files
    with a header row) and fit the features and tasks in one streaming pass."""
    for name, task in tasks.items():
        if getattr(task, "parent", None) is not None:
            raise MtlError("a label tree (parent) is learned from the whole training table; not available with "
                           "data.streaming", where=f"tasks.{name}.parent")
        if getattr(task, "class_weight", None) is not None:
            raise MtlError("class weights are not available with data.streaming yet; leave class_weight out",
                           where=f"tasks.{name}.class_weight")
    files = data_files(config.data.path)
    from mtl.features import configured_columns

    needed = [(c, f"data.features.{kind}") for kind, c in configured_columns(config.data.features)]
    needed += [(t.column, f"tasks.{name}.column") for name, t in config.tasks.items()]
    if config.data.split.column is not None:
        needed.append((config.data.split.column, "data.split.column"))
    schema = shard_schema(files, needed, config.data.split.key)
    check_columns(pd.DataFrame(columns=schema.names), config, config.data.path)
    if config.training.bucket_by_length:
        log.warning("training.bucket_by_length does not apply with data.streaming; batches are not bucketed")
    return StreamingData(config, tasks, files, schema).fit()


def sample_table(path: str, max_rows: int, needed: list[tuple[str, str]] | None = None) -> tuple[pd.DataFrame, str]:
    """A stable sample of at most about ``max_rows`` rows of the files ``path`` names (for ``mtl eda``), chosen by
    the hash of each row's file and position, and a source text saying how many rows it holds of how many."""
    files = data_files(path)
    schema = shard_schema(files, needed or [], None)
    probe = StreamingData.__new__(StreamingData)
    probe.files, probe.schema = files, schema
    total = sum(probe._row_count(file) for file in files)
    fraction = min(1.0, max_rows / max(total, 1))
    parts = []
    for file in files:
        start = 0
        for batch in read_batches(file, schema.names, schema):
            rows = np.arange(start, start + batch.num_rows, dtype="int64")
            keep = _uniform(position_hash(file.name, rows)) < fraction
            start += batch.num_rows
            if keep.any():
                parts.append(batch.filter(pa.array(keep)).to_pandas())
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=schema.names)
    if len(frame) == 0:
        raise MtlError(f"{path} has no data rows", where="data.path")
    shown = path if fraction >= 1.0 else f"{path} (a sample of {len(frame):,} of {total:,} rows)"
    return frame, shown

