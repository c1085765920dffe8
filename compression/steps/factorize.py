"""``factorize``: low-rank SVD of Linear layers, or depthwise-separable convolutions (MobileNet),
then a short distillation from the unfactorized model."""

from __future__ import annotations

import contextlib
import copy
from typing import ClassVar, Literal

from leanscore.compression.steps.base import RecipeError, Step, StepContext, StepState
from pydantic import Field, model_validator


class FactorizeStep(Step):
    """Low-rank SVD of Linear layers, or depthwise-separable convolutions; then a short
    distillation from the unfactorized model."""

    tasks: ClassVar[frozenset[str]] = frozenset({"classification"})
    requires: ClassVar[frozenset[str]] = frozenset({"train"})

    step: Literal["factorize"]
    method: Literal["low_rank", "depthwise_separable"]
    rank: int | None = Field(default=None, ge=1)
    energy: float | None = Field(default=None, gt=0.0, le=1.0)
    skip_last: bool = Field(default=True, description="leave the output layer whole")
    min_in_channels: int = Field(default=2, ge=1)
    distill_epochs: int = Field(default=5, ge=0)
    temperature: float = Field(default=4.0, gt=0.0)
    alpha: float = Field(default=0.7, ge=0.0, le=1.0)
    lr: float = Field(default=1e-3, gt=0)

    @model_validator(mode="after")
    def _rank_or_energy(self) -> FactorizeStep:
        given = (self.rank is not None) + (self.energy is not None)
        if self.method == "low_rank" and given != 1:
            raise ValueError("method 'low_rank' needs exactly one of 'rank' or 'energy'")
        if self.method == "depthwise_separable" and given:
            raise ValueError("'rank' and 'energy' apply to method 'low_rank' only")
        return self

    def apply(self, state: StepState, ctx: StepContext) -> dict:
        from leanscore.compression.factorization import factorize_linears, separable_convs
        from leanscore.compression.models import conv_params, count_params

        teacher = copy.deepcopy(state.model)
        before = {"params": count_params(state.model), "conv_params": conv_params(state.model)}
        if self.method == "low_rank":
            layers = factorize_linears(
                state.model, rank=self.rank, energy=self.energy, skip_last=self.skip_last
            )
        else:
            layers = separable_convs(state.model, min_in_channels=self.min_in_channels)
        if not any(layer["replaced"] for layer in layers):
            raise RecipeError(
                f"factorize ({self.method}) found nothing to replace: no layer gets smaller "
                f"({layers}); lower 'rank'/'energy' or drop the step"
            )
        detail = {
            "method": self.method,
            "layers": layers,
            "params_before": before["params"],
            "conv_params_before": before["conv_params"],
            "accuracy_before_distillation": ctx.torch_accuracy(state.model),
        }
        if self.distill_epochs:
            from leanscore.compression.distillation import distill
            from leanscore.compression.factorization import FreshBatchNormStats

            fresh = FreshBatchNormStats(state.model)
            # separable pairs change what each batch norm sees; low-rank Linears feed none
            with fresh if self.method == "depthwise_separable" else contextlib.nullcontext():
                distill(
                    state.model,
                    teacher,
                    ctx.train.features,
                    ctx.train.labels,
                    epochs=self.distill_epochs,
                    temperature=self.temperature,
                    alpha=self.alpha,
                    lr=self.lr,
                    progress=ctx.epochs("factorize distill", self.distill_epochs),
                )
            detail["accuracy_after_distillation"] = ctx.torch_accuracy(state.model)
            detail["batch_norms_reestimated"] = (
                len(fresh.norms) if self.method == "depthwise_separable" else 0
            )
        return detail
