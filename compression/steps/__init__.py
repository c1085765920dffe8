"""The compression steps a recipe can list, one module each (see ``base`` for what a step is).

Adding a step: write ``compression/steps/<name>.py`` with one ``Step`` subclass (its ``step:
Literal["<name>"]`` registers it) and import it below, the one place step modules are listed.
The recipe engine (``leanscore.compression.recipe``) then validates, checks, runs, measures and
gates it like every other step.
"""

from __future__ import annotations

from leanscore.compression.steps.base import Step, registered_steps
from leanscore.compression.steps.distill import DistillStep
from leanscore.compression.steps.distill_embeddings import DistillEmbeddingsStep
from leanscore.compression.steps.drop_layers import DropLayersStep
from leanscore.compression.steps.export import ExportStep
from leanscore.compression.steps.factorize import FactorizeStep
from leanscore.compression.steps.prune import PruneStep
from leanscore.compression.steps.prune_ffn import PruneFFNStep
from leanscore.compression.steps.quantize import QuantizeStep
from leanscore.compression.steps.sparsify import SparsifyStep
from leanscore.compression.steps.truncate_trees import TruncateTreesStep

__all__ = [
    "DistillEmbeddingsStep",
    "DistillStep",
    "DropLayersStep",
    "ExportStep",
    "FactorizeStep",
    "PruneFFNStep",
    "PruneStep",
    "QuantizeStep",
    "SparsifyStep",
    "Step",
    "TruncateTreesStep",
    "registered_steps",
]
