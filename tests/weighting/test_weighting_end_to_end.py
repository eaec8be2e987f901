"""Every strategy trains end to end through ``mtl.train``, logs the weights it used, and reloads; the
gradient-level seam matches the loss-level step when the combination is a plain sum; bad input fails
with one line naming the key."""

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import tiny_config, write_yaml

import mtl
from mtl.cli import main
from mtl.config import config_from_dict
from mtl.data import prepare
from mtl.model import build_model
from mtl.training import to_dataset

STRATEGIES = {
    "uncertainty": lambda w: w[-1] != pytest.approx(0.5),  # learned away from the initial 0.5
    "gradnorm": lambda w: w[-1] != pytest.approx(1.0) and sum(w[-1]) == pytest.approx(2.0, rel=1e-4),
    "dwa": lambda w: sum(w[-1]) == pytest.approx(2.0, rel=1e-4),
    "rlw": lambda w: sum(w[-1]) == pytest.approx(2.0, rel=1e-4) and w[0] != w[-1],
    "pcgrad": lambda w: w[-1] == [1.0, 1.0],
    "cagrad": lambda w: w[-1] == [1.0, 1.0],
}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_trains_and_logs_its_weights(strategy, tmp_path, slice_csv):
    epochs = 3 if strategy == "dwa" else 2
    config = config_from_dict(tiny_config(path=str(slice_csv), training__weighting=strategy,
                                          training__epochs=epochs))
    result = mtl.train(config, tmp_path / "run")
    history = pd.read_csv(result.run_dir / "history.csv")
    assert len(history) == epochs
    weights = history[["income_weight", "hours_per_week_weight"]].values.tolist()
    assert np.isfinite(history["loss"]).all()
    assert STRATEGIES[strategy](weights), weights
    if result.model.weighting.uses_gradients:
        assert (history[["income_grad_norm", "hours_per_week_grad_norm"]] > 0).all().all()
    assert (result.run_dir / "plots" / "loss_weights.png").is_file()
    loaded = keras.saving.load_model(result.run_dir / "model.keras")
    assert loaded.weighting.key == strategy
    for mine, theirs in zip(result.model.weighting.weights, loaded.weighting.weights, strict=True):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy())


def test_dwa_weights_in_history_follow_the_logged_losses(tmp_path, slice_csv):
    config = config_from_dict(tiny_config(path=str(slice_csv), training__weighting={"name": "dwa", "temperature": 1.0},
                                          training__epochs=3))
    history = pd.read_csv(mtl.train(config, tmp_path / "run").run_dir / "history.csv")
    tasks = ["income", "hours_per_week"]
    ratios = np.array([history[f"{t}_loss"][1] / history[f"{t}_loss"][0] for t in tasks])
    expected = 2 * np.exp(ratios) / np.exp(ratios).sum()
    np.testing.assert_allclose(history.loc[2, [f"{t}_weight" for t in tasks]].astype(float), expected, rtol=1e-4)


def test_resumed_dwa_run_weights_its_next_epoch_from_the_restored_loss_history(tmp_path, slice_csv, monkeypatch):
    """A run stopped after epoch 2 of 3 and resumed: DWA's epoch-3 weights come from the checkpointed losses
    of epochs 1 and 2 (a strategy that lost its state would start over with weights 1 and 1)."""
    from mtl.training import EpochCheckpoint

    raw = tiny_config(path=str(slice_csv), training__weighting={"name": "dwa", "temperature": 1.0},
                      training__epochs=3)
    save = EpochCheckpoint.on_epoch_end

    def stop_after_epoch_2(self, epoch, logs=None):  # as if killed right after the epoch-2 checkpoint
        save(self, epoch, logs)
        if epoch == 1:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(EpochCheckpoint, "on_epoch_end", stop_after_epoch_2)
        with pytest.raises(KeyboardInterrupt):
            mtl.train(config_from_dict(raw), tmp_path / "run")
    run = tmp_path / "run"
    history = pd.read_csv(mtl.resume(str(run)).run_dir / "history.csv")
    assert history["epoch"].tolist() == [0, 1, 2]
    tasks = ["income", "hours_per_week"]
    ratios = np.array([history[f"{t}_loss"][1] / history[f"{t}_loss"][0] for t in tasks])
    expected = 2 * np.exp(ratios) / np.exp(ratios).sum()
    assert not np.allclose(expected, 1.0, atol=1e-3)
    np.testing.assert_allclose(history.loc[2, [f"{t}_weight" for t in tasks]].astype(float), expected, rtol=1e-4)


def one_step(adult_slice, weighting):
    from mtl.tasks import build_tasks

    config = config_from_dict(tiny_config())
    tasks = build_tasks(config.tasks)
    data = prepare(adult_slice, config, tasks, "adult slice")
    keras.utils.set_random_seed(0)
    model = build_model(config.model, tasks, data.features, weighting=weighting)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.train_step(next(iter(to_dataset(data.train, 256))))
    return model


def test_gradient_seam_equals_the_loss_level_step_when_combining_by_sum(adult_slice):
    fixed = one_step(adult_slice, None)
    summed = one_step(adult_slice, {"name": "cagrad", "c": 0.0})  # c = 0: the plain sum of task gradients
    pcgrad = one_step(adult_slice, {"name": "pcgrad"})
    assert [v.path for v in fixed.trainable_variables] == [v.path for v in summed.trainable_variables]
    for a, b in zip(fixed.trainable_variables, summed.trainable_variables, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6, err_msg=a.path)
    # task-specific variables get their own task's gradient whatever the strategy does to shared ones
    np.testing.assert_allclose(fixed.get_layer("income").kernel.numpy(), pcgrad.get_layer("income").kernel.numpy(),
                               rtol=1e-5, atol=1e-7)


BAD = {
    "unknown strategy": ({"training__weighting": "gradsurgery"},
                         "training.weighting.name: Input should be 'fixed', 'uncertainty', 'gradnorm', 'dwa', "
                         "'rlw', 'pcgrad' or 'cagrad'"),
    "unknown trunk": ({"model__trunk__type": "moe"},
                      "model.trunk.type: Input should be 'shared_bottom', 'mmoe' or 'ple'"),
    "one task": ({"training__weighting": "pcgrad", "tasks": {"income": {"type": "binary", "column": "income"}}},
                 "training.weighting: pcgrad balances two or more tasks, but the config defines 1; use fixed"),
    "gradnorm without a shared layer": ({"training__weighting": {"name": "gradnorm", "alpha": 0.5},
                                         "model__trunk__units": []},
                                        "training.weighting: gradnorm needs a shared layer, but model.trunk.units "
                                        "is empty"),
    "parameter of another strategy": ({"training__weighting": {"name": "dwa", "alpha": 1.0}},
                                      "training.weighting: 'alpha' is a parameter of gradnorm, not of dwa"),
    "task weight with a learned strategy": ({"training__weighting": "uncertainty", "tasks__income__weight": 2.0},
                                            "tasks.income.weight: per-task weights apply only with "
                                            "training.weighting fixed"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_weighting_or_trunk_is_one_line_exit_2(case, tmp_path, capsys):
    overrides, expected = BAD[case]
    config = write_yaml(tmp_path / "c.yaml", tiny_config(**overrides))
    assert main(["train", "--config", str(config), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert not (tmp_path / "run").exists()


def test_strategy_state_is_in_the_epoch_checkpoint(adult_slice, tmp_path):
    model = one_step(adult_slice, {"name": "gradnorm"})
    learned = {n: float(v.numpy()) for n, v in model.weighting.weights_now.items()}
    assert learned != {"income": 1.0, "hours_per_week": 1.0}
    model.save_weights(tmp_path / "w.weights.h5")
    fresh = one_step(adult_slice, {"name": "uncertainty"})  # a different strategy has other state
    with pytest.raises(ValueError):
        fresh.load_weights(tmp_path / "w.weights.h5")
    again = one_step(adult_slice, {"name": "gradnorm"})
    again.weighting.weights_now["income"].assign(5.0)
    again.load_weights(tmp_path / "w.weights.h5")
    assert {n: float(v.numpy()) for n, v in again.weighting.weights_now.items()} == pytest.approx(learned)
