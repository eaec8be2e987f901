"""The Streamlit app (``app.py``) with ``streamlit.testing.v1.AppTest``: fill the form, press Predict, compare with
``mtl predict``."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
from conftest import ADULT_CATEGORICAL, ADULT_NUMERIC, ROOT
from streamlit.testing.v1 import AppTest

from mtl.cli import main


def test_form_predict_equals_mtl_predict(exported_model: dict, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("MTL_EXPORT", str(exported_model["base"]))
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    assert not app.exception, app.exception
    assert {n.label for n in app.number_input} == set(ADULT_NUMERIC)
    boxes = {b.label: b for b in app.selectbox if b.label in ADULT_CATEGORICAL}
    assert set(boxes) == set(ADULT_CATEGORICAL)
    vocabulary = exported_model["result"].data.train.features["workclass"]
    assert list(boxes["workclass"].options) == [*sorted({str(v) for v in vocabulary}), "(missing)"]
    model = exported_model["result"].model
    assert boxes["workclass"].value == model.features["workclass"].most_frequent_  # starts at the commonest value
    for name in ADULT_NUMERIC:  # a number starts at the training mean, not at 0
        assert app.number_input(key=f"in_{name}").value == pytest.approx(model.features[name].mean_, rel=1e-6)
    assert app.selectbox(key="version").options == ["newest", "1"]

    row = {"age": 47.0, "educational_num": 13.0, "capital_gain": 0.0, "capital_loss": 0.0}
    for name, value in row.items():
        app.number_input(key=f"in_{name}").set_value(value)
    for name in ADULT_CATEGORICAL:
        choice = boxes[name].options[1]
        app.selectbox(key=f"in_{name}").set_value(choice)
        row[name] = choice
    app.button(key="predict").click().run()
    assert not app.exception, app.exception
    shown = {m.label: m.value for m in app.metric}

    assert main(["predict", "--model", str(exported_model["base"]), "--row", json.dumps(row)]) == 0
    expected = pd.read_csv(io.StringIO(capsys.readouterr().out)).iloc[0]
    assert float(shown["income: P(>50K)"]) == pytest.approx(expected["income"], abs=1e-6)
    assert float(shown["hours_per_week"]) == pytest.approx(expected["hours_per_week"], abs=1e-5)
    assert shown["race: most likely"] == expected["race_label"]
    assert any(f"income label: **{expected['income_label']}**" in m.value for m in app.markdown)


def test_a_bad_path_shows_an_error(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("MTL_EXPORT", str(tmp_path))
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not app.exception
    assert "neither an export version folder" in app.error[0].value
