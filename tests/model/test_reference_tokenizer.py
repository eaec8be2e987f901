"""Token ids equal the reference tokenizer's (Hugging Face ``tokenizers``, BERT normalisation: clean-up, CJK,
accent stripping, lowercasing) for the real all-MiniLM-L6-v2 vocabulary, on a sweep of every Unicode punctuation,
symbol, mark and cased character, compatibility forms, white space and control characters, CJK and emoji.

The ids are read through ``TextEncoder.token_ids``: the white-space word split, the in-graph tokenizer and the
windows the backbone reads. One deliberate difference: ``\\v`` and ``\\f`` are word boundaries for mtl (its word
split is ``tf.strings.split``, the one ``mtl.data._text.split_words`` matches for tagging labels), while the
reference deletes them and joins their neighbours.
"""

import unicodedata

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY_BACKBONE
from tokenizers import BertWordPieceTokenizer

from mtl.config import BackboneConfig
from mtl.model import ReferenceBertTokenizer, TextEncoder, builtin_minilm_dir, load_backbone, reference_tokenizer

VOCAB = str(builtin_minilm_dir() / "vocab.txt")
CJK_BLOCKS = [(0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
              (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0x2CEB0, 0x2EBEF), (0x2F800, 0x2FA1F), (0x30000, 0x3134F)]
SEQUENCES = ["👨‍👩‍👧", "👍🏽", "🇯🇵", "1️⃣", "❤️", "é", "ǅ", "İ", "ΟΔΟΣ", "ΣΑΣ", "東京タワー", "서울", "ﬁﬂﬃ",
             "…", "½", "™", "Ｆｕｌｌ", "ß", "ẞ", "Å", "ﾊﾝｶｸ"]
LONG_WORDS = ["a" * 100, "a" * 101, "é" * 101, "x" + "é" * 99, "ab-" + "c" * 101 + "-d", "가" * 50, "가" * 51,
              "α" * 100, "α" * 101, "東" * 150, "ก" * 120, "ﬁ" * 60]


def swept_characters() -> list[str]:
    """Every P*, S*, M*, Z* and C* (but surrogates and unassigned) character, every cased letter, every character
    that NFKC changes, every 7th CJK ideograph."""
    chars = []
    for code in range(0x110000):
        c = chr(code)
        category = unicodedata.category(c)
        if category in ("Cs", "Cn"):
            continue
        if (category[0] in "PSMZC" or c.lower() != c or c.upper() != c
                or unicodedata.normalize("NFKC", c) != c):
            chars.append(c)
    chars += [chr(code) for start, end in CJK_BLOCKS for code in range(start, end + 1, 7)]
    return sorted(set(chars) - {"\x0b", "\x0c"}) + SEQUENCES


@pytest.fixture(scope="module")
def reference() -> BertWordPieceTokenizer:
    return BertWordPieceTokenizer(VOCAB, lowercase=True, strip_accents=True, clean_text=True,
                                  handle_chinese_chars=True)


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    keras.utils.set_random_seed(0)
    return TextEncoder(*load_backbone(BackboneConfig(**TINY_BACKBONE)), max_length=512)


def mtl_ids(encoder: TextEncoder, texts: list[str], batch: int = 4096) -> list[list[int]]:
    run = tf.function(encoder.token_ids, input_signature=[tf.TensorSpec([None], tf.string)])
    batches = (run(tf.constant(texts[start:start + batch])).to_list() for start in range(0, len(texts), batch))
    return [row for rows in batches for row in rows]


def test_every_character_class_tokenises_as_the_reference(encoder, reference):
    chars = swept_characters()
    assert len(chars) > 30_000
    texts = [f"Ab{c}cd x {c} Éy" for c in chars] + [f"{c}" for c in chars[::5]] + LONG_WORDS
    expected = [e.ids for e in reference.encode_batch(texts)]
    got = mtl_ids(encoder, texts)
    wrong = [(t, g, e) for t, g, e in zip(texts, got, expected, strict=True) if g != e]
    assert not wrong, f"{len(wrong)} of {len(texts)} differ, e.g. {wrong[:5]}"


def test_vertical_tab_and_form_feed_split_words_as_white_space(encoder, reference):
    texts = ["Ab\x0bcd x\x0cy", "tab\x0bbed"]
    expected = [e.ids for e in reference.encode_batch([t.replace("\x0b", " ").replace("\x0c", " ") for t in texts])]
    assert mtl_ids(encoder, texts) == expected
    assert [e.ids for e in reference.encode_batch(texts)] != expected  # the reference joins the neighbours


def test_keras_hub_alone_differs_from_the_reference(reference):
    """The failure this fixes: keras-hub case-folds with ICU NFKC (… -> ..., ﬁ -> fi, ß -> ss)."""
    import keras_hub

    plain = keras_hub.models.BertTokenizer(vocabulary=VOCAB, lowercase=True, strip_accents=True)
    texts = ["wait…", "ﬁne", "Straße", "½ cup", "Ｆｕｌｌ"]
    expected = [e.ids[1:-1] for e in reference.encode_batch(texts)]
    assert all(list(map(int, ids)) != e for ids, e in zip(plain.tokenize(texts), expected, strict=True))
    ours = ReferenceBertTokenizer(vocabulary=VOCAB)
    assert [list(map(int, ids)) for ids in ours.tokenize(texts)] == expected


def test_a_cased_wordpiece_tokenizer_keeps_case_and_accents():
    import keras_hub

    cased = reference_tokenizer(keras_hub.models.BertTokenizer(vocabulary=VOCAB, lowercase=False))
    assert isinstance(cased, ReferenceBertTokenizer)
    assert (cased.reference_lowercase, cased.reference_strip_accents) == (False, False)
    reference = BertWordPieceTokenizer(VOCAB, lowercase=False, strip_accents=False)
    texts = ["Le Café est très bon…", "ΟΔΟΣ ﬁne\u00a0x\u200by", "plain words"]
    expected = [e.ids[1:-1] for e in reference.encode_batch(texts)]
    assert [list(map(int, ids)) for ids in cased.tokenize(texts)] == expected


def test_config_round_trip():
    tokenizer = ReferenceBertTokenizer(vocabulary=VOCAB, lowercase=True, strip_accents=True)
    config = tokenizer.get_config()
    assert (config["lowercase"], config["strip_accents"]) == (True, True)
    again = ReferenceBertTokenizer.from_config(config)
    again.set_vocabulary(VOCAB)
    assert again.get_config() == config
    assert (again.lowercase, again.strip_accents) == (False, False)  # keras-hub's own steps stay off
    texts = ["Wait… ﬁne Straße", "Ａｂｃ"]
    assert again.tokenize(texts) == tokenizer.tokenize(texts)


def test_saved_model_and_keras_file_keep_the_ids(encoder, tmp_path):
    texts = tf.constant(["Wait… it's ½ the ﬁne Straße", "ΟΔΟΣ Ｆｕｌｌ café\u200bau lait"])
    text = keras.Input(shape=(), dtype="string", name="text")
    model = keras.Model(text, TextEncoder(encoder.backbone, encoder.tokenizer, max_length=64, name="enc")(text)[0])
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    tokenizer = loaded.get_layer("enc").tokenizer
    assert isinstance(tokenizer, ReferenceBertTokenizer) and tokenizer.reference_lowercase
    assert loaded.get_layer("enc").token_ids(texts).to_list() == encoder.token_ids(texts).to_list()
    np.testing.assert_allclose(loaded(texts).numpy(), model(texts).numpy(), atol=1e-6)

    # a SavedModel as mtl.export writes it: a module whose function takes raw strings
    module = tf.Module()
    module.serve = tf.function(lambda text: model(text, training=False), autograph=False,
                               input_signature=[tf.TensorSpec([None], tf.string)])
    module.captured_variables = list(module.serve.get_concrete_function().variables)
    tf.saved_model.save(module, str(tmp_path / "saved"))
    import tensorflow_text  # noqa: F401  the tokenizer's ops

    restored = tf.saved_model.load(str(tmp_path / "saved"))  # held: its variables live as long as it does
    served = restored.serve(texts)
    np.testing.assert_allclose(served.numpy(), model(texts).numpy(), atol=1e-6)
