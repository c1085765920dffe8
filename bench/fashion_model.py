"""The images workload's models: a VGG-style CNN for Fashion-MNIST (blocks of stacked 3x3
convolutions with batch norm and ReLU, each block closed by 2x2 max pooling, then fully
connected layers, as in VGG and the seed's VGG16-based classifier), its smaller distillation
students, and the training entry points the bench's ``prepare`` and the demo call.

Sizes, measured on 2 shared cores: the baseline (16-16 | 32-32 channels, 128 hidden units,
218,682 parameters, 0.88 MB as fp32 ONNX) trains 5 epochs on 54,000 images in minutes; the
demo's entry point trains the same network 2 epochs on 20,000 images in about a minute.

Bench and demo code: nothing in the product imports it. Compress configs name the factories
(``model.factory``, ``distill.student_factory``) as a user names their own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from leanscore.compression.data import LabelledData
from torch import nn

INPUT_SHAPE = (1, 28, 28)
# Fashion-MNIST's pixel mean and standard deviation over the 60,000 training images (0..1).
MEAN, STD = 0.2860, 0.3530


class FashionVGG(nn.Module):
    """``blocks``: the output channels of each 3x3 convolution, one tuple per block; every
    block ends with 2x2 max pooling (28 -> 14 -> 7). It takes (n, 1, 28, 28) images, or rows
    of 784 pixels (reshaped inside the graph)."""

    def __init__(
        self,
        blocks: Sequence[Sequence[int]] = ((16, 16), (32, 32)),
        hidden: int = 128,
        num_classes: int = 10,
        input_shape: Sequence[int] = INPUT_SHAPE,
    ):
        super().__init__()
        self.input_shape = tuple(int(d) for d in input_shape)
        layers: list[nn.Module] = []
        channels, side = self.input_shape[0], self.input_shape[1]
        for block in blocks:
            for out in block:
                layers += [nn.Conv2d(channels, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
                channels = out
            layers.append(nn.MaxPool2d(2))
            side //= 2
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * side * side, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x.reshape(-1, *self.input_shape)))


def fashion_vgg() -> FashionVGG:
    """The baseline: 16-16 | 32-32 channels, 128 hidden units."""
    return FashionVGG()


def fashion_student() -> FashionVGG:
    """The distillation student: half the channels per block, a quarter of the hidden units."""
    return FashionVGG(blocks=((8, 8), (16, 16)), hidden=32)


def fashion_slim_student() -> FashionVGG:
    """The slim distillation student: one 3x3 convolution per block (16, then 32 channels)
    where the baseline stacks two, and 64 hidden units. The baseline's time goes to its
    convolutions at 28x28 and 14x14; halving their channels (``fashion_student``) still runs
    four of them, this runs two."""
    return FashionVGG(blocks=((16,), (32,)), hidden=64)


def fashion_tiny_student() -> FashionVGG:
    """The tiny distillation student: the slim student's two convolutions at half its channels
    (8, then 16) and 48 hidden units: 39,466 parameters, under a fifth of the baseline's. Channel
    counts in multiples of 8 suit ONNX Runtime's blocked CPU convolutions: measured untrained on
    one thread of an AVX2 machine, 8 and 16 ran about 2.5x the slim student's rows/s, while 12
    and 24 ran no faster than 16 and 32."""
    return FashionVGG(blocks=((8,), (16,)), hidden=48)


def as_inputs(images: np.ndarray) -> np.ndarray:
    """(n, 28, 28) uint8 -> the model's normalised (n, 1, 28, 28) float32, exactly as the image
    family decodes a PNG with ``mean``/``std`` (``compression.image_inputs.normalise``)."""
    from leanscore.compression.artifact import ImageSpec
    from leanscore.compression.image_inputs import normalise

    spec = ImageSpec(channels=1, height=28, width=28, mean=[MEAN], std=[STD])
    return normalise(images[:, None], spec, eight_bit=True)


def train_fashion_model(
    *,
    epochs: int = 5,
    fit_rows: int | None = None,
    holdout: int = 6_000,
    train_limit: int | None = None,
    seed: int = 0,
    lr: float = 2e-3,
    threads: int | None = 1,
    console=None,
) -> tuple[FashionVGG, LabelledData, LabelledData]:
    """Train the baseline on the 'fit' part of the training split (its first ``fit_rows``);
    return (model, fit data, hold-out data). The test split is not read. ``train_limit`` and
    ``holdout`` split as ``fashion_data.write_training_tables`` does, so the tables' 'fit' and
    'holdout' rows are the images this trains and evaluates on."""
    from leanscore.bench.fashion_data import holdout_mask, load_split
    from leanscore.compression.models import train_classifier

    images, labels = load_split("train")
    images, labels = images[:train_limit], labels[:train_limit]
    held = holdout_mask(len(images), holdout, seed)
    fit_x, fit_y = images[~held][:fit_rows], labels[~held][:fit_rows]
    torch.manual_seed(seed)
    model = fashion_vgg()

    def progress(epoch: int, loss: float) -> None:
        if console is not None:
            console.log(f"  epoch {epoch + 1}/{epochs} loss {loss:.4f}")

    train_classifier(
        model,
        as_inputs(fit_x),
        fit_y,
        epochs=epochs,
        lr=lr,
        batch_size=128,
        seed=seed,
        progress=progress,
        threads=threads,
    )
    source = {"dataset": "fashion-mnist", "split": "train"}
    fit = LabelledData(as_inputs(fit_x), fit_y, {**source, "part": "fit"})
    held_out = LabelledData(as_inputs(images[held]), labels[held], {**source, "part": "holdout"})
    return model, fit, held_out


def train_demo_model(*, seed: int = 0, console=None):
    """The demo's shorter run: the same network, 2 epochs on 20,000 training images (about a
    minute on 2 cores)."""
    return train_fashion_model(epochs=2, fit_rows=20_000, seed=seed, console=console)
