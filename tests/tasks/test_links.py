"""Task links (``tasks.<name>.inputs``): a head reads other tasks' outputs; stop_gradient; product (ESMM) links;
bad links as one-line errors; the link graph's cycle check and build order."""

from __future__ import annotations

import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import text_config, tiny_config, write_yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mtl.cli import main
from mtl.config import config_from_dict
from mtl.data import prepare
from mtl.errors import MtlError
from mtl.model import build_model
from mtl.tasks import build_tasks, check_links, link_order
from mtl.training import to_dataset

TASKS = {
    "income": {"type": "binary", "column": "income", "positive": ">50K"},
    "hours_per_week": {"type": "regression", "column": "hours_per_week"},
    "race": {"type": "multiclass", "column": "race", "unseen_labels": "ignore"},
    "male": {"type": "binary", "column": "gender", "positive": "Male"},
}


def linked_model(frame, links: dict[str, list]):
    """A built (untrained) model over the four tasks of ``TASKS`` with ``links`` (``{task: inputs}``)."""
    tasks = {name: {**task, **({"inputs": links[name]} if name in links else {})} for name, task in TASKS.items()}
    cfg = config_from_dict(tiny_config(tasks=tasks, data__split__stratify=None))
    built = build_tasks(cfg.tasks)
    data = prepare(frame, cfg, built)
    return build_model(cfg.model, built, data.features), data


def reads(model: keras.Model, reader: str, source: str) -> bool:
    """Whether the graph of output ``reader`` passes through output ``source`` (walked through each tensor's
    ``_keras_history``: the operation that made it and that operation's input tensors)."""
    target, stack, seen = model.output[source], [model.output[reader]], set()
    while stack:
        tensor = stack.pop()
        if tensor is target and reader != source:
            return True
        operation, node_index, _ = tensor._keras_history
        if id(operation) in seen or not operation._inbound_nodes:
            continue
        seen.add(id(operation))
        stack += list(operation._inbound_nodes[node_index].input_tensors)
    return False


@pytest.fixture(scope="module")
def frame(adult_slice):
    return adult_slice.head(600).reset_index(drop=True)


def test_links_between_type_pairs_feed_the_head_and_train(frame):
    links = {"income": ["hours_per_week", "male"],  # regression -> binary, binary -> binary
             "hours_per_week": ["race"],  # multiclass -> regression
             "race": [{"task": "male", "stop_gradient": True}]}  # binary -> multiclass
    model, data = linked_model(frame, links)
    for reader, sources in {"income": ["hours_per_week", "male", "race"], "hours_per_week": ["race", "male"],
                            "race": ["male"]}.items():
        for source in sources:
            assert reads(model, reader, source), f"{reader} does not read {source}"
    assert not reads(model, "male", "income") and not reads(model, "race", "income")
    assert model.tasks["income"].links == [{"task": "hours_per_week", "stop_gradient": False, "product": False},
                                           {"task": "male", "stop_gradient": False, "product": False}]
    model.compile(optimizer="adam", steps_per_execution=1)
    history = model.fit(to_dataset(data.train, 128, shuffle=True), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_tagging_links_both_ways(atis_frame):
    """A row-level head reads a tagging task's mean tag distribution; a tagging head reads a row-level output beside
    every word (tagging -> multiclass, binary -> tagging with stop_gradient); gradients flow as the links say."""
    rows = atis_frame[atis_frame["split"] == "train"].head(96)
    frame = rows.assign(split=["train"] * 64 + ["val"] * 16 + ["test"] * 16).reset_index(drop=True)
    raw = text_config("unused.jsonl", tasks__intent__inputs=["slots"])
    raw["tasks"]["first_is_o"] = {"type": "binary", "column": "first_is_o",
                                  "inputs": [{"task": "intent", "stop_gradient": True}]}
    raw["tasks"]["slots"]["inputs"] = [{"task": "first_is_o", "stop_gradient": True}]
    frame["first_is_o"] = ["yes" if tags[0] == "O" else "no" for tags in frame["slots"]]
    with pytest.raises(MtlError, match="the task links form a cycle"):
        config_from_dict(raw)  # intent -> slots -> first_is_o -> intent
    raw["tasks"]["first_is_o"]["inputs"] = []
    cfg = config_from_dict(raw)
    built = build_tasks(cfg.tasks)
    data = prepare(frame, cfg, built)
    model = build_model(cfg.model, built, data.features)
    assert reads(model, "intent", "slots") and reads(model, "slots", "first_is_o")
    assert not reads(model, "first_is_o", "intent")
    mean_tags = next(layer for layer in model.layers if layer.input is model.output["slots"]
                     and layer is not model.get_layer("slots"))
    batch = {c: v[:8] for c, v in data.train.features.items()}
    probs, means = keras.Model(model.input, [model.output["slots"], mean_tags.output])(batch)
    seen = np.asarray(probs).sum(-1) > 0.5
    expected = (np.asarray(probs) * seen[..., None]).sum(1) / seen.sum(1, keepdims=True)
    np.testing.assert_allclose(means, expected, rtol=1e-5, atol=1e-6)
    assert any(g is not None and float(tf.reduce_max(tf.abs(g))) > 0
               for g in _head_gradients(model, data, "intent", "slots"))
    assert all(g is None or float(tf.reduce_max(tf.abs(g))) == 0
               for g in _head_gradients(model, data, "slots", "first_is_o"))


def test_a_regression_output_is_read_in_standardised_units(frame):
    model, data = linked_model(frame, {"income": ["hours_per_week"]})
    task = model.tasks["hours_per_week"]
    link = next(layer for layer in model.layers if isinstance(layer, keras.layers.Rescaling)
                and layer.input is model.output["hours_per_week"])
    batch = {c: v[:8] for c, v in data.val.features.items()}
    hours = np.asarray(model(batch)["hours_per_week"])
    standardised = keras.Model(model.input, link.output)(batch)
    np.testing.assert_allclose(standardised, (hours - task.mean_) / task.std_, rtol=1e-4, atol=1e-4)


def _output_dense(model: keras.Model, task: str) -> keras.layers.Layer:
    """The last layer with a kernel on the way back from ``task``'s output (its output Dense layer), found through
    each tensor's ``_keras_history``."""
    operation = model.output[task]._keras_history.operation
    while not hasattr(operation, "kernel"):
        operation = operation._inbound_nodes[0].input_tensors[0]._keras_history.operation
    return operation


def _head_gradients(model, data, reader: str, source: str) -> list:
    """Gradients of ``reader``'s masked loss with respect to the variables of ``source``'s head, once ``reader``'s
    output weights have left zero (where a linked head starts, and passes no gradient back yet)."""
    kernel = _output_dense(model, reader).kernel
    kernel.assign(np.full(kernel.shape, 0.1, dtype="float32"))
    x, y, w = next(iter(to_dataset(data.train, 32)))
    variables = [v for v in model.trainable_variables if v.path.startswith(f"{source}_") or v.path.startswith(
        f"{source}/")]
    assert variables
    with tf.GradientTape() as tape:
        losses = model.compute_task_losses(y, model(x, training=True), w)
    return tape.gradient(losses[reader][0], variables)


def test_stop_gradient_blocks_the_linked_loss_from_the_linked_head(frame):
    trained, data = linked_model(frame, {"income": ["hours_per_week"]})
    assert any(g is not None and float(tf.reduce_max(tf.abs(g))) > 0
               for g in _head_gradients(trained, data, "income", "hours_per_week"))
    fixed, data = linked_model(frame, {"income": [{"task": "hours_per_week", "stop_gradient": True}]})
    assert reads(fixed, "income", "hours_per_week")
    assert all(g is None or float(tf.reduce_max(tf.abs(g))) == 0
               for g in _head_gradients(fixed, data, "income", "hours_per_week"))


def test_a_product_link_outputs_p_aux_times_p_main_given_aux(frame):
    model, data = linked_model(frame, {"income": [{"task": "male", "product": True}]})
    conditional = next(layer for layer in model.layers if isinstance(layer, keras.layers.Multiply)).input
    outputs = keras.Model(model.input, {"conditional": conditional[1], "aux": conditional[0], **model.output})
    got = {k: np.asarray(v) for k, v in outputs({c: v[:32] for c, v in data.val.features.items()}).items()}
    np.testing.assert_array_equal(got["aux"], got["male"])
    np.testing.assert_allclose(got["income"], got["male"] * got["conditional"], rtol=1e-6)
    assert (got["income"] <= got["male"] + 1e-7).all()


def _output_kernel(model: keras.Model, task: str) -> np.ndarray:
    return np.asarray(_output_dense(model, task).kernel)


def test_a_head_that_reads_links_starts_from_zero_output_weights(frame):
    model, _ = linked_model(frame, {"income": ["hours_per_week"], "race": [{"task": "male", "stop_gradient": True}]})
    for task in ("income", "race"):
        assert not _output_kernel(model, task).any(), f"{task}: a linked head's output kernel starts at zero"
    assert _output_kernel(model, "male").any()  # a head without links keeps Keras' default initialisation


def test_a_head_that_does_not_read_the_trunk_is_a_model_of_its_links_alone(frame):
    """``reads_trunk: false``: income's output is sigmoid(w * standardised hours + b), nothing else, and it trains."""
    tasks = {**TASKS, "income": {**TASKS["income"], "inputs": ["hours_per_week"], "reads_trunk": False}}
    cfg = config_from_dict(tiny_config(tasks=tasks, data__split__stratify=None, model__head__units=[]))
    built = build_tasks(cfg.tasks)
    data = prepare(frame, cfg, built)
    model = build_model(cfg.model, built, data.features)
    assert model.tasks["income"].get_config()["reads_trunk"] is False
    model.compile(optimizer=keras.optimizers.Adam(0.05), steps_per_execution=1)
    model.fit(to_dataset(data.train, 128, shuffle=True), epochs=2, verbose=0)
    dense = _output_dense(model, "income")
    kernel, bias = (np.asarray(v) for v in dense.weights)
    assert kernel.shape == (1, 1) and kernel[0, 0] != 0
    batch = {c: v[:32] for c, v in data.val.features.items()}
    out = model(batch)
    hours = model.tasks["hours_per_week"]
    z = (np.asarray(out["hours_per_week"]) - hours.mean_) / hours.std_
    np.testing.assert_allclose(out["income"], 1 / (1 + np.exp(-(z * kernel[0, 0] + bias[0]))), rtol=1e-4, atol=1e-6)


BAD_READS_TRUNK = {
    "no link": ({"income": {"reads_trunk": False}},
                "tasks.income.reads_trunk: false means the head reads only its links, and tasks.income.inputs names "
                "no task to read"),
    "only a product link": ({"income": {"reads_trunk": False, "inputs": [{"task": "male", "product": True}]}},
                            "tasks.income.inputs names no task to read (product links do not count)"),
}


@pytest.mark.parametrize("case", BAD_READS_TRUNK)
def test_a_head_that_reads_neither_trunk_nor_links_is_a_one_line_error(case):
    extra, expected = BAD_READS_TRUNK[case]
    tasks = {name: {**task, **extra.get(name, {})} for name, task in TASKS.items()}
    with pytest.raises(MtlError) as error:
        config_from_dict(tiny_config(tasks=tasks))
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_a_tagging_head_cannot_read_only_its_links():
    raw = text_config("unused.jsonl", tasks__slots__inputs=["intent"], tasks__slots__reads_trunk=False)
    with pytest.raises(MtlError, match="tasks.slots.reads_trunk: a tagging head labels each word from its state"):
        config_from_dict(raw)


BAD_LINKS = {
    "unknown task": ({"income": ["hours_per_wek"]},
                     "tasks.income.inputs[0]: 'hours_per_wek' is not a task (did you mean 'hours_per_week'?)"),
    "self link": ({"race": ["male", "race"]}, "tasks.race.inputs[1]: a task cannot read its own output"),
    "twice": ({"race": ["male", {"task": "male", "stop_gradient": True}]},
              "tasks.race.inputs[1]: race already reads 'male'; link a task once"),
    "product on a non-binary pair": ({"income": [{"task": "race", "product": True}]},
                                     "tasks.income.inputs[0]: a product link needs two tasks of type binary; "
                                     "'race' is a multiclass task"),
    "cycle": ({"income": ["race"], "race": ["male"], "male": ["income"]},
              "tasks.income.inputs[0]: the task links form a cycle: income -> race -> male -> income"),
}


@pytest.mark.parametrize("case", BAD_LINKS)
def test_bad_links_are_one_line_errors(case):
    links, expected = BAD_LINKS[case]
    tasks = {name: {**task, **({"inputs": links[name]} if name in links else {})} for name, task in TASKS.items()}
    with pytest.raises(MtlError) as error:
        config_from_dict(tiny_config(tasks=tasks))
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_a_cycle_in_the_cli_exits_2_and_leaves_nothing(tmp_path, adult_slice, capsys):
    data = tmp_path / "data.csv"
    adult_slice.head(300).to_csv(data, index=False)
    raw = tiny_config(path=str(data), tasks__income__inputs=["hours_per_week"],
                      tasks__hours_per_week__inputs=[{"task": "income", "stop_gradient": True}])
    config = write_yaml(tmp_path / "config.yaml", raw)
    run_dir = tmp_path / "run"
    assert main(["train", "--config", str(config), "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "tasks.income.inputs[0]: the task links form a cycle" in err[-1]
    assert "Traceback" not in "\n".join(err) and not run_dir.exists()


def _has_cycle(edges: dict[str, list[str]]) -> bool:
    """A reference: some task reaches itself by following links (depth-first from every task)."""
    def reaches(start: str, goal: str, seen: set) -> bool:
        for nxt in edges[start]:
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False
    return any(reaches(name, name, set()) for name in edges)


@st.composite
def link_graphs(draw) -> dict[str, list[str]]:
    names = [f"t{i}" for i in range(draw(st.integers(2, 6)))]
    return {name: draw(st.lists(st.sampled_from([n for n in names if n != name]), unique=True, max_size=3))
            for name in names}


@settings(max_examples=200, deadline=None)
@given(link_graphs())
def test_cycle_detection_and_build_order_over_random_link_graphs(edges):
    links = {name: [(f"inputs[{i}]", types.SimpleNamespace(task=t, product=False, stop_gradient=False))
                    for i, t in enumerate(targets)] for name, targets in edges.items()}
    kinds = {name: types.SimpleNamespace(supports_product=False, type="x") for name in edges}
    if _has_cycle(edges):
        with pytest.raises(ValueError, match="the task links form a cycle") as error:
            check_links(links, kinds)
        key, _, chain = str(error.value).partition(": the task links form a cycle: ")
        cycle = chain.removesuffix(" (each reads the next)").split(" -> ")
        assert cycle[0] == cycle[-1] and key.startswith(f"tasks.{cycle[0]}.inputs[")
        assert all(b in edges[a] for a, b in zip(cycle, cycle[1:], strict=False))  # every step is a real link
    else:
        check_links(links, kinds)
        tasks = {name: types.SimpleNamespace(links=[{"task": t} for t in targets]) for name, targets in edges.items()}
        order = link_order(tasks)
        assert sorted(order) == sorted(edges)
        assert all(order.index(t) < order.index(name) for name, targets in edges.items() for t in targets)
