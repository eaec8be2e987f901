"""MMoE and PLE trunks: per-task softmax mixtures of experts, saving, SavedModel export, training."""

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import tiny_config

import mtl
from mtl.config import config_from_dict
from mtl.data import prepare
from mtl.model import build_model
from mtl.training import to_dataset

MMOE = {"type": "mmoe", "experts": 3, "expert_units": [8, 6]}
PLE = {"type": "ple", "levels": 2, "shared_experts": 2, "task_experts": 1, "expert_units": [8]}


def built(adult_slice, trunk):
    from mtl.tasks import build_tasks

    config = config_from_dict(tiny_config(model__trunk=trunk))
    tasks = build_tasks(config.tasks)
    data = prepare(adult_slice, config, tasks, "adult slice")
    keras.utils.set_random_seed(0)
    return build_model(config.model, tasks, data.features), data


def test_mmoe_gates_are_softmaxes_and_each_task_gets_its_own_mixture(adult_slice):
    model, data = built(adult_slice, MMOE)
    x = next(iter(to_dataset(data.val, 64, with_labels=False)))
    names = ["income", "hours_per_week"]
    probe = keras.Model(model.input, {
        **{f"gate_{t}": model.get_layer(f"mmoe_{t}_gate").output for t in names},
        **{f"mix_{t}": model.get_layer(f"mmoe_{t}_mix").output for t in names},
        **{f"expert_{e}": model.get_layer(f"mmoe_expert_{e}_dense_1").output for e in range(3)},
    })
    out = {k: np.asarray(v) for k, v in probe(x).items()}
    experts = np.stack([out[f"expert_{e}"] for e in range(3)], axis=1)  # (batch, 3, 6)
    for t in names:
        gate = out[f"gate_{t}"]
        assert gate.shape == (64, 3) and np.all(gate >= 0)
        np.testing.assert_allclose(gate.sum(axis=1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(out[f"mix_{t}"], np.einsum("be,bed->bd", gate, experts), rtol=1e-4, atol=1e-6)
    assert not np.allclose(out["gate_income"], out["gate_hours_per_week"])
    assert not np.allclose(out["mix_income"], out["mix_hours_per_week"])


def test_ple_shapes_gates_and_per_task_outputs(adult_slice):
    model, data = built(adult_slice, PLE)
    names = {layer.name for layer in model.layers}
    for level in range(2):
        assert {f"ple_{level}_income_gate", f"ple_{level}_hours_per_week_gate", f"ple_{level}_shared_0_dense_0",
                f"ple_{level}_shared_1_dense_0", f"ple_{level}_income_0_dense_0"} <= names
    assert "ple_0_shared_gate" in names and "ple_1_shared_gate" not in names  # the last level has no shared gate
    # a task's gate mixes its own expert and the shared ones; the shared gate mixes all of them
    assert model.get_layer("ple_0_income_gate").units == 1 + 2
    assert model.get_layer("ple_0_shared_gate").units == 2 * 1 + 2
    x = next(iter(to_dataset(data.val, 32, with_labels=False)))
    tasks = ("income", "hours_per_week")
    probe = keras.Model(model.input, {t: model.get_layer(f"ple_1_{t}_mix").output for t in tasks})
    reps = {k: np.asarray(v) for k, v in probe(x).items()}
    assert reps["income"].shape == (32, 8) and not np.allclose(reps["income"], reps["hours_per_week"])
    preds = model(x)
    assert preds["income"].shape == (32, 1) and preds["hours_per_week"].shape == (32, 1)


@pytest.mark.parametrize("trunk", [MMOE, PLE], ids=["mmoe", "ple"])
def test_trunk_saves_reloads_and_exports(trunk, adult_slice, tmp_path):
    model, data = built(adult_slice, trunk)
    x = next(iter(to_dataset(data.val, 32, with_labels=False)))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    for task in ("income", "hours_per_week"):
        np.testing.assert_allclose(loaded(x)[task], model(x)[task], rtol=1e-6)
    model.export(tmp_path / "saved", format="tf_saved_model", verbose=False)
    import tensorflow as tf

    served = tf.saved_model.load(str(tmp_path / "saved")).signatures["serving_default"](**x)
    np.testing.assert_allclose(served["income"], model(x)["income"], rtol=1e-5)


@pytest.mark.parametrize("trunk, weighting", [(MMOE, "fixed"), (PLE, "gradnorm")], ids=["mmoe", "ple-gradnorm"])
def test_trunk_trains_end_to_end(trunk, weighting, tmp_path, slice_csv):
    config = config_from_dict(tiny_config(path=str(slice_csv), model__trunk=trunk, training__weighting=weighting))
    result = mtl.train(config, tmp_path / "run")
    history = pd.read_csv(result.run_dir / "history.csv")
    assert len(history) == 2 and {"income_weight", "hours_per_week_weight"} <= set(history)
    assert result.metrics["test"]["income"]["auc"] > 0.6
    if weighting == "gradnorm":
        assert result.model.weighting.layers == ["ple_1_shared_0_dense_0", "ple_1_shared_1_dense_0"]
    # exported and served like the default trunk: mtl's SavedModel, loaded as TF Serving and the REST server do
    from mtl.evaluation import predict
    from mtl.export import export_run
    from mtl.serving import load

    version_dir = export_run(result.run_dir, tmp_path / "exports", "adult")
    served = load(version_dir.parent)
    test = result.data.test.features
    columns = {c: [v.decode() if isinstance(v, bytes) else v for v in np.asarray(test[c]).reshape(-1)]
               for c in served.inputs}
    expected = predict(result.model, result.data.test)
    outputs = served.predict(columns)
    for task in ("income", "hours_per_week"):
        np.testing.assert_allclose(outputs[task], expected[task], rtol=1e-4, atol=1e-5)
