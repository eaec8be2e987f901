"""MultiTaskModel: masked losses and metrics, loss weights inside the compiled graph, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config

from mtl.config import config_from_dict
from mtl.data import prepare
from mtl.model import build_model, masked_mean
from mtl.training import LossWeightScheduler, to_dataset
from mtl.weighting import LossWeightSchedule


@pytest.fixture(scope="module")
def built(adult_slice):
    from mtl.tasks import build_tasks

    config = config_from_dict(tiny_config())
    tasks = build_tasks(config.tasks)
    data = prepare(adult_slice, config, tasks, "adult slice")
    return config, tasks, data


def new_model(built, steps_per_execution=1):
    config, tasks, data = built
    keras.utils.set_random_seed(0)
    model = build_model(config.model, tasks, data.features)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), steps_per_execution=steps_per_execution)
    return model


def batch_of(split, n=64):
    return next(iter(to_dataset(split, n)))


def test_masked_mean_divides_by_labelled_rows():
    loss, count = masked_mean(tf.constant([1.0, 2.0, 3.0, 100.0]), tf.constant([1.0, 1.0, 2.0, 0.0]))
    assert float(count) == 3
    assert float(loss) == pytest.approx((1 + 2 + 6) / 3)
    loss, count = masked_mean(tf.constant([5.0]), tf.constant([0.0]))
    assert float(loss) == 0 and float(count) == 0


def test_masked_label_contributes_nothing_to_loss_or_metrics(built):
    model = new_model(built)
    x, y, w = batch_of(built[2].val)
    y = {k: v.numpy().copy() for k, v in y.items()}
    w = {k: v.numpy().copy() for k, v in w.items()}
    w["income"][:10] = 0.0  # rows 0-9 carry no income label

    def evaluate(labels):
        model.reset_metrics()
        return {k: float(v) for k, v in model.test_step((x, labels, w)).items()}

    before = evaluate(y)
    changed = {k: v.copy() for k, v in y.items()}
    changed["income"][:10] = 1.0 - changed["income"][:10]  # flip the masked labels
    after = evaluate(changed)
    assert before == after
    changed["income"][:10] = np.nan  # even NaN under a zero weight
    assert evaluate(changed) == before
    changed["income"][10] = 1.0 - changed["income"][10]  # an unmasked change does show
    assert evaluate(changed)["income_loss"] != before["income_loss"]


def test_task_loss_is_the_mean_over_labelled_rows_only(built):
    model = new_model(built)
    x, y, w = batch_of(built[2].val)
    w = {k: v.numpy().copy() for k, v in w.items()}
    w["income"][32:] = 0.0
    pred = model(x)["income"].numpy().reshape(-1)[:32]
    label = y["income"].numpy()[:32]
    eps = 1e-7
    p = np.clip(pred, eps, 1 - eps)
    expected = -np.mean(label * np.log(p) + (1 - label) * np.log(1 - p))
    losses = model.compute_task_losses(y, model(x), w)
    assert float(losses["income"][0]) == pytest.approx(expected, rel=1e-4)


def test_schedule_changes_loss_weights_inside_the_compiled_graph(built):
    """Epoch 0 has income weight 0: Adam leaves the income output layer untouched; epoch 1 moves it."""
    model = new_model(built, steps_per_execution=4)
    data = built[2]
    schedule = {"income": LossWeightSchedule("step", start=0.0, end=1.0, at=1),
                "hours_per_week": LossWeightSchedule("constant", start=1.0)}
    kernel = model.get_layer("income").kernel
    start = kernel.numpy().copy()
    snapshots = []

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append((kernel.numpy().copy(), logs["income_weight"]))

    model.fit(to_dataset(data.train, 128, shuffle=True), epochs=2, verbose=0,
              callbacks=[LossWeightScheduler(schedule), Snapshot()])
    (after_0, weight_0), (after_1, weight_1) = snapshots
    assert (weight_0, weight_1) == (0.0, 1.0)
    np.testing.assert_array_equal(after_0, start)
    assert np.abs(after_1 - after_0).max() > 1e-4
    assert model.get_task_weights() == {"income": 1.0, "hours_per_week": 1.0}


def test_regression_head_predicts_original_units(built):
    config, tasks, data = built
    model = new_model(built)
    model.fit(to_dataset(data.train, 128, shuffle=True), epochs=3, verbose=0)
    pred = model.predict(to_dataset(data.val, 512, with_labels=False), verbose=0)["hours_per_week"]
    assert 30 < float(np.mean(pred)) < 50  # hours per week, not standard deviations


def test_saved_model_keras_reloads_with_its_tasks(built, tmp_path):
    model = new_model(built)
    x, y, w = batch_of(built[2].val)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded(x)["income"], model(x)["income"], rtol=1e-6)
    assert set(loaded.tasks) == {"income", "hours_per_week"}
    assert loaded.tasks["hours_per_week"].mean_ == pytest.approx(model.tasks["hours_per_week"].mean_)
    loaded.compile(optimizer="adam")
    logs = loaded.evaluate(to_dataset(built[2].val, 128), return_dict=True, verbose=0)
    assert {"loss", "income_auc", "hours_per_week_rmse"} <= set(logs)


def test_trainable_false_freezes_a_head(adult_slice):
    from mtl.tasks import build_tasks

    config = config_from_dict(tiny_config(tasks__hours_per_week__trainable=False))
    tasks = build_tasks(config.tasks)
    data = prepare(adult_slice, config, tasks, "adult slice")
    model = build_model(config.model, tasks, data.features)
    model.compile(optimizer="adam")
    frozen = model.get_layer("hours_per_week_standardised").kernel.numpy().copy()
    model.fit(to_dataset(data.train, 128), epochs=1, verbose=0)
    np.testing.assert_array_equal(model.get_layer("hours_per_week_standardised").kernel.numpy(), frozen)


def test_eager_metric_results_and_reset_run_compiled_with_keras_values(built):
    """``get_metrics_result`` and ``reset_metrics`` called eagerly (as fit and evaluate do) run as one compiled
    function each (issue 11): the same values as Keras' own eager pass, every variable zero after a reset."""
    model = new_model(built)
    x, y, w = batch_of(built[2].val)
    model.reset_metrics()  # traced before the metrics that build on their first update have made their variables
    model.test_step((x, y, w))
    compiled = model.get_metrics_result()
    eager = keras.Model.get_metrics_result(model)
    assert set(compiled) == set(eager) and len(compiled) > 5
    for name, value in eager.items():
        np.testing.assert_allclose(np.asarray(compiled[name]), np.asarray(value), rtol=1e-6, atol=1e-7, err_msg=name)
    assert any(float(np.max(np.abs(v.numpy()))) > 0 for v in model.metrics_variables)
    model.reset_metrics()
    for variable in model.metrics_variables:
        assert not np.any(variable.numpy()), variable.path
