"""Model -> compressed ONNX artifact.

The public API is flat, re-exported here. Names are loaded on first use so that importing
``compression.artifact`` on an executor does not import torch.
"""

from importlib import import_module

_EXPORTS = {
    "Artifact": "compression.artifact",
    "ArtifactError": "compression.artifact",
    "Manifest": "compression.artifact",
    "ModelIntegrityError": "compression.artifact",
    "write_artifact": "compression.artifact",
    "AccuracyGateError": "compression.recipe",
    "CompressionResult": "compression.recipe",
    "LabelledData": "compression.recipe",
    "Recipe": "compression.recipe",
    "run_recipe": "compression.recipe",
    "export_onnx": "compression.export",
    "structured_prune": "compression.prune",
    "MagnitudeMask": "compression.prune",
    "dynamic_int8": "compression.quantize",
    "evaluate_onnx": "compression.evaluate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'compression' has no attribute {name!r}")
