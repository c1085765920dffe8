"""Sparsification: fine-tuning with an L1 penalty on the weights drives many of them to (near)
zero, so a following magnitude prune removes them at little cost."""

from __future__ import annotations

import numpy as np
import torch
from leanscore.compression.models import cross_entropy_loss, train_classifier
from leanscore.compression.pruning import prunable_layers
from torch import nn


def l1_loss(strength: float):
    """Cross-entropy plus ``strength`` times the mean absolute weight of the prunable layers
    (a mean, so one strength suits models of any size)."""

    def loss_fn(model, x, y, logits):
        weights = [m.weight for m in prunable_layers(model)]
        penalty = sum(w.abs().sum() for w in weights) / sum(w.numel() for w in weights)
        return cross_entropy_loss(model, x, y, logits) + strength * penalty

    return loss_fn


def near_zero_fraction(model: nn.Module, threshold: float) -> float:
    weights = [m.weight.detach() for m in prunable_layers(model)]
    total = sum(w.numel() for w in weights)
    return sum(int((w.abs() <= threshold).sum()) for w in weights) / total if total else 0.0


def l1_finetune(
    model: nn.Module,
    features: np.ndarray,
    labels: np.ndarray,
    *,
    strength: float,
    epochs: int,
    lr: float = 1e-3,
    zero_below: float | None = None,
    progress=None,
) -> nn.Module:
    """Fine-tune in place with the L1 penalty; then zero the weights whose magnitude is at most
    ``zero_below`` (if given)."""
    train_classifier(
        model, features, labels, epochs=epochs, lr=lr, loss_fn=l1_loss(strength), progress=progress
    )
    if zero_below is not None:
        with torch.no_grad():
            for m in prunable_layers(model):
                m.weight.mul_(m.weight.abs() > zero_below)
    return model
