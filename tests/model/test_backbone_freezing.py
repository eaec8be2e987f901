"""Which backbone layers train, and that frozen ones run in inference mode (no dropout) while the rest trains."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl.config import BackboneConfig
from mtl.errors import MtlError
from mtl.model import TextEncoder, load_backbone, set_trainable, split_at_block, unused_layers

ARCHITECTURE = {"num_layers": 3, "num_heads": 2, "hidden_dim": 16, "intermediate_dim": 32}
TEXTS = tf.constant(["a lovely summer dress", "the fabric is thin and the hem too long", "fits"])


def encoder(setting) -> TextEncoder:
    keras.utils.set_random_seed(0)
    backbone, tokenizer = load_backbone(BackboneConfig(architecture=ARCHITECTURE, trainable=setting))
    assert backbone.dropout > 0
    set_trainable(backbone, setting)
    return TextEncoder(backbone, tokenizer, max_length=32, name="text_encoder")


def record_training_flags(layers: dict) -> dict:
    """Wrap each layer's ``call`` to record the ``training`` value it is given."""
    seen = {}
    for name, layer in layers.items():
        def call(*args, _call=layer.call, _name=name, **kwargs):
            seen[_name] = kwargs.get("training")
            return _call(*args, **kwargs)
        layer.call = call
    return seen


@pytest.mark.parametrize(("setting", "deterministic"), [(False, True), (True, False), ({"last_n_layers": 0}, True),
                                                        ({"last_n_layers": 1}, False)])
def test_training_mode_features_are_deterministic_only_when_nothing_trains(setting, deterministic):
    text_encoder = encoder(setting)
    first = [t.numpy() for t in text_encoder(TEXTS, training=True)]
    second = [t.numpy() for t in text_encoder(TEXTS, training=True)]
    same = all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert same == deterministic
    inference = [t.numpy() for t in text_encoder(TEXTS, training=False)]
    assert all(np.array_equal(a, b) for a, b in zip(first, inference, strict=True)) == deterministic


def test_a_frozen_backbone_stays_put_while_the_head_trains():
    text_encoder = encoder(False)
    text = keras.Input(shape=(), dtype="string")
    model = keras.Model(text, keras.layers.Dense(1, name="head")(text_encoder(text)[0]))
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    backbone_before = [w.numpy().copy() for w in text_encoder.backbone.weights]
    head_before = model.get_layer("head").kernel.numpy().copy()
    model.fit(TEXTS, np.array([1.0, -1.0, 0.5]), epochs=2, batch_size=3, verbose=0)
    assert not text_encoder.trainable_weights
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(backbone_before, text_encoder.backbone.weights,
                                                           strict=True))
    assert not np.array_equal(head_before, model.get_layer("head").kernel.numpy())


def test_last_n_layers_trains_the_top_blocks_and_runs_the_rest_in_inference_mode():
    text_encoder = encoder({"last_n_layers": 1})
    backbone = text_encoder.backbone
    blocks = backbone.transformer_layers
    trained = {id(w) for w in text_encoder.trainable_weights}
    assert trained == {id(w) for w in blocks[2].trainable_weights}
    seen = record_training_flags({"embeddings_dropout": backbone.embeddings_dropout,
                                  **{f"block_{i}": block for i, block in enumerate(blocks)}})
    text_encoder(TEXTS, training=True)
    assert seen == {"embeddings_dropout": False, "block_0": False, "block_1": False, "block_2": True}
    text_encoder(TEXTS, training=False)
    assert not any(seen.values())


def test_last_n_layers_equal_to_the_depth_freezes_only_the_embeddings():
    text_encoder = encoder({"last_n_layers": 3})
    backbone = text_encoder.backbone
    assert {id(w) for w in text_encoder.trainable_weights} == {
        id(w) for block in backbone.transformer_layers for w in block.trainable_weights}
    seen = record_training_flags({"embeddings_dropout": backbone.embeddings_dropout,
                                  "block_0": backbone.transformer_layers[0]})
    text_encoder(TEXTS, training=True)
    assert seen == {"embeddings_dropout": False, "block_0": True}


def test_the_split_backbone_computes_what_the_whole_one_does():
    backbone, _ = load_backbone(BackboneConfig(architecture=ARCHITECTURE))
    inputs = {"token_ids": tf.constant([[101, 2023, 3105, 102, 0]]), "padding_mask": tf.constant([[1, 1, 1, 1, 0]]),
              "segment_ids": tf.zeros((1, 5), "int32")}
    whole = backbone(inputs, training=False)["sequence_output"].numpy()
    for index in range(3):
        lower, upper = split_at_block(backbone, index)
        hidden = lower(inputs, training=False)
        split = upper([hidden, *(inputs[name] for name in backbone.input)], training=False).numpy()
        np.testing.assert_allclose(split, whole, atol=1e-6)


@pytest.mark.parametrize("setting", [True, False, {"last_n_layers": 2}])
def test_the_pooler_never_trains(setting):
    text_encoder = encoder(setting)
    backbone = text_encoder.backbone
    assert unused_layers(backbone) == [backbone.pooled_dense]
    assert not backbone.pooled_dense.trainable
    assert not {id(w) for w in backbone.pooled_dense.weights} & {id(w) for w in text_encoder.trainable_weights}


def test_partial_freezing_survives_saving(tmp_path):
    text_encoder = encoder({"last_n_layers": 2})
    text = keras.Input(shape=(), dtype="string", name="text")
    model = keras.Model(text, keras.layers.Dense(1, name="head")(text_encoder(text)[0]))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras").get_layer("text_encoder")
    assert loaded.get_config()["last_n_layers"] == 2 == text_encoder.get_config()["last_n_layers"]
    assert [b.trainable for b in loaded.backbone.transformer_layers] == [False, True, True]
    assert len(loaded.trainable_weights) == len(text_encoder.trainable_weights)
    assert not loaded.backbone.pooled_dense.trainable
    frozen = encoder(False)
    assert frozen.get_config()["last_n_layers"] is None and not frozen.get_config()["backbone"]["config"]["trainable"]


def test_last_n_layers_needs_transformer_layers():
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4), keras.layers.Dense(4)])
    with pytest.raises(MtlError, match="needs a backbone with transformer_layers") as error:
        set_trainable(plain, {"last_n_layers": 1})
    assert "\n" not in str(error.value)
    backbone, _ = load_backbone(BackboneConfig(architecture=ARCHITECTURE))
    with pytest.raises(MtlError, match="last_n_layers 4 exceeds the backbone's 3 transformer layers"):
        set_trainable(backbone, {"last_n_layers": 4})
