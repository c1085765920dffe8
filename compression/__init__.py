"""Model -> compressed ONNX artifact.

The public API is flat, re-exported here. Names are loaded on first use so that importing
``leanscore.compression.artifact`` on an executor does not import torch.
"""

from importlib import import_module

_EXPORTS = {
    "Artifact": "leanscore.compression.artifact",
    "ArtifactError": "leanscore.compression.artifact",
    "Manifest": "leanscore.compression.artifact",
    "ModelIntegrityError": "leanscore.compression.artifact",
    "write_artifact": "leanscore.compression.artifact",
    "AccuracyGateError": "leanscore.compression.recipe",
    "CompressionResult": "leanscore.compression.recipe",
    "LabelledData": "leanscore.compression.recipe",
    "Recipe": "leanscore.compression.recipe",
    "run_recipe": "leanscore.compression.recipe",
    "export_onnx": "leanscore.compression.torch_export",
    "structured_prune": "leanscore.compression.pruning",
    "MagnitudeMask": "leanscore.compression.pruning",
    "dynamic_int8": "leanscore.compression.quantization",
    "evaluate_onnx": "leanscore.compression.evaluate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'compression' has no attribute {name!r}")
