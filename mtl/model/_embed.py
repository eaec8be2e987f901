"""Sentence embeddings: fixed-length, L2-normalised vectors from a text backbone alone or a trained run's.

Mean pooling over each text's word pieces, ``[CLS]`` and ``[SEP]`` included, as sentence-transformers does,
so the default (all-MiniLM-L6-v2, 256 word pieces) reproduces its reference vectors.
Batches are formed from texts of similar length and trimmed to their longest text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mtl.errors import MtlError

DEFAULT_MAX_LENGTH = 256  # all-MiniLM-L6-v2's max_seq_length in sentence-transformers


class SentenceEmbedder:
    """``SentenceEmbedder.load(path_or_preset).embed(texts)`` -> ``[n, hidden]`` unit vectors (float32)."""

    def __init__(self, encoder: Any, batch_size: int = 32) -> None:
        import tensorflow as tf

        self.encoder = encoder
        self.batch_size = batch_size
        self._pooled = tf.function(lambda text: encoder(text, training=False)[0],
                                   input_signature=[tf.TensorSpec([None], tf.string)])

    @classmethod
    def load(cls, model: str | Path | None = None, max_length: int = DEFAULT_MAX_LENGTH,
             batch_size: int = 32) -> SentenceEmbedder:
        """From a run directory (its trained text encoder), or a backbone preset / directory (default MiniLM)."""
        from mtl.model._text import TextEncoder

        path = Path(str(model)) if model is not None else None
        if path is not None and (path / "model.keras").is_file():
            import keras

            import mtl.model  # noqa: F401  registers mtl's layers for loading

            trained = keras.saving.load_model(path / "model.keras", compile=False)
            encoders = [layer for layer in trained.layers if isinstance(layer, TextEncoder)]
            if not encoders:
                raise MtlError(f"the model in {path} has no text input", where="--model")
            return cls(encoders[0], batch_size)
        from mtl.config import BackboneConfig
        from mtl.model._backbones import load_backbone

        backbone, tokenizer = load_backbone(BackboneConfig(preset=str(model) if model else "all-MiniLM-L6-v2"))
        return cls(TextEncoder(backbone, tokenizer, max_length=max_length, pooling="mean"), batch_size)

    def embed(self, texts: list[str]) -> np.ndarray:
        """One unit vector per text, in the order given."""
        import tensorflow as tf

        texts = ["" if t is None else str(t) for t in texts]
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), self.encoder.hidden_dim), dtype="float32")
        for start in range(0, len(texts), self.batch_size):
            rows = order[start:start + self.batch_size]
            vectors = self._pooled(tf.constant([texts[i] for i in rows])).numpy()
            out[rows] = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return out
