"""Streamlit app: predict one row with an exported model (``streamlit run app.py``).

The form is built from the export alone: a number input per numeric feature, a select box of the training
vocabulary per categorical feature and a text area per text feature (read from ``assets/mtl_metadata.json``).
It uses the newest version of the export base unless another is chosen. The export base comes from
``MTL_EXPORT`` (default ``exports/adult``) and can be changed in the sidebar.
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from mtl.errors import MtlError
from mtl.serving import load
from mtl.serving.loader import resolve_version, versions


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
features = model.metadata.get("features", {})
vocabularies = features.get("categorical", {})
texts = set(features.get("text", []))
row: dict = {}
left, right = st.columns(2)
for i, (name, kind) in enumerate(model.inputs.items()):
    column = left if i % 2 == 0 else right
    if kind == "float":
        row[name] = column.number_input(name, value=0.0, step=1.0, key=f"in_{name}")
    elif name in texts:
        row[name] = st.text_area(name, key=f"in_{name}")
    else:
        options = vocabularies.get(name) or [""]
        row[name] = column.selectbox(name, options, key=f"in_{name}")

if st.button("Predict", type="primary", key="predict"):
    import pandas as pd

    try:
        table = model.predict_frame(pd.DataFrame([row]), where="form")
    except MtlError as exc:
        st.error(str(exc))
        st.stop()
    st.subheader("Predictions")
    result = table.iloc[0]
    for task, info in model.tasks.items():
        if info["type"] == "binary":
            st.metric(f"{task}: P({info['classes'][1]})", f"{result[task]:.6f}", help=f"threshold {info['threshold']}")
            st.write(f"{task} label: **{result[f'{task}_label']}**")
        elif info["type"] == "regression":
            st.metric(task, f"{result[task]:.6f}")
        elif info["type"] == "tagging":
            words = row[next(iter(texts))].split()
            st.write(f"{task}:")
            st.dataframe(pd.DataFrame({"word": words, "tag": result[task][:len(words)]}), hide_index=True)
        else:
            st.metric(f"{task}: most likely", str(result[f"{task}_label"]))
            st.dataframe(pd.DataFrame({"class": info["classes"],
                                       "probability": [result[f"{task}_{c}"] for c in info["classes"]]}),
                         hide_index=True)
