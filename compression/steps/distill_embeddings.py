"""``distill_embeddings``: fit a text encoder (as earlier steps left it) to the embeddings of the
model as given, on unlabeled training texts (MSE on L2-normalised embeddings, i.e. 2 - 2 cosine).

Not the tabular ``distill``: that one builds a smaller student and trains it on a classifier's
softened logits plus hard labels; this one keeps the student earlier steps made and needs no
labels. Two names keep each step's options strict and its errors at validation time."""

from __future__ import annotations

from typing import ClassVar, Literal

from leanscore.compression.steps.base import Step, StepContext, StepState
from pydantic import Field


class DistillEmbeddingsStep(Step):
    families: ClassVar[frozenset[str]] = frozenset({"text_embedding"})
    tasks: ClassVar[frozenset[str]] = frozenset({"embedding"})
    requires: ClassVar[frozenset[str]] = frozenset({"train"})

    step: Literal["distill_embeddings"]
    epochs: int = Field(default=2, gt=0)
    lr: float = Field(default=1e-4, gt=0)
    batch_size: int = Field(default=32, gt=0)

    def apply(self, state: StepState, ctx: StepContext) -> dict:
        from leanscore.compression.text_model import torch_embed
        from leanscore.compression.text_prune import distill

        exporter = ctx.text_exporter(self.step)
        texts = [str(t) for t in ctx.train.features]
        ctx.say(f"  teacher embeddings for {len(texts)} training sentences")
        teacher = torch_embed(
            state.original, exporter.tokenizer, texts, max_length=exporter.max_length
        )
        state.model, losses = distill(
            state.model,
            teacher,
            texts,
            exporter.tokenizer,
            epochs=self.epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            max_length=exporter.max_length,
            progress=ctx.say,
        )
        return {"losses": [round(x, 6) for x in losses], "train_rows": len(texts)}
