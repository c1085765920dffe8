"""The bench's wide tabular classifier, trained on generated rows (``bench.wide_data``):
the workload where the model dominates the cost of scoring, next to the reader-bound digits MLP.
"""

from __future__ import annotations

import torch
from leanscore.bench.wide_data import wide_sample
from leanscore.compression.data import LabelledData
from leanscore.compression.models import MLP, train_classifier
from rich.console import Console


def wide_mlp(hidden: list[int] | None = None) -> MLP:
    """256 numeric features -> 2048-1024-512 -> 10 classes, about 3.2 million parameters: the
    workload where the model, not reading the table, is what a scoring job pays for."""
    return MLP(256, hidden or [2048, 1024, 512], 10)


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
