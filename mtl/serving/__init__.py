"""Inference on exports: ``loader`` (find and load a version, check and convert inputs) and ``rest`` (the
TF Serving-compatible REST server, with TF Serving's gRPC API beside it from ``_grpc``; models and version lifecycle in
``_versions``). Needs only the export on disk, never the training code."""

from mtl.serving.loader import LoadedModel, load, resolve_version

__all__ = ["LoadedModel", "load", "resolve_version"]
