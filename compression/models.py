"""Reference models and the training loop that fine-tuning and distillation share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

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


class DigitsCNN(nn.Module):
    """A small CNN on digit images of ``input_shape`` (channels, height, width; default the 8x8
    grayscale digits). It takes the flat pixel rows a table holds, or (n, C, H, W) images as
    the image family decodes them, and reshapes inside the graph, so the artifact scores the
    same feature column as the MLP."""

    def __init__(
        self,
        channels: list[int] | None = None,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] | list[int] = (1, 8, 8),
    ):
        super().__init__()
        if len(input_shape) != 3 or min(input_shape[1:]) < 2:
            raise ValueError(
                f"input_shape must be (channels, height, width) of at least 2x2, got "
                f"{list(input_shape)}"
            )
        self.input_shape = tuple(int(d) for d in input_shape)
        c1, c2, c3 = channels or [32, 64, 64]
        self.features = nn.Sequential(
            nn.Conv2d(self.input_shape[0], c1, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c2, c3, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),  # 4x4 -> 2x2
            nn.Flatten(),
        )
        self.head = nn.Linear(c3 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.reshape(-1, *self.input_shape)))


def digits_cnn(
    channels: list[int] | None = None, input_shape: tuple[int, int, int] = (1, 8, 8)
) -> DigitsCNN:
    return DigitsCNN(channels, input_shape=input_shape)


def conv_params(model: nn.Module) -> int:
    """Parameters held by convolutions (weights and biases), the figure factorization shrinks."""
    return sum(
        p.numel() for m in model.modules() if isinstance(m, nn.Conv2d) for p in m.parameters()
    )


def mlp_hidden(model: MLP) -> list[int]:
    return [m.out_features for m in model.body if isinstance(m, nn.Linear)]


def shrink(model: nn.Module, *, width: float = 1.0, depth: int | None = None) -> nn.Module:
    """A fresh, untrained copy of ``model``'s architecture, ``width`` times as wide and keeping
    its first ``depth`` hidden layers (MLP) -- the student of a distillation."""
    scale = lambda n: max(1, int(round(n * width)))  # noqa: E731
    if isinstance(model, MLP):
        hidden = mlp_hidden(model)
        hidden = hidden[: depth if depth is not None else len(hidden)]
        if not hidden:
            raise ValueError(f"student depth must keep at least one hidden layer, got {depth}")
        return MLP(model.body[0].in_features, [scale(h) for h in hidden], model.head.out_features)
    if isinstance(model, DigitsCNN):
        if depth is not None:
            raise ValueError("student depth applies to MLPs; give 'width' for the digits CNN")
        convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
        return DigitsCNN(
            [scale(c.out_channels) for c in convs],
            model.head.out_features,
            input_shape=model.input_shape,
        )
    raise ValueError(
        f"cannot derive a student from {type(model).__name__} by width/depth; give the distill "
        "step a 'student_factory' ('module:function') instead"
    )


class WithSoftmax(nn.Module):
    """A logits model whose served graph outputs class probabilities: a feature model's one
    input ``x``, or a sequence classifier's token ids (``x``) and ``attention_mask``, whose
    Hugging Face output's ``logits`` is the one taken."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        out = self.model(x) if attention_mask is None else self.model(x, attention_mask)
        return torch.softmax(getattr(out, "logits", out), dim=-1)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_nonzero_params(model: nn.Module) -> int:
    return sum(int(torch.count_nonzero(p)) for p in model.parameters())


LearningRateSchedule = Literal["constant", "one_cycle"]
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
    threads: int | None = 1,
    schedule: LearningRateSchedule = "constant",
) -> nn.Module:
    """Train ``model`` in place with Adam; ``loss_fn`` lets sparsification and distillation add
    their terms, ``after_step`` lets pruning re-apply its masks.

    ``schedule``: ``constant`` keeps ``lr``; ``one_cycle`` warms up to ``lr`` and anneals to
    near zero over the run (Smith's one-cycle policy): a small student trained from scratch
    settles in its last epochs instead of ending on a step of the full rate.

    ``threads``: torch intra-op threads while training (None keeps torch's setting). These
    models are small; on a busy machine several threads per process oversubscribe the cores
    and one epoch ran 7x slower with 2 threads than with 1."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(seed)
        x_all = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        y_all = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        scheduler = (
            torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=lr, total_steps=epochs * -(-len(x_all) // batch_size)
            )
            if schedule == "one_cycle"
            else None
        )
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
                if scheduler is not None:
                    scheduler.step()
                if after_step is not None:
                    after_step(model)
                total += loss.item() * len(idx)
            if progress is not None:
                progress(epoch, total / len(x_all))
    finally:
        torch.set_num_threads(previous)
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
