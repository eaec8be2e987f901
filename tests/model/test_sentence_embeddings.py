"""Sentence embeddings against reference vectors made once with sentence-transformers (see tests/fixtures)."""

import json

import numpy as np
import pytest
from conftest import ROOT, run_cli

from mtl.model import SentenceEmbedder

REFERENCE = json.loads((ROOT / "tests" / "fixtures" / "minilm_reference.json").read_text())


@pytest.fixture(scope="module")
def embedder() -> SentenceEmbedder:
    return SentenceEmbedder.load()


def test_minilm_matches_the_reference_implementation(embedder):
    vectors = embedder.embed(REFERENCE["sentences"])
    reference = np.asarray(REFERENCE["embeddings"], dtype="float32")
    cosines = (vectors * reference).sum(1) / np.linalg.norm(reference, axis=1)
    assert vectors.shape == reference.shape
    assert cosines.min() >= 0.9999, dict(zip(REFERENCE["sentences"], cosines.round(6), strict=True))


def test_order_and_batching_do_not_change_vectors(embedder):
    texts = REFERENCE["sentences"]
    one_by_one = np.stack([embedder.embed([t])[0] for t in texts[:3]])
    np.testing.assert_allclose(embedder.embed(texts)[:3], one_by_one, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(one_by_one, axis=1), 1.0, atol=1e-5)


def test_embed_command_writes_vectors(tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("A lovely dress.\nLe café est très bon.\n", encoding="utf-8")
    out = tmp_path / "vectors.npy"
    done = run_cli("embed", "--input", str(lines), "--output", str(out))
    assert done.returncode == 0, done.stderr
    vectors = np.load(out)
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(("args", "message"), [
    (["--input", "{tmp}/empty.txt", "--output", "{tmp}/v.npy"], "holds no lines"),
    (["--input", "{tmp}/lines.txt"], "--input needs --output"),
    (["--text", "hi", "--model", "{tmp}"], "is not a model: no config.json"),
])
def test_embed_bad_input(tmp_path, args, message):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "lines.txt").write_text("one\n")
    done = run_cli("embed", *[a.format(tmp=tmp_path) for a in args])
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "v.npy").exists()
