"""``notebooks/train_model.ipynb`` runs top to bottom (nbclient), on one epoch, and is committed with outputs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from conftest import ROOT
from nbclient import NotebookClient

NOTEBOOK = ROOT / "notebooks" / "train_model.ipynb"


def test_committed_with_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(c.execution_count for c in code)
    assert all(c.outputs for c in code)
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for c in code for o in c.outputs) >= 2


@pytest.mark.slow
def test_runs_top_to_bottom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTL_NOTEBOOK_SET", "training.epochs=1;training.verbose=0")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert (tmp_path / "exports" / "adult" / "1" / "saved_model.pb").is_file()
    [run] = list((tmp_path / "runs").iterdir())
    assert (run / "metrics.json").is_file()
    last = notebook.cells[-1].outputs[0]["data"]["text/plain"]
    assert "income_label" in last and "hours_per_week" in last
