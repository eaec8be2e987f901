"""Text runs with a tiny BERT built from config: joint intent + slots, freezing, label trees, long documents,
export with a raw-string signature, and ``mtl predict`` word tags."""

import json

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, TINY_BACKBONE, run_cli, text_config, write_jsonl

import mtl
from mtl.config import config_from_dict
from mtl.export import export_run
from mtl.serving import load


@pytest.fixture(scope="module")
def joint_run(tmp_path_factory, atis_frame):
    """Intent (multiclass) + slots (tagging) on 400 real ATIS utterances, trained and exported."""
    root = tmp_path_factory.mktemp("atis")
    common = atis_frame["intent"].isin(["atis_flight", "atis_airfare", "atis_ground_service", "atis_airline"])
    frame = pd.concat([atis_frame[common & (atis_frame["split"] == s)].head(n) for s, n in
                       (("train", 400), ("val", 60), ("test", 100))], ignore_index=True)
    path = write_jsonl(root / "atis.jsonl", frame)
    raw = text_config(str(path), training__epochs=8, training__learning_rate=0.005, training__bucket_by_length=True)
    result = mtl.train(config_from_dict(raw), root / "run")
    return {"root": root, "result": result, "export": export_run(root / "run", root / "exports", "atis")}


def test_joint_intent_and_slots_learn(joint_run):
    test = joint_run["result"].metrics["test"]
    assert set(test["slots"]) == {"f1", "precision", "recall", "accuracy", "n"}
    assert test["slots"]["accuracy"] > 0.75  # "O" alone is about 0.6 of these words
    assert test["slots"]["f1"] > 0.3
    assert test["intent"]["n"] == 100
    history = pd.read_csv(joint_run["root"] / "run" / "history.csv")
    assert {"slots_accuracy", "val_slots_loss", "intent_accuracy"} <= set(history.columns)


def test_length_buckets_cover_every_row_once_and_report_their_count(atis_frame):
    from mtl.data import SplitData
    from mtl.training import to_dataset

    texts = atis_frame["text"].head(1000).to_numpy(dtype=object)
    ones = {"a": np.ones(len(texts), "float32")}
    dataset = to_dataset(SplitData({"text": texts}, ones, ones, np.arange(len(texts))), 32, shuffle=True,
                         bucket_by="text")
    batches = [b[0]["text"].numpy() for b in dataset]
    assert int(dataset.cardinality()) == len(batches) < 40
    assert sorted(t.decode() for b in batches for t in b) == sorted(texts)


def test_export_takes_raw_strings_and_returns_word_tags(joint_run):
    model = load(joint_run["export"])
    assert model.inputs == {"text": "string"}
    assert [(f["kind"], f["column"]) for f in model.metadata["features"]] == [("text", "text")]
    out = model.predict({"text": ["show me flights from boston to denver", "hi"]})
    assert out["slots"].shape[:2] == (2, 7) and out["slots_tags"].shape == (2, 7)
    one_word = [t.decode() for t in out["slots_tags"][1]]  # "hi": one tag, then padding
    assert one_word[0] in model.tasks["slots"]["classes"] and one_word[1:] == [""] * 6
    keras_model = joint_run["result"].model
    direct = keras_model.predict_on_batch({"text": np.array(["show me flights from boston to denver", "hi"])})
    np.testing.assert_allclose(out["intent"], direct["intent"], atol=1e-5)


def test_predict_prints_word_tags(joint_run):
    done = run_cli("predict", "--model", str(joint_run["export"]), "--text", "flights from boston to denver",
                   "--task", "slots")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "Task: slots" and lines[1] == "Input: flights from boston to denver"
    tags = eval(lines[2].removeprefix("SLOTS Output: "))  # a Python list of 5 tags
    assert len(tags) == 5 and all(isinstance(t, str) and t for t in tags)


def test_frozen_backbone_does_not_change(tmp_path, atis_jsonl):
    raw = text_config(str(atis_jsonl), model__backbone={**TINY_BACKBONE, "trainable": False},
                      tasks__intent__trainable=False, training__epochs=1)
    keras.utils.set_random_seed(3)
    result = mtl.train(config_from_dict(raw), tmp_path / "run")
    encoder = result.model.get_layer("text_encoder")
    from mtl.model import load_backbone

    keras.utils.set_random_seed(3)
    fresh, _ = load_backbone(config_from_dict(raw).model.backbone)
    for before, after in zip(fresh.weights, encoder.backbone.weights, strict=True):
        np.testing.assert_array_equal(before.numpy(), after.numpy())
    assert not any(w.trainable for w in encoder.backbone.weights)
    assert not any(w.trainable for w in result.model.get_layer("intent").weights)
    assert any(w.trainable for w in result.model.get_layer("slots_dense").weights)


def test_last_n_layers_trains_only_those(tmp_path, atis_jsonl):
    arch = {**TINY_BACKBONE["architecture"], "num_layers": 2}
    raw = text_config(str(atis_jsonl), model__backbone={"architecture": arch, "trainable": {"last_n_layers": 1}},
                      training__epochs=1)
    result = mtl.train(config_from_dict(raw), tmp_path / "run")
    backbone = result.model.get_layer("text_encoder").backbone
    trainable = {layer.name for layer in backbone.layers if layer.trainable_weights}
    assert trainable == {"transformer_layer_1"}


def clothing_frame(rows: int, long_documents: bool = False) -> pd.DataFrame:
    from mtl.data import read_table

    frame = read_table(dataset="womens_clothing")[0].dropna(subset=["review_text", "department_name"])
    frame = frame[frame["department_name"] != "Trend"].head(rows).reset_index(drop=True)
    if long_documents:  # each text: its own review followed by 9 others, well over 512 word pieces
        reviews = frame["review_text"].tolist()
        frame["review_text"] = [" ".join(reviews[i:i + 10] + reviews[:max(0, i + 10 - len(reviews))])
                                for i in range(len(reviews))]
    return frame


def clothing_config(path, **overrides) -> dict:
    raw = {
        "seed": 5,
        "data": {"path": str(path), "features": {"text": "review_text"},
                 "split": {"train": 0.8, "val": 0.1, "test": 0.1, "stratify": "recommended"}, "max_length": 64},
        "tasks": {"recommended": {"type": "binary", "column": "recommended_ind"},
                  "rating": {"type": "regression", "column": "rating"},
                  "department": {"type": "multiclass", "column": "department_name", "unseen_labels": "ignore"},
                  "clothing_class": {"type": "multiclass", "column": "class_name", "parent": "department",
                                     "unseen_labels": "ignore"}},
        "model": {"backbone": TINY_BACKBONE, "trunk": {"units": [16]}, "head": {"units": []}},
        "training": {"epochs": 1, "batch_size": 32, "learning_rate": 0.003, "verbose": 0},
    }
    for key, value in overrides.items():
        raw[key] = {**raw[key], **value}
    return raw


def test_label_tree_decoding_is_consistent_in_evaluation_and_export(tmp_path):
    path = tmp_path / "reviews.parquet"
    clothing_frame(600).to_parquet(path)
    result = mtl.train(config_from_dict(clothing_config(path)), tmp_path / "run")
    scores = result.metrics["test"]["clothing_class"]
    assert scores["consistency"] == 1.0 and 0.0 <= scores["raw_consistency"] <= 1.0
    exported = load(export_run(tmp_path / "run", tmp_path / "exports", "reviews"))
    info = exported.tasks["clothing_class"]
    out = exported.predict({"review_text": result.data.test.features["review_text"][:50]})
    departments = np.asarray(exported.tasks["department"]["classes"])[out["department"].argmax(1)]
    parents = np.asarray(info["parent_of"])[out["clothing_class"].argmax(1)]
    np.testing.assert_array_equal(parents, departments)


def test_long_documents_train_and_serve_in_windows(tmp_path):
    path = tmp_path / "long.parquet"
    clothing_frame(160, long_documents=True).to_parquet(path)
    raw = clothing_config(path, data={"window": {"stride": 48}}, training={"bucket_by_length": True,
                                                                            "mixed_precision": "mixed_bfloat16"})
    raw["tasks"] = {"recommended": raw["tasks"]["recommended"]}
    result = mtl.train(config_from_dict(raw), tmp_path / "run")
    assert keras.config.dtype_policy().name == "float32"  # restored after the run
    texts = result.data.test.features["review_text"]
    assert min(len(t.split()) for t in texts) > 400
    exported = load(export_run(tmp_path / "run", tmp_path / "exports", "long"))
    served = exported.predict({"review_text": texts})["recommended"]
    direct = result.model.predict_on_batch({"review_text": np.asarray(texts)})["recommended"]
    assert served.shape == (len(texts), 1)
    np.testing.assert_allclose(served, direct, atol=2e-2)  # bf16 weights


def test_conll_file_trains_a_tagger(tmp_path):
    from mtl.data import read_table

    frame = read_table(dataset="conll2003")[0]
    lines = []
    for split, n in (("train", 150), ("test", 40)):
        for _, row in frame[frame["split"] == split].head(n).iterrows():
            lines += [f"{w} {t}" for w, t in zip(row["text"].split(), row["ner_tags"], strict=True)] + [""]
    conll = tmp_path / "ner.conll"
    conll.write_text("\n".join(lines))
    raw = text_config(str(conll), data__split={"train": 0.8, "val": 0.0, "test": 0.2},
                      tasks={"ner": {"type": "tagging", "column": "ner_tags", "unseen_labels": "ignore"}},
                      training__epochs=1)
    result = mtl.train(config_from_dict(raw), tmp_path / "run")
    assert result.metrics["test"]["ner"]["n"] == 38
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]["ner"]["accuracy"] > 0.5


def test_the_atis_config_validates():
    cfg = mtl.load_config(ROOT / "configs" / "atis.yaml")
    assert cfg.tasks["slots"].type == "tagging" and cfg.model.backbone.preset == "all-MiniLM-L6-v2"


def test_rest_server_predicts_raw_text(joint_run):
    from fastapi.testclient import TestClient

    from mtl.serving import create_app

    with TestClient(create_app(joint_run["export"].parent, "atis", watch=False)) as client:
        ok = client.post("/v1/models/atis:predict", json={"instances": ["flights from boston to denver", "hi"]})
        assert ok.status_code == 200, ok.text
        rows = ok.json()["predictions"]
        assert len(rows) == 2 and len(rows[0]["slots_tags"]) == 5 and rows[1]["slots_tags"][1:] == [""] * 4
        bad = client.post("/v1/models/atis:predict", json={"instances": [{"txt": "hi"}]})
        assert bad.status_code == 400 and "missing" in bad.json()["error"] and "'text'" in bad.json()["error"]


def test_streamlit_app_tags_a_typed_text(joint_run, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MTL_EXPORT", str(joint_run["export"].parent))
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    assert not app.exception, app.exception
    app.text_area(key="in_text").set_value("flights from boston to denver")
    app.button(key="predict").click().run()
    assert not app.exception, app.exception
    served = load(joint_run["export"]).predict_frame(pd.DataFrame({"text": ["flights from boston to denver"]}))
    table = app.dataframe[-1].value
    assert table["word"].tolist() == ["flights", "from", "boston", "to", "denver"]
    assert table["tag"].tolist() == served["slots"].iloc[0]
