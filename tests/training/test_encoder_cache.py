"""The frozen-encoder cache (issue 10): the same training as without it, keyed by encoder and text, spilled to
disk past its memory bound, and a cache directory that cannot be written is one line naming the key."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import TINY_BACKBONE, text_config, write_jsonl, write_yaml

import mtl
from mtl.cli import main
from mtl.config import BackboneConfig, config_from_dict
from mtl.model import TextEncoder, build_encoding_cache, encoder_fingerprint, load_backbone

TEXTS = np.array(["show me flights from boston to denver", "cheapest fare to dallas", "", "what airlines fly",
                  "ground transportation in atlanta please"], dtype=object)


def _atis_slice(atis_frame: pd.DataFrame, train: int = 160, test: int = 40) -> pd.DataFrame:
    common = atis_frame["intent"].isin(["atis_flight", "atis_airfare", "atis_ground_service", "atis_airline"])
    return pd.concat([atis_frame[common & (atis_frame["split"] == "train")].head(train),
                      atis_frame[common & (atis_frame["split"] == "test")].head(test)], ignore_index=True)


def _encoder(seed: int = 0, max_length: int = 16) -> TextEncoder:
    tf.keras.utils.set_random_seed(seed)
    backbone, tokenizer = load_backbone(BackboneConfig(**TINY_BACKBONE))
    backbone.trainable = False
    return TextEncoder(backbone, tokenizer, max_length=max_length)


def _parts(directory: Path) -> list[Path]:
    return sorted(directory.glob("*/part-*"))


def test_cached_training_gives_the_uncached_metrics(tmp_path: Path, atis_frame: pd.DataFrame) -> None:
    data = write_jsonl(tmp_path / "atis.jsonl", _atis_slice(atis_frame))
    metrics = {}
    for cache in (True, False):
        raw = text_config(str(data), model__backbone__trainable=False, model__backbone__cache=cache,
                          training__epochs=1)
        metrics[cache] = mtl.train(config_from_dict(raw), tmp_path / f"run-{cache}").metrics
    assert _parts(tmp_path / "run-True" / "encoder_cache")  # intent (pooled) and slots (per-word states) cached
    assert not (tmp_path / "run-False" / "encoder_cache").exists()
    for task, values in metrics[False]["test"].items():
        for name, value in values.items():
            assert metrics[True]["test"][task][name] == pytest.approx(value, abs=1e-4), (task, name)


def test_cache_is_keyed_by_encoder_and_text(tmp_path: Path) -> None:
    encoder = _encoder()
    build_encoding_cache(encoder, [TEXTS], tmp_path, words=False, memory_mb=64)
    assert len(_parts(tmp_path)) == 1
    build_encoding_cache(_encoder(), [TEXTS[:3]], tmp_path, words=False, memory_mb=64)  # same weights: all read
    assert len(_parts(tmp_path)) == 1
    build_encoding_cache(encoder, [np.array(["a text never seen"], dtype=object), TEXTS], tmp_path, False, 64)
    assert sorted(len(np.load(part / "keys.npy")) for part in _parts(tmp_path)) == [1, 5]  # only the new text
    longer = _encoder(max_length=24)
    assert len({encoder_fingerprint(e) for e in (encoder, longer, _encoder(seed=1))}) == 3  # other weights too
    build_encoding_cache(longer, [TEXTS], tmp_path, words=False, memory_mb=64)
    assert len({part.parent for part in _parts(tmp_path)}) == 2  # a folder per encoder: none reads another's


def test_cache_lookup_equals_the_encoder_in_memory_and_spilled_to_disk(tmp_path: Path) -> None:
    encoder = _encoder()
    batch = tf.constant(TEXTS[[4, 0, 2]].astype(str))
    expected = [x.numpy() for x in encoder.encode(batch)]
    for memory_mb in (64, 0):
        cache = build_encoding_cache(encoder, [TEXTS], tmp_path, words=True, memory_mb=memory_mb)
        assert cache.in_memory == (memory_mb > 0)
        outputs = cache.lookup(batch, compute=lambda: pytest.fail("every text is cached"))
        for got, want in zip(outputs, expected, strict=True):
            np.testing.assert_allclose(got.numpy(), want, atol=1e-5)
    encoder.attach_cache(cache)
    unseen = tf.constant(["a text never seen", TEXTS[0]])  # a miss: the whole batch is encoded by the backbone
    np.testing.assert_allclose(encoder(unseen)[0].numpy(), encoder.encode(unseen)[0].numpy(), atol=1e-6)
    encoder.attach_cache(None)


def test_cache_dir_that_cannot_be_written_is_one_line(tmp_path: Path, atis_frame: pd.DataFrame,
                                                      capsys: pytest.CaptureFixture) -> None:
    data = write_jsonl(tmp_path / "atis.jsonl", _atis_slice(atis_frame, 40, 10))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    config = write_yaml(tmp_path / "c.yaml", text_config(str(data), model__backbone__trainable=False,
                                                          model__backbone__cache_dir=str(blocker / "cache")))
    assert main(["train", "--config", str(config), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: model.backbone.cache_dir: ") and "is not a directory" in err[-1], err
    assert not (tmp_path / "run").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "atis.jsonl", "c.yaml"]
