"""The demo's digits MLP, trained on scikit-learn's real digits (the train split plus augmented
copies of it): the demo and the bench both start from this model."""

from __future__ import annotations

import numpy as np
import torch
from leanscore.compression.data import LabelledData, augment, digits_splits
from leanscore.compression.models import digits_mlp, train_classifier
from rich.console import Console


def train_digits_model(
    *, augmented_rows: int = 40_000, epochs: int = 8, seed: int = 0, console: Console | None = None
):
    """Train the demo MLP on the train split plus augmented copies; return (model, data)."""
    train, held_out = digits_splits()
    torch.manual_seed(seed)
    features, labels = augment(train, augmented_rows, np.random.default_rng(seed))
    x = np.concatenate([train.features, features])
    y = np.concatenate([train.labels, labels])
    model = digits_mlp()

    def progress(epoch: int, loss: float) -> None:
        if console:
            console.log(f"  epoch {epoch + 1}/{epochs} loss {loss:.4f}")

    train_classifier(model, x, y, epochs=epochs, seed=seed, progress=progress)
    source = {
        "dataset": "sklearn.datasets.load_digits",
        "split": "train",
        "augmented_rows": augmented_rows,
    }
    train_data = LabelledData(x, y, source)
    evaluation = LabelledData(
        held_out.features,
        held_out.labels,
        {"dataset": "sklearn.datasets.load_digits", "split": "held_out"},
    )
    return model, train_data, evaluation
