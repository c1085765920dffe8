"""Real labelled data that ships with scikit-learn, and augmented copies of it.

``load_digits`` holds 1,797 real 8x8 handwritten digits (pixel values 0..16). Augmented copies
(a shift of up to one pixel, a small intensity change and Gaussian noise) turn them into tables
of millions of rows without downloading anything. Train and held-out splits are fixed so that a
table built from the held-out images never contains an image the model was trained on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

DIGITS_FEATURES = 64
DIGITS_CLASSES = 10


@dataclass
class LabelledData:
    """Feature rows (float32), their labels when known, and where they came from.

    ``batches``, for a model whose input is not one float matrix (texts: a tokenizer and
    several token inputs), turns rows into ONNX Runtime calls: ``batches(rows, batch_rows)``
    yields (row positions, feeds) per call; None: the rows are the model's one input, fed in
    consecutive chunks."""

    features: np.ndarray
    labels: np.ndarray | None
    source: dict = field(default_factory=dict)
    batches: Callable[[np.ndarray, int], Iterator[tuple[np.ndarray, dict]]] | None = None


_SPLIT_SEED = 20161  # fixed: the held-out split must be the same in every process


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # (n, 8, 8) float32, scaled to 0..1
    labels: np.ndarray  # (n,) int64

    @property
    def features(self) -> np.ndarray:
        return self.images.reshape(len(self.images), -1)


@lru_cache(maxsize=4)
def digits_splits(test_fraction: float = 0.25) -> tuple[Split, Split]:
    """Return (train, held_out) splits of scikit-learn's digits, stratified and fixed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, random_state=_SPLIT_SEED, stratify=labels
    )
    return Split(x_train, y_train), Split(x_test, y_test)


def augment(
    split: Split, n: int, rng: np.random.Generator, *, noise: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` augmented copies of images in ``split``: features (n, 64) float32, labels."""
    pick = rng.integers(0, len(split.images), size=n)
    images = split.images[pick]
    shifted = np.zeros_like(images)
    dy = rng.integers(-1, 2, size=n)
    dx = rng.integers(-1, 2, size=n)
    for sy in (-1, 0, 1):
        for sx in (-1, 0, 1):
            sel = (dy == sy) & (dx == sx)
            if sel.any():
                shifted[sel] = _shift(images[sel], sy, sx)
    scale = rng.uniform(0.85, 1.15, size=(n, 1, 1)).astype(np.float32)
    shifted *= scale
    shifted += rng.normal(0.0, noise, size=shifted.shape).astype(np.float32)
    np.clip(shifted, 0.0, 1.0, out=shifted)
    return shifted.reshape(n, -1), split.labels[pick]


def _shift(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(images)
    h, w = images.shape[1:]
    src_y = slice(max(0, -dy), h - max(0, dy))
    dst_y = slice(max(0, dy), h - max(0, -dy))
    src_x = slice(max(0, -dx), w - max(0, dx))
    dst_x = slice(max(0, dx), w - max(0, -dx))
    out[:, dst_y, dst_x] = images[:, src_y, src_x]
    return out
