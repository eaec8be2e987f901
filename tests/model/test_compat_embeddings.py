"""MiniLM embeddings of sentences with compatibility characters (em dash, ellipsis, ½, ™, ﬁ, full-width letters, ß,
a final Σ, no-break and zero-width spaces) against reference vectors made once with sentence-transformers
(``make_compat_reference.py`` beside this file). keras-hub's own tokenizer got 0.38 to 0.88 on these."""

import json
from pathlib import Path

import numpy as np
import pytest

from mtl.model import ReferenceBertTokenizer, SentenceEmbedder

REFERENCE = json.loads((Path(__file__).with_name("minilm_compat_reference.json")).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def embedder() -> SentenceEmbedder:
    return SentenceEmbedder.load()


def test_the_default_backbone_tokenises_as_the_reference(embedder):
    tokenizer = embedder.encoder.tokenizer
    assert isinstance(tokenizer, ReferenceBertTokenizer)
    assert (tokenizer.reference_lowercase, tokenizer.reference_strip_accents) == (True, True)
    ids = embedder.encoder.token_ids(REFERENCE["sentences"]).to_list()
    assert ids == REFERENCE["token_ids"]


def test_compatibility_characters_embed_as_the_reference(embedder):
    vectors = embedder.embed(REFERENCE["sentences"])
    reference = np.asarray(REFERENCE["embeddings"], dtype="float32")
    cosines = (vectors * reference).sum(1) / np.linalg.norm(reference, axis=1)
    assert "—" in REFERENCE["sentences"][0] and "…" in REFERENCE["sentences"][0]
    assert cosines.min() >= 0.9999, dict(zip(REFERENCE["sentences"], cosines.round(6), strict=True))
