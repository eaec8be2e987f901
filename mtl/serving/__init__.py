"""Inference on exports: ``loader`` (find and load a version, check and convert inputs) and ``rest`` (the
TF Serving-compatible REST server, with TF Serving's gRPC API beside it from ``_grpc``; models and version lifecycle in
``_versions``). Needs only the export on disk, never the training code."""

from mtl.serving._batching import Batcher, BatchingParameters, read_batching_parameters
from mtl.serving._grpc import start_grpc_server, to_ndarray, to_tensor_proto
from mtl.serving._loader import LoadedModel, load, resolve_version, versions
from mtl.serving._monitoring import Metrics
from mtl.serving._rest import create_app, serve
from mtl.serving._signature import input_shapes
from mtl.serving._versions import ModelRegistry, ModelVersions, VersionPolicy, read_model_config

__all__ = ["Batcher", "BatchingParameters", "LoadedModel", "Metrics", "ModelRegistry", "ModelVersions", "VersionPolicy",
           "create_app", "input_shapes", "load", "read_batching_parameters", "read_model_config", "resolve_version",
           "serve", "start_grpc_server", "to_ndarray", "to_tensor_proto", "versions"]
