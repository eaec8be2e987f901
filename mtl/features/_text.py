"""``data.features.text``: one column of raw text, read by ``model.backbone`` inside the graph (``TextEncoder``):
a pooled sentence vector for the trunk, and one vector per white-space word for word-level tasks (tagging).
Rows without text are dropped from training (logged)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mtl.errors import MtlError
from mtl.features._base import Encoded, Feature
from mtl.features._values import MAX_CELL_CHARS, CellError, category_text, cells, is_missing

__all__ = ["TextFeature"]


def _text(value: Any) -> str:
    """A text cell: as written (white space kept, the model splits on it); missing -> ``""``; numbers as
    categories are written."""
    if isinstance(value, str):
        if len(value) > MAX_CELL_CHARS:
            raise CellError(f"a cell of {len(value):,} characters is longer than the limit of {MAX_CELL_CHARS:,}")
        return "" if is_missing(value) else value
    return category_text(value)


class TextFeature(Feature):
    """Raw strings; ``max_length`` word pieces per window, windows every ``stride`` pieces (``None``: the first)."""

    kind: ClassVar[str] = "text"
    dtype: ClassVar[str] = "string"
    many: ClassVar[bool] = False
    provides_words: ClassVar[bool] = True
    description: ClassVar[str] = ("a column of raw text, read by `model.backbone`. Rows with no text are dropped "
                                  "(logged). It may sit beside numeric, categorical and vector columns")

    def __init__(self, column: str, input_name: str | None = None, max_length: int = 256,
                 stride: int | None = None) -> None:
        super().__init__(column, input_name)
        self.max_length = int(max_length)
        self.stride = None if stride is None else int(stride)

    @classmethod
    def from_data_config(cls, column: str, input_name: str, data_config: Any) -> TextFeature:
        window = data_config.window
        return cls(column, input_name, data_config.max_length, window.stride if window else None)

    def params(self) -> dict:
        return {"max_length": self.max_length, "stride": self.stride}

    @classmethod
    def check_config(cls, config: Any, used: bool) -> None:
        """A text column gets the default backbone; SMOTE and XLA cannot work on raw text."""
        if not used:
            if config.model.backbone is not None:
                raise ValueError("model.backbone: a backbone reads text, but data.features.text is not set")
            return
        if config.model.backbone is None:
            from mtl.config import BackboneConfig

            config.model.backbone = BackboneConfig()
        if config.training.smote is not None:
            raise ValueError("training.smote: SMOTE interpolates numbers and cannot make synthetic text")
        if config.training.jit_compile:
            raise ValueError("training.jit_compile: XLA cannot compile the in-graph tokenizer; set it to false")

    @classmethod
    def from_signature(cls, name: str, dtype: str, shape: tuple) -> Feature | None:
        return cls(name) if dtype == "string" and shape == () else None

    def parse(self, values: Sequence | np.ndarray, where: str | None = None, first_row: int = 1) -> np.ndarray:
        return np.asarray(cells(values, self.column, where, _text, first_row), dtype=object).reshape(-1)

    @classmethod
    def build_group(cls, features: list[Feature], inputs: dict[str, Any], model_config: Any) -> Encoded:
        from mtl.model._backbones import load_backbone, set_trainable
        from mtl.model._text import TextEncoder

        (feature,) = features
        backbone, tokenizer = load_backbone(model_config.backbone)
        limit = getattr(backbone, "max_sequence_length", None)
        if limit is not None and feature.max_length > limit:
            raise MtlError(f"{feature.max_length} word pieces exceed the backbone's {limit} positions",
                           where="data.max_length")
        set_trainable(backbone, model_config.backbone.trainable)
        encoder = TextEncoder(backbone, tokenizer, max_length=feature.max_length, stride=feature.stride,
                              pooling=model_config.backbone.pooling, name=f"{feature.input_name}_encoder")
        pooled, word_states, word_mask = encoder(inputs[feature.column])
        return Encoded([pooled], (word_states, word_mask))

    def word_counts(self, text: Any) -> Any:
        """The number of white-space words of each text (a tensor), as the model splits them."""
        import tensorflow as tf

        return tf.strings.split(tf.reshape(text, [-1])).row_lengths()

    def app_input(self, container: Any) -> Any:
        import streamlit as st

        return st.text_area(self.column, key=f"in_{self.column}")

    def fill_app_input(self, app: Any, value: Any) -> Any:
        app.text_area(key=f"in_{self.column}").set_value(str(value))
        return value

    @classmethod
    def eda_section(cls, frame: Any, columns: list[str], plots: Path, config: Any) -> list[str]:
        """How many rows have text, and how long the texts are in word pieces of ``model.backbone``'s tokenizer
        (``[CLS]`` and ``[SEP]`` included: the unit of ``data.max_length``), with the share that a window cuts."""
        import pandas as pd

        from mtl.model._backbones import load_tokenizer
        from mtl.model._text import word_piece_lengths
        from mtl.reporting import histograms, pct, stats_table

        (column,) = columns
        values = frame[column]
        absent = values.map(is_missing).to_numpy(dtype=bool)
        backbone = config.model.backbone
        if backbone is None:  # the config was checked before: a text column always has a backbone then
            from mtl.config import BackboneConfig

            backbone = BackboneConfig()
        texts = np.asarray(cells(values.to_numpy(dtype=object), column, None, _text), dtype=object)[~absent]
        pieces = word_piece_lengths(load_tokenizer(backbone), texts)
        limit = config.data.max_length
        cut = int((pieces > limit).sum())
        handling = ("read whole in overlapping windows (`data.window.stride`)" if config.data.window
                    else "cut to their first window")
        label = f"{column} (word pieces)"
        lines = [f"## Text feature `{column}`", "", f"- rows without text: {int(absent.sum()):,} of {len(values):,} "
                 "(dropped before training)",
                 f"- lengths below are in word pieces of the backbone's tokenizer, [CLS] and [SEP] included: the unit "
                 f"of `data.max_length` ({limit})",
                 f"- texts longer than {limit} word pieces: {cut:,} of {len(pieces):,} ({pct(cut, len(pieces))}), "
                 f"{handling}", "", *stats_table({label: pd.Series(pieces)})]
        histograms({label: pd.Series(pieces)}, plots / "text_lengths.png")
        return [*lines, "", "![text lengths](plots/text_lengths.png)", ""]
