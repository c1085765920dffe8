"""Reference models and the training loop that fine-tuning and distillation share."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn


class MLP(nn.Module):
    """A plain multi-layer perceptron classifier: Linear -> ReLU blocks, then a Linear head."""

    def __init__(self, in_features: int, hidden: list[int], num_classes: int):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def digits_mlp(hidden: list[int] | None = None) -> MLP:
    """The demo's model: 64 pixel features -> 10 digit classes."""
    return MLP(64, hidden or [512, 256], 10)


class WithSoftmax(nn.Module):
    """Wraps a logits model so the exported graph outputs probabilities."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=-1)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_nonzero_params(model: nn.Module) -> int:
    return sum(int(torch.count_nonzero(p)) for p in model.parameters())


LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor
) -> torch.Tensor:
    return nn.functional.cross_entropy(logits, y)


def train_classifier(
    model: nn.Module,
    features: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 256,
    weight_decay: float = 0.0,
    seed: int = 0,
    loss_fn: LossFn = cross_entropy_loss,
    after_step: Callable[[nn.Module], None] | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> nn.Module:
    """Train ``model`` in place with Adam; ``loss_fn`` lets sparsification and distillation add
    their terms, ``after_step`` lets pruning re-apply its masks."""
    generator = torch.Generator().manual_seed(seed)
    x_all = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    y_all = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x_all), generator=generator)
        total = 0.0
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            x, y = x_all[idx], y_all[idx]
            optimizer.zero_grad()
            loss = loss_fn(model, x, y, model(x))
            loss.backward()
            optimizer.step()
            if after_step is not None:
                after_step(model)
            total += loss.item() * len(idx)
        if progress is not None:
            progress(epoch, total / len(x_all))
    model.eval()
    return model


@torch.no_grad()
def predict_proba(model: nn.Module, features: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    model.eval()
    out = []
    for start in range(0, len(features), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(features[start : start + batch_size]))
        out.append(torch.softmax(model(x), dim=-1).numpy())
    return np.concatenate(out)
