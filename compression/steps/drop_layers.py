"""``drop_layers``: a text encoder keeps only the transformer layers listed (each one dropped
removes 1/L of the encoder's work); usually followed by ``distill_embeddings``."""

from __future__ import annotations

from typing import ClassVar, Literal

from leanscore.compression.steps.base import RecipeError, Step, StepContext, StepState
from pydantic import Field


class DropLayersStep(Step):
    families: ClassVar[frozenset[str]] = frozenset({"text_embedding"})
    tasks: ClassVar[frozenset[str]] = frozenset({"embedding"})

    step: Literal["drop_layers"]
    keep: list[int] = Field(min_length=1, description="the layers kept, in this order (0-based)")

    def apply(self, state: StepState, ctx: StepContext) -> dict:
        from leanscore.compression.text_prune import drop_layers, layer_count

        ctx.text_exporter(self.step)
        before = layer_count(state.model)
        try:
            state.model = drop_layers(state.model, keep=self.keep)
        except ValueError as err:
            raise RecipeError(f"drop_layers: {err}") from None
        return {"keep": list(self.keep), "layers_before": before, "layers": len(self.keep)}
