"""Knowledge distillation: a student learns the teacher's temperature-softened outputs plus the
hard labels (Hinton et al. 2015). Factorization reuses it to recover from its approximation."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from leanscore.compression.models import LearningRateSchedule, train_classifier
from torch import nn
from torch.nn import functional as F


def distillation_loss(teacher: nn.Module, *, temperature: float, alpha: float):
    """``alpha`` * KL(student_T || teacher_T) * T^2 + (1 - alpha) * cross-entropy on labels.

    The T^2 factor keeps the soft term's gradients on the same scale as the hard term's."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    teacher.eval()

    def loss_fn(model, x, y, logits):
        with torch.no_grad():
            target = F.softmax(teacher(x) / temperature, dim=-1)
        soft = F.kl_div(
            F.log_softmax(logits / temperature, dim=-1), target, reduction="batchmean"
        ) * (temperature**2)
        if alpha >= 1.0:
            return soft
        return alpha * soft + (1.0 - alpha) * F.cross_entropy(logits, y)

    return loss_fn


def distill(
    student: nn.Module,
    teacher: nn.Module,
    features: np.ndarray,
    labels: np.ndarray | None,
    *,
    epochs: int,
    temperature: float = 4.0,
    alpha: float = 0.7,
    lr: float = 1e-3,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
    schedule: LearningRateSchedule = "constant",
    batch_size: int = 256,
) -> nn.Module:
    """Train ``student`` in place from ``teacher``; without labels only the soft term is used.
    ``schedule``: the learning rate's course (``train_classifier``)."""
    if labels is None:
        alpha = 1.0
        labels = np.zeros(len(features), dtype=np.int64)
    return train_classifier(
        student,
        features,
        labels,
        epochs=epochs,
        lr=lr,
        seed=seed,
        loss_fn=distillation_loss(teacher, temperature=temperature, alpha=alpha),
        progress=progress,
        schedule=schedule,
        batch_size=batch_size,
    )
