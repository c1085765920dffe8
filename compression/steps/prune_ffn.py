"""``prune_ffn``: structured pruning of a text encoder's feed-forward blocks: neurons physically
removed (smaller dense MatMuls), ranked by their output energy on calibration text with the
down projection refit by least squares (``leanscore.compression.text_prune``)."""

from __future__ import annotations

from typing import ClassVar, Literal

from leanscore.compression.steps.base import RecipeError, Step, StepContext, StepState
from pydantic import Field


class PruneFFNStep(Step):
    families: ClassVar[frozenset[str]] = frozenset({"text_embedding"})
    tasks: ClassVar[frozenset[str]] = frozenset({"embedding"})

    step: Literal["prune_ffn"]
    keep_ratio: float = Field(gt=0, le=1)
    refit: bool = Field(
        default=True,
        description="rank neurons on calibration text and refit the down projection "
        "(least squares); false: rank by weight norms, no refit",
    )
    calibration_rows: int = Field(default=1600, gt=0, description="training sentences used")

    def needs(self) -> frozenset[str]:
        return frozenset({"train"}) if self.refit else frozenset()

    def apply(self, state: StepState, ctx: StepContext) -> dict:
        from leanscore.compression.text_prune import ffn_grams, prune_ffn

        exporter = ctx.text_exporter(self.step)
        detail: dict = {"keep_ratio": self.keep_ratio, "refit": self.refit}
        grams = None
        if self.refit:
            texts = [str(t) for t in ctx.train.features[: self.calibration_rows]]
            ctx.say(f"  feed-forward activations on {len(texts)} calibration sentences")
            grams = ffn_grams(
                state.model, exporter.tokenizer, texts, max_length=exporter.max_length
            )
            detail["calibration_rows"] = len(texts)
        try:
            state.model = prune_ffn(state.model, keep_ratio=self.keep_ratio, grams=grams)
        except ValueError as err:
            raise RecipeError(f"prune_ffn: {err}") from None
        detail["intermediate_size"] = state.model.bert.config.intermediate_size
        return detail
