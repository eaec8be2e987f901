"""The frozen-encoder cache: a frozen text encoder's outputs computed once per distinct text and reused.

A frozen backbone (``model.backbone.trainable: false``) gives the same pooled vector and per-word states for a
text in every epoch, so training reads them from a cache instead of running the backbone on every batch: only the
trunk and heads train, and the model still takes raw strings (the cache is a lookup in front of the encoder,
detached before the model is saved or exported; a text not in the cache is encoded as before).

On disk (``model.backbone.cache_dir``) the encodings live under one folder per encoder fingerprint (the backbone's
class, configuration and weights, the tokenizer's configuration and vocabulary, ``max_length``, ``stride``,
``pooling``), so a changed backbone or tokenizer setting never reads another's vectors; texts are keyed by their
SHA-1. Each batch of newly encoded texts is one ``part-*`` folder of ``.npy`` files, renamed into place when complete,
so runs sharing a folder (a sweep) add to it without locks and each text is embedded once.

In memory a run's encodings are held as tensors up to ``model.backbone.cache_memory_mb``; past that they are read
from the cache folder's files, memory-mapped, through ``tf.numpy_function``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

log = logging.getLogger("mtl")

FORMAT = 1
ENCODE_BATCH = 64  # texts per backbone call when filling the cache (sorted by length, so little padding)
PART_TEXTS = 4096  # texts per part folder: what is held in memory while encoding


def text_keys(texts: np.ndarray) -> np.ndarray:
    """Each text's key: the SHA-1 of its UTF-8 bytes (``|S20``)."""
    return np.asarray([hashlib.sha1(str(t).encode("utf-8", "surrogatepass")).digest() for t in texts], dtype="S20")


def encoder_fingerprint(encoder: Any) -> str:
    """What decides a ``TextEncoder``'s outputs, as a hex digest: backbone class, configuration and weights, tokenizer
    configuration and vocabulary, and the encoder's window and pooling settings."""
    digest = hashlib.sha256()
    settings = {
        "format": FORMAT,
        "backbone": type(encoder.backbone).__name__,
        "backbone_config": _unnamed(encoder.backbone.get_config()),
        "tokenizer": type(encoder.tokenizer).__name__,
        "tokenizer_config": _unnamed(encoder.tokenizer.get_config()),
        "max_length": encoder.max_length,
        "stride": encoder.stride,
        "pooling": encoder.pooling,
    }
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    vocabulary = encoder.tokenizer.get_vocabulary() if hasattr(encoder.tokenizer, "get_vocabulary") else []
    digest.update("\n".join(map(str, vocabulary)).encode("utf-8", "surrogatepass"))
    for weight in encoder.backbone.weights:  # in creation order; paths hold session-dependent layer names
        value = np.ascontiguousarray(weight.numpy())
        digest.update(f"{value.dtype}{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _unnamed(config: dict) -> dict:
    """A layer's config without its name (Keras numbers the names of a session's layers: ``bert_backbone_1``)."""
    return {key: value for key, value in config.items() if key != "name"}


@dataclass
class _Part:
    """One ``part-*`` folder, memory-mapped: ``keys``, ``pooled`` and, if it has them, the per-word states."""

    keys: np.ndarray
    pooled: np.ndarray
    word_splits: np.ndarray | None = None
    word_states: np.ndarray | None = None
    word_mask: np.ndarray | None = None

    @staticmethod
    def load(folder: Path) -> _Part:
        arrays = {f.stem: np.load(f, mmap_mode="r") for f in folder.glob("*.npy")}
        return _Part(arrays["keys"], arrays["pooled"], arrays.get("word_splits"), arrays.get("word_states"),
                     arrays.get("word_mask"))

    @property
    def has_words(self) -> bool:
        return self.word_splits is not None


class EncodingStore:
    """The cache folder of one encoder fingerprint: which texts it holds, and adding new ones."""

    def __init__(self, directory: Path, fingerprint: str, description: dict | None = None) -> None:
        self.folder = Path(directory) / fingerprint[:32]
        self.description = description or {}

    def parts(self, words: bool) -> list[_Part]:
        """The complete parts (with per-word states, if ``words``)."""
        if not self.folder.is_dir():
            return []
        parts = [_Part.load(folder) for folder in sorted(self.folder.glob("part-*")) if folder.is_dir()]
        return [part for part in parts if part.has_words or not words]

    def add(self, keys: np.ndarray, pooled: np.ndarray, words: tuple[list, list] | None) -> _Part:
        """Write one part (atomically: a hidden folder renamed into place) and return it, memory-mapped."""
        self.folder.mkdir(parents=True, exist_ok=True)
        about = self.folder / "encoder.json"
        if not about.exists():
            about.write_text(json.dumps(self.description, indent=2, default=str))
        name = f"part-{uuid.uuid4().hex}"
        tmp = self.folder / f".{name}.tmp"
        try:
            tmp.mkdir()
            np.save(tmp / "keys.npy", keys)
            np.save(tmp / "pooled.npy", pooled.astype("float32"))
            if words is not None:
                states, masks = words
                lengths = np.asarray([len(m) for m in masks], dtype="int64")
                np.save(tmp / "word_splits.npy", np.concatenate([[0], np.cumsum(lengths)]).astype("int64"))
                hidden = pooled.shape[1]
                np.save(tmp / "word_states.npy",
                        np.concatenate(states).astype("float32") if states else np.zeros((0, hidden), "float32"))
                np.save(tmp / "word_mask.npy",
                        np.concatenate(masks).astype("float32") if masks else np.zeros(0, "float32"))
            os.replace(tmp, self.folder / name)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return _Part.load(self.folder / name)


class EncodingCache:
    """A run's encodings of its distinct texts, looked up in the graph by the raw string.

    ``lookup(text, compute)`` gives the cached ``(pooled, word_states, word_mask)`` of a batch when every text of it
    is cached, else ``compute()``. Without per-word states (no word-level task) the word outputs are empty.
    """

    def __init__(self, texts: np.ndarray, parts: list[_Part], where: tuple[np.ndarray, np.ndarray], hidden: int,
                 words: bool, memory_bytes: float) -> None:
        self.hidden = hidden
        self.words = words
        self.size_bytes = _size(parts, where, hidden, words)
        self.in_memory = self.size_bytes <= memory_bytes
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(np.asarray(texts, dtype=object).astype(str), tf.string),
                                                tf.range(len(texts), dtype=tf.int64)), default_value=-1)
        self._parts, self._part_of, self._row_of = parts, where[0], where[1]
        if self.in_memory:
            pooled, splits, states, mask = self._gather_numpy(np.arange(len(texts)), ragged=True)
            self.pooled = tf.constant(pooled)
            if words:
                self.word_splits, self.word_states, self.word_mask = (tf.constant(splits), tf.constant(states),
                                                                      tf.constant(mask))

    def _gather_numpy(self, ids: np.ndarray, ragged: bool = False) -> tuple[np.ndarray, ...]:
        """Rows ``ids`` from the parts: ``(pooled, word_splits, word_states, word_mask)`` (``ragged``) or
        ``(pooled, word_states [n, words, hidden], word_mask [n, words])`` padded with zeros."""
        ids = np.asarray(ids, dtype="int64")
        pooled = np.zeros((len(ids), self.hidden), "float32")
        spans = []
        for i, index in enumerate(ids):
            part = self._parts[self._part_of[index]]
            row = self._row_of[index]
            pooled[i] = part.pooled[row]
            if self.words:
                spans.append((part, int(part.word_splits[row]), int(part.word_splits[row + 1])))
        if not self.words:
            return (pooled, np.zeros(1, "int64"), np.zeros((0, self.hidden), "float32"), np.zeros(0, "float32")) \
                if ragged else (pooled, np.zeros((len(ids), 0, self.hidden), "float32"),
                                np.zeros((len(ids), 0), "float32"))
        lengths = np.asarray([end - start for _, start, end in spans], dtype="int64")
        if ragged:
            states = [part.word_states[start:end] for part, start, end in spans]
            masks = [part.word_mask[start:end] for part, start, end in spans]
            return (pooled, np.concatenate([[0], np.cumsum(lengths)]).astype("int64"),
                    np.concatenate(states).astype("float32") if states else np.zeros((0, self.hidden), "float32"),
                    np.concatenate(masks).astype("float32") if masks else np.zeros(0, "float32"))
        width = int(lengths.max()) if len(lengths) else 0
        states = np.zeros((len(ids), width, self.hidden), "float32")
        mask = np.zeros((len(ids), width), "float32")
        for i, (part, start, end) in enumerate(spans):
            states[i, :end - start] = part.word_states[start:end]
            mask[i, :end - start] = part.word_mask[start:end]
        return pooled, states, mask

    def lookup(self, text: Any, compute: Any) -> tuple[Any, Any, Any]:
        ids = self.table.lookup(tf.reshape(text, [-1]))
        outputs = tf.cond(tf.reduce_all(ids >= 0), lambda: self._gather(ids), compute)
        return tuple(tf.stop_gradient(x) for x in outputs)  # a frozen encoder: nothing behind it trains

    def _gather(self, ids: Any) -> tuple[Any, Any, Any]:
        batch = tf.shape(ids)[0]
        if not self.in_memory:
            pooled, states, mask = tf.numpy_function(lambda i: self._gather_numpy(i), [ids],
                                                     [tf.float32, tf.float32, tf.float32], stateful=False)
            pooled.set_shape([None, self.hidden])
            states.set_shape([None, None, self.hidden])
            mask.set_shape([None, None])
            return pooled, states, mask
        pooled = tf.gather(self.pooled, ids)
        if not self.words:
            return pooled, tf.zeros([batch, 0, self.hidden]), tf.zeros([batch, 0])
        states = tf.RaggedTensor.from_row_splits(self.word_states, self.word_splits, validate=False)
        mask = tf.RaggedTensor.from_row_splits(self.word_mask, self.word_splits, validate=False)
        states = tf.gather(states, ids).to_tensor(0.0)
        states.set_shape([None, None, self.hidden])
        return pooled, states, tf.gather(mask, ids).to_tensor(0.0)


def _size(parts: list[_Part], where: tuple[np.ndarray, np.ndarray], hidden: int, words: bool) -> int:
    """Bytes a run's encodings take in memory."""
    size = len(where[0]) * hidden * 4
    if words:
        for index, part in enumerate(parts):
            rows = where[1][where[0] == index]
            size += int((part.word_splits[rows + 1] - part.word_splits[rows]).sum()) * (hidden + 1) * 4
    return size


def build_cache(encoder: Any, texts: Iterable[np.ndarray], directory: Path, words: bool,
                memory_mb: float) -> EncodingCache:
    """The ``EncodingCache`` of every distinct text in ``texts`` (arrays of strings): the ones ``directory`` holds
    for this encoder are read, the others encoded with it (frozen, inference mode) and added."""
    distinct = np.asarray(list(dict.fromkeys(str(t) for values in texts for t in values)), dtype=object)
    keys = text_keys(distinct)
    fingerprint = encoder_fingerprint(encoder)
    store = EncodingStore(directory, fingerprint, {
        "fingerprint": fingerprint, "backbone": type(encoder.backbone).__name__, "max_length": encoder.max_length,
        "stride": encoder.stride, "pooling": encoder.pooling, "format": FORMAT})
    parts = store.parts(words)
    found: dict[bytes, tuple[int, int]] = {}
    for p, part in enumerate(parts):
        for row, key in enumerate(np.asarray(part.keys)):
            found.setdefault(bytes(key), (p, row))
    missing = [i for i, key in enumerate(keys) if bytes(key) not in found]
    log.info("frozen-encoder cache %s: %d distinct texts, %d cached, %d to encode", store.folder, len(distinct),
             len(distinct) - len(missing), len(missing))
    if missing:
        encode = _encode_function(encoder)
        order = sorted(missing, key=lambda i: len(distinct[i]))
        for start in range(0, len(order), PART_TEXTS):
            chunk = order[start:start + PART_TEXTS]
            pooled, states, masks = _encode(encode, distinct[chunk], encoder.hidden_dim, words)
            part = store.add(keys[chunk], pooled, (states, masks) if words else None)
            parts.append(part)
            for row, i in enumerate(chunk):
                found[bytes(keys[i])] = (len(parts) - 1, row)
    where = np.asarray([found[bytes(key)] for key in keys], dtype="int64").reshape(-1, 2)
    cache = EncodingCache(distinct, parts, (where[:, 0], where[:, 1]), encoder.hidden_dim, words,
                          memory_mb * 2 ** 20)
    log.info("frozen-encoder cache: %.1f MB of encodings, %s", cache.size_bytes / 2 ** 20,
             "in memory" if cache.in_memory else f"read from {store.folder} (over model.backbone.cache_memory_mb)")
    return cache


_ENCODE_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _encode_function(encoder: Any) -> Any:
    """``encoder.encode`` in inference mode as a ``tf.function``, traced once per encoder (tracing the in-graph
    tokenizer takes seconds)."""
    if encoder not in _ENCODE_FUNCTIONS:
        _ENCODE_FUNCTIONS[encoder] = tf.function(lambda text: encoder.encode(text, training=False),
                                                 input_signature=[tf.TensorSpec([None], tf.string)])
    return _ENCODE_FUNCTIONS[encoder]


def _encode(encode: Any, texts: np.ndarray, hidden: int, words: bool) -> tuple[np.ndarray, list, list]:
    """``(pooled [n, hidden], per-word states per text, per-word masks per text)`` of ``texts``."""
    pooled, states, masks = [], [], []
    for start in range(0, len(texts), ENCODE_BATCH):
        batch = tf.constant(texts[start:start + ENCODE_BATCH].astype(str), tf.string)
        vectors, word_states, word_mask = encode(batch)
        pooled.append(vectors.numpy())
        if words:
            counts = tf.strings.split(batch).row_lengths().numpy()
            word_states, word_mask = word_states.numpy(), word_mask.numpy()
            for i, count in enumerate(counts):
                states.append(word_states[i, :count])
                masks.append(word_mask[i, :count])
    return (np.concatenate(pooled) if pooled else np.zeros((0, hidden), "float32")), states, masks
