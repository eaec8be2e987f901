"""``TextEncoder``: raw strings in, a pooled sentence vector and one vector per word out.

The tokenizer runs inside the graph, so the model (and its SavedModel) takes raw text. A text is split
on white space into words (the same split as ``mtl.data._text.split_words``), each word into word pieces,
and the pieces are cut into windows of ``max_length`` tokens (``[CLS] ... [SEP]``). With ``stride`` unset a
text is truncated to its first window; with ``stride`` set, windows start every ``stride`` pieces until the
text is covered, so a long document is read whole. Every batch is trimmed to its longest window, never
padded to ``max_length``.

- ``pooled`` [batch, hidden]: per window the mean over its tokens, ``[CLS]`` and ``[SEP]`` included (what
  sentence-transformers computes) or the ``[CLS]`` vector; a document averages its windows.
- ``words`` [batch, words, hidden]: each word's first word piece (averaged over the windows that hold it),
  so a tagging head labels words, never pieces. ``word_mask`` is 0 for padding and for words that no window
  reached.

Frozen layers run in inference mode (no dropout) while the rest of the model trains: a frozen backbone
(``trainable: false``) is called with ``training=False``; with only the last k transformer blocks training
(``{last_n_layers: k}``), the blocks below them and the embeddings run as a frozen part of their own. The
backbone's pooler is never run (mtl pools the sequence itself).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf


def split_into_pieces(tokenize: Any, text: Any) -> tuple[Any, Any]:
    """``(words [B, W] ragged, pieces [N words, P] ragged int32)``: ``text`` split on white space, each word into
    word pieces by ``tokenize`` (a tokenizer's ``tokenize`` run as a ``tf.function``)."""
    words = tf.strings.split(tf.reshape(text, [-1]))
    pieces = tokenize(words.flat_values)
    if not isinstance(pieces, tf.RaggedTensor):
        pieces = tf.RaggedTensor.from_tensor(pieces)
    return words, tf.cast(pieces, tf.int32)


def word_piece_lengths(tokenizer: Any, texts: Any, batch_size: int = 4096) -> np.ndarray:
    """Each text's length in tokens as ``TextEncoder`` reads it before windowing: its word pieces plus ``[CLS]``
    and ``[SEP]`` (what ``data.max_length`` is compared with)."""
    tokenize = tf.function(tokenizer.tokenize, autograph=False)
    texts = np.asarray(texts, dtype=object).reshape(-1)
    lengths = []
    for start in range(0, len(texts), batch_size):
        words, pieces = split_into_pieces(tokenize, tf.constant(texts[start:start + batch_size].astype(str)))
        per_word = tf.RaggedTensor.from_row_splits(pieces.row_lengths(), tf.cast(words.row_splits, tf.int64))
        lengths.append(tf.reduce_sum(per_word, axis=1).numpy() + 2)
    return np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)


@keras.saving.register_keras_serializable("mtl")
class TextEncoder(keras.layers.Layer):
    """A keras-hub backbone and its tokenizer behind one raw-string input."""

    def __init__(self, backbone: Any, tokenizer: Any, max_length: int = 256, stride: int | None = None,
                 pooling: str = "mean", trim: bool = True, last_n_layers: int | None = None, **kwargs: Any) -> None:
        """``last_n_layers``: only the last n transformer blocks train (a saved model's backbone does not keep
        per-layer flags, so they are set again from it); None reads it off the backbone (``set_trainable``)."""
        super().__init__(**kwargs)
        from mtl.model import (
            _backbones as backbones,  # registers keras-hub's classes and mtl's tokenizer for deserialisation
        )

        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        if isinstance(tokenizer, dict):
            tokenizer = keras.saving.deserialize_keras_object(tokenizer)
        if last_n_layers is not None:
            backbones.set_trainable(backbone, {"last_n_layers": last_n_layers})
        for layer in backbones.unused_layers(backbone):
            layer.trainable = False
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.stride = None if stride is None else int(stride)
        self.pooling = pooling
        self.trim = bool(trim)  # False pads every batch to max_length (only to measure what trimming saves)
        self.hidden_dim = int(backbone.hidden_dim)
        self._backbone_inputs = set(backbone.input) if isinstance(backbone.input, dict) else {"token_ids"}
        # keras-hub tokenizers run in Python (and return lists) when called eagerly; inside a tf.function they
        # run as TF Text ops and return ragged tensors, which is what the graph needs.
        self._tokenize = tf.function(tokenizer.tokenize, autograph=False)
        # Views of the backbone's graph (same layers and weights), built when first called; set without Keras'
        # attribute tracking so that the weights are saved once, under ``backbone``.
        object.__setattr__(self, "_backbone_views", {})

    def build(self, input_shape: Any = None) -> None:
        self.built = True  # the backbone comes built (from a preset or its config)

    # ------------------------------------------------------------------ tokens and windows
    def _pieces(self, text: Any) -> tuple[Any, Any]:
        """``(words [B, W] ragged, pieces [N words, P] ragged)``."""
        return split_into_pieces(self._tokenize, text)

    def _windows(self, words: Any, pieces: Any) -> dict[str, Any]:
        content = self.max_length - 2
        piece_counts = pieces.row_lengths()  # per word
        doc_lengths = tf.reduce_sum(tf.RaggedTensor.from_row_splits(piece_counts, words.row_splits), axis=1)
        batch = tf.shape(doc_lengths, out_type=tf.int64)[0]
        doc_start = tf.cumsum(doc_lengths, exclusive=True)
        if self.stride is None:
            n_windows = tf.ones_like(doc_lengths)
        else:
            extra = tf.maximum(doc_lengths - content, 0)
            n_windows = 1 + (extra + self.stride - 1) // self.stride
        window_doc = tf.repeat(tf.range(batch), n_windows)
        step = content if self.stride is None else self.stride
        window_start = tf.ragged.range(n_windows).flat_values * step
        window_len = tf.clip_by_value(tf.gather(doc_lengths, window_doc) - window_start, 0, content)
        positions = tf.ragged.range(window_len)  # within the window
        global_index = positions + tf.expand_dims(tf.gather(doc_start, window_doc) + window_start, 1)
        tokens = tf.gather(pieces.flat_values, global_index)
        n = tf.shape(window_len, out_type=tf.int64)[0]
        cls = tf.fill([n, 1], tf.cast(self.tokenizer.cls_token_id, tf.int32))
        sep = tf.fill([n, 1], tf.cast(self.tokenizer.sep_token_id, tf.int32))
        tokens = tf.concat([cls, tokens, sep], axis=1)
        shape = None if self.trim else [None, self.max_length]
        return {
            "token_ids": tokens.to_tensor(default_value=self.tokenizer.pad_token_id, shape=shape),
            "padding_mask": tf.ones_like(tokens).to_tensor(0, shape=shape),
            "window_doc": window_doc,
            "global_index": global_index,
            "batch": batch,
            "piece_counts": piece_counts,
            "total_pieces": tf.reduce_sum(doc_lengths),
        }

    def token_ids(self, text: Any) -> Any:
        """Each window's token ids, ``[CLS] ... [SEP]`` (ragged ``[windows, tokens]``): what the backbone reads."""
        words, pieces = self._pieces(text)
        windows = self._windows(words, pieces)
        return tf.RaggedTensor.from_tensor(windows["token_ids"], lengths=tf.reduce_sum(windows["padding_mask"], 1))

    # ------------------------------------------------------------------ forward
    def call(self, text: Any, training: bool = False) -> tuple[Any, Any, Any]:
        words, pieces = self._pieces(text)
        w = self._windows(words, pieces)
        inputs = {"token_ids": w["token_ids"], "padding_mask": w["padding_mask"]}
        if "segment_ids" in self._backbone_inputs:
            inputs["segment_ids"] = tf.zeros_like(w["token_ids"])
        sequence = tf.cast(self._sequence_output(inputs, training), "float32")
        mask = tf.cast(w["padding_mask"], "float32")[:, :, None]
        if self.pooling == "cls":
            window_vectors = sequence[:, 0]
        else:
            window_vectors = tf.reduce_sum(sequence * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)
        batch = w["batch"]
        pooled = tf.math.unsorted_segment_mean(window_vectors, w["window_doc"], batch)

        # Word states: every piece a window holds, averaged over windows, then each word's first piece.
        index = w["global_index"]
        piece_states = tf.RaggedTensor.from_tensor(sequence[:, 1:], lengths=index.row_lengths()).flat_values
        total = w["total_pieces"]
        states = tf.math.unsorted_segment_mean(piece_states, index.flat_values, total)
        covered = tf.math.unsorted_segment_sum(tf.ones_like(index.flat_values, tf.float32), index.flat_values,
                                               total) > 0
        counts = w["piece_counts"]
        first = tf.cumsum(counts, exclusive=True)
        safe_first = tf.minimum(first, tf.maximum(total - 1, 0))  # a word with no pieces points anywhere valid
        valid = (counts > 0) & tf.gather(covered, safe_first)
        word_states = tf.where(valid[:, None], tf.gather(states, safe_first), 0.0)
        word_states = tf.RaggedTensor.from_row_splits(word_states, words.row_splits).to_tensor(0.0)
        word_mask = tf.RaggedTensor.from_row_splits(tf.cast(valid, "float32"), words.row_splits).to_tensor(0.0)
        return pooled, word_states, word_mask

    def _sequence_output(self, inputs: dict[str, Any], training: bool) -> Any:
        """The backbone's ``sequence_output``, its frozen part in inference mode."""
        from mtl.model import _backbones as backbones

        views = self._backbone_views
        if "sequence" not in views:
            views["sequence"] = backbones.sequence_model(self.backbone)
        if views["sequence"] is None:  # not a functional keras-hub backbone: called whole
            out = self.backbone(inputs, training=bool(training) and self.backbone.trainable)
            return out["sequence_output"] if isinstance(out, dict) else out
        trained = backbones.trained_last_layers(self.backbone)
        if not training or not self.backbone.trainable or trained == 0:
            return views["sequence"](inputs, training=False)
        if trained is None:
            return views["sequence"](inputs, training=True)
        index = len(self.backbone.transformer_layers) - trained
        if index not in views:
            views[index] = backbones.split_at_block(self.backbone, index)
        lower, upper = views[index]
        return upper([lower(inputs, training=False), *(inputs[name] for name in self.backbone.input)], training=True)

    def compute_output_spec(self, text: Any, training: bool = False) -> tuple[Any, Any, Any]:
        return (
            keras.KerasTensor((None, self.hidden_dim), dtype="float32"),
            keras.KerasTensor((None, None, self.hidden_dim), dtype="float32"),
            keras.KerasTensor((None, None), dtype="float32"),
        )

    def get_config(self) -> dict:
        from mtl.model._backbones import trained_last_layers

        return {
            **super().get_config(),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "tokenizer": keras.saving.serialize_keras_object(self.tokenizer),
            "max_length": self.max_length,
            "stride": self.stride,
            "pooling": self.pooling,
            "trim": self.trim,
            "last_n_layers": trained_last_layers(self.backbone),
        }
