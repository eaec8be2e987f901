"""The loader runs the signature in a session (as TF Serving does); its outputs must equal the eager signature's."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tensorflow as tf

from mtl.errors import MtlError
from mtl.serving import load


def _eager(version_dir, tensors: dict) -> dict:  # noqa: ANN001
    signature = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    return {k: v.numpy() for k, v in signature(**{k: tf.constant(v) for k, v in tensors.items()}).items()}


def test_session_outputs_equal_the_eager_signature_and_specs_match(exported_model: dict) -> None:
    model = load(exported_model["version_dir"])
    frame = exported_model["test_frame"].head(64)
    tensors = model.to_tensors({c: frame[c].to_numpy() for c in frame.columns}, "test")
    expected = _eager(exported_model["version_dir"], tensors)
    got = model.runner(tensors)
    assert sorted(got) == sorted(expected) == sorted(model.outputs)
    for name, value in expected.items():
        assert got[name].dtype == value.dtype and got[name].shape == value.shape
        if value.dtype.kind == "f":
            np.testing.assert_allclose(got[name], value, rtol=0, atol=1e-6)
        else:
            assert (got[name] == value).all()
    eager_specs = tf.saved_model.load(str(exported_model["version_dir"])).signatures[
        "serving_default"].structured_input_signature[1]
    assert {n: (s.dtype, s.shape.as_list()) for n, s in model.input_specs.items()} == \
        {n: (s.dtype, s.shape.as_list()) for n, s in eager_specs.items()}


def test_the_session_answers_threads_at_once(exported_model: dict) -> None:
    model = load(exported_model["version_dir"])
    frame = exported_model["test_frame"].head(40)
    single = [model.predict({c: frame[c].to_numpy()[i:i + 1] for c in frame.columns}) for i in range(40)]
    with ThreadPoolExecutor(8) as pool:
        threaded = list(pool.map(lambda i: model.predict({c: frame[c].to_numpy()[i:i + 1] for c in frame.columns}),
                                 range(40)))
    for a, b in zip(single, threaded, strict=True):
        np.testing.assert_array_equal(a["income"], b["income"])


def test_a_savedmodel_without_serving_default_is_a_one_line_error(tmp_path) -> None:  # noqa: ANN001
    module = tf.Module()
    module.f = tf.function(lambda x: {"y": x * 2.0}, input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "1"), signatures={"other": module.f})
    with pytest.raises(MtlError, match="has no 'serving_default' signature"):
        load(tmp_path / "1")


def test_string_inputs_may_come_as_unicode_arrays_or_lists(exported_model: dict) -> None:
    model = load(exported_model["version_dir"])
    frame = exported_model["test_frame"].head(5)
    tensors = model.to_tensors({c: frame[c].to_numpy() for c in frame.columns}, "test")
    strings = [n for n, s in model.input_specs.items() if s.dtype == tf.string]
    assert strings
    expected = model.runner(tensors)
    for convert in (lambda a: np.array([str(v) for v in a]), lambda a: [str(v).encode() for v in a]):
        got = model.runner({n: convert(v) if n in strings else v for n, v in tensors.items()})
        np.testing.assert_array_equal(got["income"], expected["income"])


def test_loading_logs_no_restore_line_even_at_info_level(exported_model: dict,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="tensorflow"):
        load(exported_model["version_dir"])
    assert not [r for r in caplog.records if "Restoring parameters" in r.getMessage()]
