"""The bench's wide tabular classifier, trained on generated rows (``compression.wide_data``):
the workload where the model dominates the cost of scoring, next to the reader-bound digits MLP.
"""

from __future__ import annotations

import torch
from leanscore.compression.data import LabelledData
from leanscore.compression.models import train_classifier, wide_mlp
from leanscore.compression.wide_data import wide_sample
from rich.console import Console


def train_wide_model(
    *,
    train_rows: int = 32_768,
    evaluation_rows: int = 5_000,
    epochs: int = 4,
    seed: int = 0,
    console: Console | None = None,
) -> tuple[torch.nn.Module, LabelledData, LabelledData]:
    """Train the 256-2048-1024-512-10 MLP on ``train_rows`` generated rows; return (model,
    train data, evaluation data). The evaluation rows come from their own stream: the
    recipes' gate decides on them, and the bench's table uses a third stream neither sees."""
    train = wide_sample("train", train_rows, seed=seed)
    evaluation = wide_sample("evaluation", evaluation_rows, seed=seed)
    torch.manual_seed(seed)
    model = wide_mlp()

    def progress(epoch: int, loss: float) -> None:
        if console:
            console.log(f"  epoch {epoch + 1}/{epochs} loss {loss:.4f}")

    train_classifier(
        model, train.features, train.labels, epochs=epochs, seed=seed, progress=progress
    )
    return model, train, evaluation
