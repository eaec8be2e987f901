"""Feature kinds, one module each: ``numeric``, ``categorical``, ``text``, ``vector``.

``FEATURE_KINDS`` maps a ``data.features`` key to its class. Generic code asks a kind or a feature through the hooks
of ``Feature`` (parse, fit, graph, metadata, app widget, EDA section) and never names a kind. To add a kind, write
one module with a ``Feature`` subclass, register it here, and call ``mtl.testing.run_parity_test`` in a test.

>>> from mtl.features import FEATURE_KINDS
>>> sorted(FEATURE_KINDS)
['categorical', 'numeric', 'text', 'vector']
"""

from __future__ import annotations

from typing import Any

from mtl.features._base import Encoded, Feature
from mtl.features._categorical import CategoricalFeature, embedding_size
from mtl.features._names import VALID_INPUT_NAME, input_names
from mtl.features._numeric import NumericFeature
from mtl.features._text import TextFeature
from mtl.features._values import MAX_CELL_CHARS, MISSING_TEXTS, category_text, is_missing, number_value, shown
from mtl.features._vector import VectorFeature

__all__ = ["FEATURE_KINDS", "Feature", "Encoded", "NumericFeature", "CategoricalFeature", "TextFeature",
           "VectorFeature", "MAX_CELL_CHARS", "MISSING_TEXTS", "VALID_INPUT_NAME", "build_features",
           "feature_from_config", "features_from_signature", "configured_columns", "category_text", "embedding_size",
           "input_names", "is_missing", "number_value", "shown"]

FEATURE_KINDS: dict[str, type[Feature]] = {
    cls.kind: cls for cls in (NumericFeature, CategoricalFeature, TextFeature, VectorFeature)
}


def configured_columns(features_config: Any) -> list[tuple[str, str]]:
    """``[(kind, column), ...]`` in config order (kinds in registry order)."""
    pairs = []
    for kind, cls in FEATURE_KINDS.items():
        value = getattr(features_config, kind)
        columns = value if cls.many else ([value] if value is not None else [])
        pairs += [(kind, column) for column in columns]
    return pairs


def build_features(data_config: Any) -> dict[str, Feature]:
    """Unfitted features of ``data.features``, keyed by column, with their signature input names."""
    pairs = configured_columns(data_config.features)
    names = input_names([column for _, column in pairs])
    return {column: FEATURE_KINDS[kind].from_data_config(column, names[column], data_config)
            for kind, column in pairs}


def features_from_signature(specs: dict[str, Any]) -> dict[str, Feature]:
    """Features for the inputs of a SavedModel exported elsewhere (no mtl metadata): the first kind whose
    ``from_signature`` reads each ``tf.TensorSpec``; an input no kind reads is an ``MtlError``."""
    from mtl.errors import MtlError

    features = {}
    for name, spec in specs.items():
        dtype, shape = spec.dtype.name, tuple(spec.shape[1:])
        feature = next((f for cls in FEATURE_KINDS.values() if (f := cls.from_signature(name, dtype, shape))), None)
        if feature is None:
            raise MtlError(f"the signature input {name!r} ({dtype}, shape {[None, *shape]}) is not one mtl reads",
                           where="--model")
        features[name] = feature
    return features


def feature_from_config(config: dict) -> Feature:
    """Rebuild a fitted feature from ``Feature.get_config()`` (saved models, export metadata)."""
    return FEATURE_KINDS[config["kind"]].from_config(config)
