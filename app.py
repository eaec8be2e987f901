"""Streamlit app: predict one row with an exported model (``streamlit run app.py``).

The form is built from the export alone (``assets/mtl_metadata.json``): each feature kind draws its widget (a
number starting at the training mean, a select box of the training vocabulary starting at its most frequent value,
a text area, ...), and each task type shows its output. The form's values are parsed by the same rule as
training.
It uses the newest version of the export base unless another is chosen. The export base comes from
``MTL_EXPORT`` (default ``exports/adult``) and can be changed in the sidebar.
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from mtl.errors import MtlError
from mtl.serving import load, resolve_version, versions


@st.cache_resource(show_spinner="loading the model")
def _load(folder: str):  # noqa: ANN202
    """Cached per version folder, so a newer export is picked up on the next rerun."""
    return load(folder)


st.set_page_config(page_title="mtl predict", layout="centered")
st.title("mtl: predict one row")

base = st.sidebar.text_input("Export base (BASE/NAME) or version folder", os.environ.get("MTL_EXPORT", "exports/adult"),
                             key="export_path")
found = versions(Path(base))
choice = st.sidebar.selectbox("Version", ["newest", *map(str, reversed(found))], key="version") if found else "newest"
try:
    model = _load(str(resolve_version(base, None if choice == "newest" else int(choice))))
except MtlError as exc:
    st.error(str(exc))
    st.stop()

st.caption(f"model: `{model.path}` (version {model.version})")
row: dict = {}
left, right = st.columns(2)
for i, feature in enumerate(model.features.values()):
    row[feature.column] = feature.app_input(left if i % 2 == 0 else right)  # each kind draws its own widget

if st.button("Predict", type="primary", key="predict"):
    import pandas as pd

    from mtl.tasks import TASK_TYPES

    try:
        table = model.predict_frame(pd.DataFrame({c: [v] for c, v in row.items()}, dtype=object), where="form")
    except MtlError as exc:
        st.error(str(exc))
        st.stop()
    st.subheader("Predictions")
    result = table.iloc[0]
    words = [w for f in model.features.values() if f.provides_words for w in str(row[f.column] or "").split()]
    for task, entry in model.tasks.items():
        TASK_TYPES[entry["type"]].show_in_app(st, task, entry, result, words)
