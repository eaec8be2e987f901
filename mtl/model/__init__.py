"""The model stage: in-graph preprocessing, trunks, and the masked multi-task Keras model."""

from mtl.model._backbones import (
    ReferenceBertTokenizer,
    builtin_minilm_dir,
    load_backbone,
    reference_tokenizer,
    set_trainable,
    split_at_block,
    unused_layers,
)
from mtl.model._build import build_model
from mtl.model._cache import build_cache as build_encoding_cache
from mtl.model._cache import encoder_fingerprint
from mtl.model._embed import SentenceEmbedder
from mtl.model._multitask import MultiTaskModel, masked_mean
from mtl.model._text import TextEncoder, backbone_variables
from mtl.model._trunks import Trunk, build_trunk

__all__ = ["MultiTaskModel", "ReferenceBertTokenizer", "SentenceEmbedder", "TextEncoder", "Trunk", "backbone_variables",
           "build_model",
           "build_encoding_cache", "encoder_fingerprint",
           "build_trunk", "builtin_minilm_dir", "load_backbone", "masked_mean", "reference_tokenizer", "set_trainable",
           "split_at_block", "unused_layers"]
