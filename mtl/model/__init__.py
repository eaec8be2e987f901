"""The model stage: in-graph preprocessing, trunks, and the masked multi-task Keras model."""

from mtl.model.build import build_model
from mtl.model.multitask import MultiTaskModel, masked_mean
from mtl.model.text import TextEncoder

__all__ = ["MultiTaskModel", "TextEncoder", "build_model", "masked_mean"]
