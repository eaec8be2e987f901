"""TextEncoder: word alignment, windows over long documents, pooling, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY_BACKBONE

from mtl.config import BackboneConfig
from mtl.data import split_words
from mtl.model import TextEncoder, load_backbone


@pytest.fixture(scope="module")
def tiny() -> tuple:
    keras.utils.set_random_seed(0)
    return load_backbone(BackboneConfig(**TINY_BACKBONE))


def long_document(words: int = 700) -> str:
    """A text far longer than 512 word pieces (each 'reviewNNN' is several pieces)."""
    return " ".join(f"review{i} says the dress fits well" if i % 5 == 0 else "fabric" for i in range(words))


def test_one_vector_per_white_space_word(tiny):
    encoder = TextEncoder(*tiny, max_length=32)
    texts = ["John lives in New York.", "Montréal café", ""]
    pooled, words, mask = (t.numpy() for t in encoder(tf.constant(texts)))
    assert pooled.shape == (3, 16)
    assert words.shape == (3, 5, 16)
    np.testing.assert_array_equal(mask.sum(1), [len(split_words(t)) for t in texts])
    assert np.all(words[1, 2:] == 0) and np.all(words[0, :5] != 0)


def test_windows_read_a_document_longer_than_512_pieces_whole(tiny):
    backbone, tokenizer = tiny
    text = long_document()
    pieces = sum(len(p) for p in tokenizer.tokenize(split_words(text)))  # eager: lists of ids
    assert pieces > 512
    n_words = len(split_words(text))
    _, _, truncated = TextEncoder(backbone, tokenizer, max_length=64)(tf.constant([text]))
    _, words, whole = TextEncoder(backbone, tokenizer, max_length=64, stride=48)(tf.constant([text]))
    assert 0 < truncated.numpy().sum() < 64
    assert whole.numpy().sum() == n_words
    assert np.all(np.abs(words.numpy()[0]).sum(-1) > 0)


def test_a_short_text_pools_the_same_with_or_without_windows(tiny):
    plain = TextEncoder(*tiny, max_length=64)(tf.constant(["a short review"]))[0]
    windowed = TextEncoder(*tiny, max_length=64, stride=16)(tf.constant(["a short review"]))[0]
    np.testing.assert_allclose(plain.numpy(), windowed.numpy(), atol=1e-6)


def test_saved_and_loaded_with_the_model(tiny, tmp_path):
    text = keras.Input(shape=(), dtype="string", name="text")
    pooled, _, _ = TextEncoder(*tiny, max_length=32, stride=16, pooling="cls", name="text_encoder")(text)
    model = keras.Model(text, keras.layers.Dense(2, name="out")(pooled))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    batch = tf.constant(["Le café est très bon", "short"])
    np.testing.assert_allclose(loaded(batch).numpy(), model(batch).numpy(), atol=1e-6)
    assert loaded.get_layer("text_encoder").get_config()["stride"] == 16
