"""TF Serving-ready SavedModels of trained runs.

``export_run(run_dir, base_path, name)`` writes ``base_path/name/<version>/`` (``saved_model.pb``, ``variables/``,
``assets/mtl_metadata.json``) with one signature, ``serving_default``: one input per raw feature, one output per
task (plus ``<task>_classes`` for multiclass tasks). The weights are saved once, through a plain ``tf.Module``.
"""

from mtl.export._savedmodel import METADATA_FILE, export_model, export_run, next_version

__all__ = ["METADATA_FILE", "export_model", "export_run", "next_version"]
