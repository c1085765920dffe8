"""``prune``: structured (neurons and channels physically removed: dense kernels do less work)
or unstructured magnitude pruning (weights zeroed: a smaller zipped file, the same speed), with
optional fine-tuning."""

from __future__ import annotations

from typing import Literal

from leanscore.compression.steps.base import Step, StepContext, StepState
from pydantic import Field

STRUCTURED_NOTE = "structured: neurons/channels removed, dense kernels do less work (faster)"
UNSTRUCTURED_NOTE = (
    "unstructured: weights zeroed, shapes unchanged; the zipped file shrinks but dense CPU "
    "kernels run at the same speed (onnxruntime #2121, #5578)"
)


class PruneStep(Step):
    step: Literal["prune"]
    kind: Literal["structured", "unstructured"]
    ratio: float = Field(gt=0.0, lt=1.0, description="fraction of neurons (structured) or weights")
    scope: Literal["global", "layer"] = Field(
        default="global", description="unstructured only: one threshold, or one per layer"
    )
    finetune_epochs: int = Field(default=5, ge=0)
    lr: float = Field(default=1e-3, gt=0)

    def needs(self) -> frozenset[str]:
        return frozenset({"train"}) if self.finetune_epochs else frozenset()

    def apply(self, state: StepState, ctx: StepContext) -> dict:
        from leanscore.compression.models import count_params, train_classifier
        from leanscore.compression.pruning import MagnitudeMask, structured_prune, weight_sparsity

        before = count_params(state.model)
        mask = None
        if self.kind == "structured":
            structured_prune(state.model, ctx.example_input, ratio=self.ratio)
            note = STRUCTURED_NOTE
        else:
            mask = MagnitudeMask(state.model, sparsity=self.ratio, scope=self.scope)
            note = UNSTRUCTURED_NOTE
        if note not in state.notes:
            state.notes.append(note)
        if self.finetune_epochs and ctx.train is not None and ctx.train.labels is not None:
            train_classifier(
                state.model,
                ctx.train.features,
                ctx.train.labels,
                epochs=self.finetune_epochs,
                lr=self.lr,
                after_step=mask.apply if mask else None,
                progress=ctx.epochs("prune fine-tune", self.finetune_epochs),
            )
        return {
            "kind": self.kind,
            "ratio": self.ratio,
            "scope": self.scope if self.kind == "unstructured" else "layer",
            "params_before": before,
            "weight_sparsity": round(weight_sparsity(state.model), 4),
            "effect": note,
        }
