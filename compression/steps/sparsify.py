"""``sparsify``: L1-regularised fine-tuning that drives weights towards zero, feeding a
magnitude prune."""

from __future__ import annotations

from typing import ClassVar, Literal

from leanscore.compression.steps.base import Step, StepContext, StepState
from pydantic import Field


class SparsifyStep(Step):
    """L1-regularised fine-tuning: drives weights towards zero, feeding a magnitude prune."""

    tasks: ClassVar[frozenset[str]] = frozenset({"classification"})
    requires: ClassVar[frozenset[str]] = frozenset({"train", "labels"})

    step: Literal["sparsify"]
    strength: float = Field(gt=0.0, description="L1 weight on the mean absolute weight")
    epochs: int = Field(default=5, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    zero_below: float | None = Field(default=None, ge=0.0)
    near_zero: float = Field(default=1e-3, gt=0.0, description="threshold reported as near zero")

    def apply(self, state: StepState, ctx: StepContext) -> dict:
        from leanscore.compression.pruning import weight_sparsity
        from leanscore.compression.sparsification import l1_finetune, near_zero_fraction

        before = near_zero_fraction(state.model, self.near_zero)
        l1_finetune(
            state.model,
            ctx.train.features,
            ctx.train.labels,
            strength=self.strength,
            epochs=self.epochs,
            lr=self.lr,
            zero_below=self.zero_below,
            progress=ctx.epochs("sparsify", self.epochs),
        )
        return {
            "strength": self.strength,
            "near_zero_threshold": self.near_zero,
            "near_zero_fraction_before": round(before, 4),
            "near_zero_fraction_after": round(near_zero_fraction(state.model, self.near_zero), 4),
            "weight_sparsity": round(weight_sparsity(state.model), 4),
        }
