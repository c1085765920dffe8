"""The bench's wide tabular classifier, trained on generated rows (``bench.wide_data``):
the workload where the model dominates the cost of scoring, next to the reader-bound digits MLP.
"""

from __future__ import annotations

import torch
from leanscore.bench.wide_data import WIDE_FEATURES, wide_sample
from leanscore.compression.data import LabelledData
from leanscore.compression.models import MLP, train_classifier
from rich.console import Console

WIDE_HIDDEN = [2048, 1024, 512]
USER_FEATURES, USER_HIDDEN = 128, [1024, 512]


def wide_mlp(hidden: list[int] | None = None, features: int = WIDE_FEATURES) -> MLP:
    """256 numeric features -> 2048-1024-512 -> 10 classes, about 3.2 million parameters: the
    workload where the model, not reading the table, is what a scoring job pays for."""
    return MLP(features, hidden or WIDE_HIDDEN, 10)


def user_mlp() -> MLP:
    """128 numeric features -> 1024-512 -> 10 classes, about 0.66 million parameters: a user's
    own mid-sized model, where after compression the pipeline around the model, not the
    model, is most of a nightly job's time."""
    return wide_mlp(USER_HIDDEN, USER_FEATURES)


def train_wide_model(
    *,
    train_rows: int = 32_768,
    evaluation_rows: int = 5_000,
    epochs: int = 4,
    seed: int = 0,
    features: int = WIDE_FEATURES,
    hidden: list[int] | None = None,
    console: Console | None = None,
) -> tuple[torch.nn.Module, LabelledData, LabelledData]:
    """Train the MLP (256-2048-1024-512-10 unless ``features`` and ``hidden`` say otherwise)
    on ``train_rows`` generated rows; return (model, train data, evaluation data). The
    evaluation rows come from their own stream: the recipes' gate decides on them, and the
    bench's table uses a third stream neither sees."""
    train = wide_sample("train", train_rows, seed=seed, features=features)
    evaluation = wide_sample("evaluation", evaluation_rows, seed=seed, features=features)
    torch.manual_seed(seed)
    model = wide_mlp(hidden, features)

    def progress(epoch: int, loss: float) -> None:
        if console:
            console.log(f"  epoch {epoch + 1}/{epochs} loss {loss:.4f}")

    train_classifier(
        model, train.features, train.labels, epochs=epochs, seed=seed, progress=progress
    )
    return model, train, evaluation
