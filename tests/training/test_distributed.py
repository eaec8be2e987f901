"""Data-parallel training (issue 12): two local workers follow the single-process run of the same global batches
(missing labels, a weight schedule, uneven parts of a batch, BatchNorm; a learned strategy; streamed shards), a
killed worker stops the job with one line and the same command resumes, bad cluster input is one line.

Start-up (importing TensorFlow) dominates these tests, so the equality cases run back to back in the same two
worker processes (``run_worker`` once per config, the way a cluster manager's worker would) and the single-process
references run in the test's own process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, run_cli, tiny_config, write_yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mtl
from mtl.cli import main
from mtl.config import config_from_dict
from mtl.errors import MtlError
from mtl.training import free_loopback_ports, read_tf_config, tf_config


@pytest.fixture(scope="module")
def gappy_csv(tmp_path_factory: pytest.TempPathFactory, adult_frame: pd.DataFrame) -> Path:
    """600 real Adult rows, a third of each task's labels missing."""
    frame = adult_frame.sample(600, random_state=3).reset_index(drop=True)
    rng = np.random.default_rng(0)
    frame.loc[rng.random(len(frame)) < 0.3, "income"] = None
    frame.loc[rng.random(len(frame)) < 0.3, "hours_per_week"] = np.nan
    path = tmp_path_factory.mktemp("distributed") / "gappy.csv"
    frame.to_csv(path, index=False)
    return path


def _weights(model: keras.Model) -> list[np.ndarray]:
    return [np.asarray(v) for v in model.weights]


def _numbers(tree: object, prefix: str = "") -> dict[str, float]:
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _numbers(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): float(tree)}


def _digests(stderr: str) -> dict[str, str]:
    """Each worker's logged digest of its final weights: ``{"0": sha, "1": sha}``."""
    found = {}
    for line in stderr.splitlines():
        if ": final weights sha256 " in line:
            head, digest = line.split(": final weights sha256 ")
            found[head.rsplit("worker ", 1)[1]] = digest.strip()
    return found


def _assert_same_run(one: Path, two: Path) -> None:
    """Weights, every metric in metrics.json and every history value within 1e-5."""
    single = mtl.load_model(str(one / "model.keras"))
    distributed = mtl.load_model(str(two / "model.keras"))
    for a, b in zip(_weights(single), _weights(distributed), strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)
    one_metrics = _numbers(json.loads((one / "metrics.json").read_text()))
    two_metrics = _numbers(json.loads((two / "metrics.json").read_text()))
    assert one_metrics.keys() == two_metrics.keys()
    for key, value in one_metrics.items():
        assert two_metrics[key] == pytest.approx(value, abs=1e-5), key
    one_history, two_history = pd.read_csv(one / "history.csv"), pd.read_csv(two / "history.csv")
    assert list(one_history.columns) == list(two_history.columns)
    np.testing.assert_allclose(two_history.to_numpy(float), one_history.to_numpy(float), rtol=0, atol=1e-5)


def _assert_workers_agree(stderr: str) -> None:
    """Both workers logged the same digest of their final weights, and the other worker's scratch is gone."""
    digests = _digests(stderr)
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"], digests
    scratch = [line.split("scratch ", 1)[1].split(" removed")[0] for line in stderr.splitlines()
               if line.startswith("[worker 1] worker finished")]
    assert len(scratch) == 1 and not Path(scratch[0]).exists() and not Path(scratch[0]).parent.exists()


# a worker as a cluster manager starts it: TF_CONFIG in its environment, then run_worker for each (config, run dir)
_WORKER = """
import logging, sys
from mtl.config import load_config
from mtl.training import run_worker
logging.basicConfig(level=logging.INFO, format="mtl: %(message)s")
for config, run_dir in zip(sys.argv[1::2], sys.argv[2::2]):
    run_worker(load_config(config), run_dir)
"""


def _train_on_two_workers(tmp_path: Path, runs: dict[str, dict]) -> None:
    """Train each config of ``runs`` (name -> raw config) in ``tmp_path/name-2w`` on two worker processes joined
    by TF_CONFIG on loopback, one config after the other in the same processes; meanwhile in ``tmp_path/name-1p``
    in this process; and check that each pair of runs is the same run and that both workers ended bit-identical."""
    arguments = []
    for name, raw in runs.items():
        distributed = {**raw, "training": {**raw["training"], "distribute": {"strategy": "multi_worker"}}}
        arguments += [str(write_yaml(tmp_path / f"{name}.yaml", distributed)), str(tmp_path / f"{name}-2w")]
    ports = free_loopback_ports(2)
    logs = [tmp_path / f"worker{index}.log" for index in range(2)]
    processes = []
    for index, log in enumerate(logs):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": tf_config(ports, index),
               "MTL_SCRATCH_DIR": str(tmp_path / f"scratch{index}")}
        with log.open("w") as out:
            processes.append(subprocess.Popen([sys.executable, "-c", _WORKER, *arguments], cwd=tmp_path, env=env,
                                              stdout=out, stderr=subprocess.STDOUT))
    try:
        for name, raw in runs.items():  # the references, while the workers start and train
            mtl.train(config_from_dict(raw), tmp_path / f"{name}-1p")
        codes = [process.wait(timeout=900) for process in processes]
    finally:
        for process in processes:
            process.kill()
    text = [log.read_text() for log in logs]
    assert codes == [0, 0], "\n".join(t[-3000:] for t in text)
    for index in range(2):
        assert not (tmp_path / f"scratch{index}").exists()
    ends = [[line.split("sha256 ")[1] for line in t.splitlines() if ": final weights sha256 " in line] for t in text]
    assert len(ends[0]) == len(runs) and ends[0] == ends[1], ends  # bit-identical workers, run by run
    for name in runs:
        _assert_same_run(tmp_path / f"{name}-1p", tmp_path / f"{name}-2w")


def _write_shards(frame: pd.DataFrame, folder: Path, parts: int = 3) -> Path:
    folder.mkdir(parents=True)
    frame = frame.assign(row_id=np.arange(len(frame)))
    for number, part in enumerate(np.array_split(np.arange(len(frame)), parts)):
        frame.iloc[part].to_csv(folder / f"part-{number}.csv", index=False)
    return folder


@pytest.mark.timeout(1200)  # two TensorFlow processes and three small runs: minutes on a loaded 2-core machine
def test_two_workers_match_one_process(tmp_path, gappy_csv):
    """Two cases in the same two workers, each within 1e-5 of one process (weights, every metric, history):
    missing labels, a linear weight schedule, BatchNorm in the trunk and a batch of 45 rows (parts of 22 and 23
    rows, a short last batch); the uncertainty strategy (learned weights) on streamed CSV shards (each row once per
    epoch across the cluster)."""
    shards = _write_shards(pd.read_csv(gappy_csv), tmp_path / "shards")
    runs = {
        "schedule": tiny_config(str(gappy_csv), training__batch_size=45, training__steps_per_execution=2,
                                model__trunk={"units": [16], "norm": "batch"},
                                tasks__income__weight={"schedule": "linear", "start": 0.2, "end": 1.0}),
        "uncertainty": tiny_config(str(shards), training__batch_size=64, training__weighting="uncertainty",
                                   data__streaming=True,
                                   data__split={"train": 0.8, "val": 0.1, "test": 0.1, "key": "row_id"}),
    }
    _train_on_two_workers(tmp_path, runs)


@pytest.mark.extended  # the default tier checks a learned strategy (uncertainty); these add minutes
@pytest.mark.timeout(1800)
def test_two_workers_with_gradient_strategies_match_one_process(tmp_path, gappy_csv):
    runs = {name: tiny_config(str(gappy_csv), training__batch_size=64, training__steps_per_execution=2,
                              training__weighting=weighting)
            for name, weighting in (("gradnorm", {"name": "gradnorm", "alpha": 1.0}), ("pcgrad", "pcgrad"))}
    _train_on_two_workers(tmp_path, runs)


_MIRRORED = """
import logging, sys
import tensorflow as tf
logging.basicConfig(level=logging.INFO, format="mtl: %(message)s")
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import mtl
from mtl.config import load_config
mtl.train(load_config(sys.argv[1]), sys.argv[2])
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_mirrored_on_two_logical_devices_matches_one_process(tmp_path, gappy_csv):
    """``strategy: mirrored`` with two logical CPU devices in one process: two replicas, the one-process run."""
    raw = tiny_config(str(gappy_csv), training__batch_size=45, training__steps_per_execution=2,
                      tasks__income__weight={"schedule": "linear", "start": 0.2, "end": 1.0})
    config = write_yaml(tmp_path / "c.yaml", {**raw, "training": {**raw["training"],
                                                                  "distribute": {"strategy": "mirrored"}}})
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", _MIRRORED, str(config), str(tmp_path / "two")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "replicas: 2" in done.stderr, done.stderr[-3000:]
    mtl.train(config_from_dict(raw), tmp_path / "one")
    _assert_same_run(tmp_path / "one", tmp_path / "two")


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@pytest.mark.timeout(1800)  # two launches of three TensorFlow processes: minutes on a loaded 2-core machine
def test_killed_worker_stops_the_job_and_the_same_command_resumes(tmp_path, gappy_csv):
    """Missing labels and a weight schedule; worker 1 killed by SIGKILL after the first epoch's checkpoint: one
    line, no worker left; the same command resumes and ends where the uninterrupted one-process run ends, with one
    history row per epoch."""
    # 56 steps per epoch, 4 per call: each call reads every metric across the workers (a collective each)
    raw = tiny_config(str(gappy_csv), training__epochs=3, training__batch_size=8, training__steps_per_execution=4,
                      tasks__income__weight={"schedule": "linear", "start": 0.2, "end": 1.0})
    config = write_yaml(tmp_path / "c.yaml", raw)
    command = [sys.executable, "-m", "mtl.cli", "train", "--config", str(config), "--workers", "2",
               "--run-dir", str(tmp_path / "two")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    with (tmp_path / "first.log").open("w") as log:
        launcher = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=log)
        state = tmp_path / "two" / "checkpoints" / "state.json"
        deadline = time.monotonic() + 900
        while not state.exists() and launcher.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        workers = _children(launcher.pid)
        assert len(workers) == 2, (tmp_path / "first.log").read_text()[-3000:]
        os.kill(workers[1], signal.SIGKILL)  # worker 1, in epoch 2
        code = launcher.wait(timeout=300)
    stderr = (tmp_path / "first.log").read_text()
    assert code == 2, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: worker 1 was killed by SIGKILL"), last
    kept = json.loads(state.read_text())["epochs_completed"]
    assert 1 <= kept < 3 and f"run the same command to resume from epoch {kept}" in last, last
    for pid in workers:  # no worker left running
        assert not Path(f"/proc/{pid}").exists()
    assert not (tmp_path / "two" / "metrics.json").exists()

    with (tmp_path / "again.log").open("w") as log:
        again = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=log)
        try:
            mtl.train(config_from_dict(raw), tmp_path / "one")  # the uninterrupted reference, meanwhile
            code = again.wait(timeout=900)
        finally:
            again.kill()
    stderr = (tmp_path / "again.log").read_text()
    assert code == 0, stderr[-3000:]
    assert f"resuming {tmp_path / 'two'} after epoch {kept} of 3" in stderr
    _assert_workers_agree(stderr)
    assert pd.read_csv(tmp_path / "two" / "history.csv")["epoch"].tolist() == [0, 1, 2]
    _assert_same_run(tmp_path / "one", tmp_path / "two")


# ----------------------------------------------------------------------------- bad input: one line, exit 2
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _train_line(capsys, config: Path, *extra: str) -> str:
    code = main(["train", "--config", str(config), "--run-dir", str(config.parent / "run"), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: "), err
    assert not (config.parent / "run").exists()
    return err[-1]


@pytest.fixture
def worker_config(tmp_path, gappy_csv) -> Path:
    return write_yaml(tmp_path / "c.yaml", tiny_config(str(gappy_csv), training__distribute={
        "strategy": "multi_worker", "timeout_seconds": 1}))


def test_multi_worker_without_tf_config(capsys, monkeypatch, worker_config):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert "TF_CONFIG is not set" in _train_line(capsys, worker_config)


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "not JSON"),
    ('{"cluster": {"worker": ["127.0.0.1"]}, "task": {"type": "worker", "index": 0}}', "is not host:port"),
    ('{"cluster": {"worker": ["127.0.0.1:2000"]}, "task": {"type": "worker", "index": 3}}', "task.index 3"),
    ('{"cluster": {"ps": ["127.0.0.1:2000"]}, "task": {"type": "ps"}}', "chief and workers only"),
    ('{"cluster": {"chief": ["1:\\u00b2"]}, "task": {}}', "is not host:port"),  # a digit int() does not read
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": []}}', "task.type"),
])
def test_malformed_tf_config(text, message):
    with pytest.raises(MtlError, match=message):
        read_tf_config(text)


_JSON = st.recursive(st.none() | st.booleans() | st.integers(-3, 70000) | st.text(max_size=12),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                     max_leaves=12)
_PORT = st.integers(-2, 70000).map(str) | st.text(alphabet="0123456789\u00b2\uff11-", min_size=1, max_size=6)
_ADDRESS = st.builds("{}:{}".format, st.sampled_from(["127.0.0.1", "host-a", "[::1]", ""]), _PORT)
_ROLES = st.sampled_from(["chief", "worker"])
_TASK = st.fixed_dictionaries({}, optional={"type": _ROLES | _JSON, "index": st.integers(-2, 4) | _JSON})


def _tf_config(cluster: object, task: object) -> str:
    return json.dumps({"cluster": cluster, "task": task})


_TF_CONFIG = st.one_of(
    st.text(max_size=60),  # any text
    _JSON.map(json.dumps),  # any JSON
    st.builds(_tf_config, st.dictionaries(_ROLES, st.lists(_ADDRESS, min_size=1, max_size=3), min_size=1), _TASK),
    st.builds(_tf_config, st.dictionaries(_ROLES | st.text(max_size=6), st.lists(_ADDRESS | _JSON, max_size=3) | _JSON,
                                          max_size=3), _TASK | _JSON),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_TF_CONFIG)
def test_any_tf_config_is_a_cluster_or_one_line(text):
    """Whatever TF_CONFIG holds, reading it gives a cluster whose own index names one of its addresses, or one
    line naming TF_CONFIG; never another exception."""
    try:
        cluster = read_tf_config(text)
    except MtlError as error:
        assert error.where == "TF_CONFIG" and "\n" not in str(error)
        return
    assert 0 <= cluster.index < len(cluster.addresses) == len(set(cluster.addresses))
    assert all(0 < int(address.rpartition(":")[2]) < 65536 for address in cluster.addresses)


def test_malformed_tf_config_in_the_cli(capsys, monkeypatch, worker_config):
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": []}}')
    assert "TF_CONFIG" in _train_line(capsys, worker_config)


def test_port_in_use(capsys, monkeypatch, worker_config):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("TF_CONFIG", tf_config([port, _free_port()], 0))
        line = _train_line(capsys, worker_config)
    assert f"port {port} of worker 0" in line and "in use" in line


def test_chief_out_of_reach(capsys, monkeypatch, worker_config):
    monkeypatch.setenv("TF_CONFIG", tf_config([_free_port(), _free_port()], 1))
    line = _train_line(capsys, worker_config)
    assert "worker 1 cannot reach the chief" in line and "within 1 s" in line


def test_zero_workers(capsys, worker_config):
    assert "--workers: must be at least 1, got 0" in _train_line(capsys, worker_config, "--workers", "0")


def test_smote_with_several_workers(capsys, tmp_path, gappy_csv):
    config = write_yaml(tmp_path / "c.yaml", tiny_config(str(gappy_csv), training__smote={"task": "income"}))
    assert "SMOTE" in _train_line(capsys, config, "--workers", "2")


@pytest.mark.extended  # needs the mtl[ray] extra (make test-extended installs it)
@pytest.mark.timeout(1800)
def test_ray_two_workers_match_one_process(tmp_path, gappy_csv):
    raw = tiny_config(str(gappy_csv), training__batch_size=64, training__steps_per_execution=2,
                      tasks__income__weight={"schedule": "linear", "start": 0.2, "end": 1.0})
    config = write_yaml(tmp_path / "c.yaml", raw)
    done = run_cli("train", "--config", str(config), "--ray", "--workers", "2", "--run-dir", str(tmp_path / "two"),
                   timeout=1200)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    digests = _digests(output)
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"], digests
    clusters = [line.split(" on ", 1)[1] for line in output.splitlines() if "worker 0 of 2 on " in line]
    assert clusters and all(a.startswith("127.0.0.1:") for a in clusters[0].split(" (")[0].split(", "))
    mtl.train(config_from_dict(raw), tmp_path / "one")
    _assert_same_run(tmp_path / "one", tmp_path / "two")


@pytest.mark.extended  # the default tier kills a worker and resumes by hand; this is the automatic restart
@pytest.mark.timeout(1800)
def test_max_restarts_restarts_the_workers_after_a_kill(tmp_path, gappy_csv):
    raw = tiny_config(str(gappy_csv), training__epochs=3, training__batch_size=8, training__steps_per_execution=1,
                      training__distribute={"max_restarts": 1})
    config = write_yaml(tmp_path / "c.yaml", raw)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    launcher = subprocess.Popen([sys.executable, "-m", "mtl.cli", "train", "--config", str(config), "--workers", "2",
                                 "--run-dir", str(tmp_path / "two")], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    state = tmp_path / "two" / "checkpoints" / "state.json"
    deadline = time.monotonic() + 900
    while not state.exists() and launcher.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = _children(launcher.pid)
    assert len(workers) == 2
    os.kill(workers[1], signal.SIGKILL)
    _, stderr = launcher.communicate(timeout=1500)
    assert launcher.returncode == 0, stderr[-3000:]
    assert "worker 1 was killed by SIGKILL" in stderr and "restart 1 of 1" in stderr
    assert pd.read_csv(tmp_path / "two" / "history.csv")["epoch"].tolist() == [0, 1, 2]
    assert (tmp_path / "two" / "metrics.json").is_file()
