"""Model families on the scoring side: how a family's input columns become model feeds and how
the model's outputs become output columns.

A family is one module here defining one ``Family`` subclass; the subclass registers itself
under its ``name`` when the module is imported. ``FAMILY_MODULES`` maps each name to its module
so executors import only the family they score (no torch, no Pillow for a tabular model).
Adding a family: write ``udfs/families/<name>.py`` with a ``Family`` subclass and add one line to
``FAMILY_MODULES``.
"""

from __future__ import annotations

import importlib

from leanscore.compression.artifact import Manifest
from leanscore.udfs.families.base import Family, registered

FAMILY_MODULES = {
    "tabular": "leanscore.udfs.families.tabular",
    "onnx_model": "leanscore.udfs.families.onnx_model",
    "image": "leanscore.udfs.families.image",
    "text_classifier": "leanscore.udfs.families.text_classifier",
    "text_embedding": "leanscore.udfs.families.text_embedding",
}

__all__ = ["FAMILY_MODULES", "Family", "family_for", "family_name"]


def family_name(manifest: Manifest) -> str:
    """The manifest's ``family``, or the one its feature layout and task imply (image, a text
    embedding or classifier, or tabular)."""
    if manifest.family is not None:
        return manifest.family
    if manifest.features.image is not None:
        return "image"
    if manifest.features.text_column is not None:
        return "text_embedding" if manifest.task == "embedding" else "text_classifier"
    return "tabular"


def family_for(manifest: Manifest) -> Family:
    """The family that scores ``manifest``'s model, built for it."""
    name = family_name(manifest)
    module = FAMILY_MODULES.get(name)
    if module is None:
        known = ", ".join(sorted(FAMILY_MODULES))
        raise ValueError(
            f"model {manifest.name!r} has family {name!r}, which this leanscore cannot score "
            f"(families: {known}); upgrade leanscore or rebuild the model with this one"
        )
    importlib.import_module(module)
    return registered(name)(manifest)
