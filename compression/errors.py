"""The one base class of the errors leanscore raises on purpose.

A ``LeanscoreError`` is a problem with the user's input, config, model or environment that the
message explains and says how to fix: the CLI prints it as one line and exits 1. Each subclass
also derives from the built-in class it refines (``ValueError``, ``RuntimeError``), so callers
that catch those keep working. Raised inside a Spark task, it reaches the driver as text; the
CLI finds it there by resolving the class the worker's traceback names (``leanscore.jobs.cli``).
"""

from __future__ import annotations


class LeanscoreError(Exception):
    """A failure leanscore explains: bad input, a bad config, a failed gate or check."""


class RecipeError(LeanscoreError, ValueError):
    """A recipe cannot run on this model (a torch step on an ONNX file, missing data, ...)."""


def is_leanscore_error(qualified_name: str) -> bool:
    """Whether ``module.Class`` (as a traceback prints it) names a ``LeanscoreError`` class."""
    import importlib

    module, _, name = qualified_name.rpartition(".")
    if not module.startswith("leanscore."):
        return False
    try:
        found = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return False
    return isinstance(found, type) and issubclass(found, LeanscoreError)
