"""Generated labelled rows for a wide tabular classifier: the workload where the model dominates.

The digits MLP is so cheap that reading the table costs more than the model; the models teams
pay for are wider. No such table ships offline, so this module makes one, seeded and
deterministic: each of 10 classes is a mixture of Gaussian clusters in a 24-dimensional latent
space, and the numeric features (256 unless asked for another count) are a fixed random
nonlinear map of the latent point (``tanh(z @ mixing + bias)``) plus noise. Classes overlap (a
few percent of rows are ambiguous) and logistic regression on 8,192 rows reaches about 78% where
the wide MLP reaches about 95%: learnable, not trivial.

Rows are a pure function of ``(seed, split, row index)``: they are drawn in fixed blocks of
``BLOCK_ROWS``, each from its own random stream keyed by the split and the block, so any slice
of a split is the same whichever process, partition or chunking makes it. The splits use
different streams: ``train`` (training, distillation, calibration), ``evaluation`` (the rows
each recipe's accuracy gate and autotune decide on) and ``table`` (the bench's scoring table,
which no recipe ever sees). The class structure (``_world``) is shared by every split.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import numpy as np
from leanscore.compression.data import LabelledData

WIDE_FEATURES = 256
WIDE_CLASSES = 10
LATENT = 24
CLUSTERS_PER_CLASS = 4
CLUSTER_SPREAD = 1.1  # std of the cluster centres in latent units; the noise around them is 1
FEATURE_NOISE = 0.3
BLOCK_ROWS = 4096

Split = Literal["train", "evaluation", "table"]
SPLIT_STREAMS: dict[str, int] = {"train": 1, "evaluation": 2, "table": 3}


@lru_cache(maxsize=8)
def _world(seed: int, features: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The class structure: cluster centres (classes x clusters x latent), mixing, bias."""
    rng = np.random.default_rng([seed, 0])
    centres = rng.normal(0.0, CLUSTER_SPREAD, (WIDE_CLASSES, CLUSTERS_PER_CLASS, LATENT))
    mixing = rng.normal(0.0, 1.5 / np.sqrt(LATENT), (LATENT, features))
    bias = rng.normal(0.0, 0.5, features)
    return centres, mixing, bias


@lru_cache(maxsize=4)  # 4 MB a block; consecutive slices share one
def _block(seed: int, split: str, block: int, features: int) -> tuple[np.ndarray, np.ndarray]:
    centres, mixing, bias = _world(seed, features)
    rng = np.random.default_rng([seed, SPLIT_STREAMS[split], block])
    labels = rng.integers(0, WIDE_CLASSES, BLOCK_ROWS)
    cluster = rng.integers(0, CLUSTERS_PER_CLASS, BLOCK_ROWS)
    latent = centres[labels, cluster] + rng.normal(0.0, 1.0, (BLOCK_ROWS, LATENT))
    x = np.tanh(latent @ mixing + bias)
    x += FEATURE_NOISE * rng.normal(0.0, 1.0, x.shape)
    x = x.astype(np.float32)
    x.flags.writeable = False  # cached: callers get copies of slices
    return x, labels.astype(np.int64)


def wide_rows(
    split: Split, start: int, stop: int, *, seed: int = 0, features: int = WIDE_FEATURES
) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``start..stop`` of ``split``: features (n, ``features``) float32 and labels (n,)
    int64."""
    if split not in SPLIT_STREAMS:
        raise ValueError(f"split must be one of {sorted(SPLIT_STREAMS)}, got {split!r}")
    if not 0 <= start <= stop:
        raise ValueError(f"rows {start}..{stop}: need 0 <= start <= stop")
    if features < 1:
        raise ValueError(f"features must be positive, got {features}")
    xs, labels = [], []
    for block in range(start // BLOCK_ROWS, -(-stop // BLOCK_ROWS)):
        x, y = _block(seed, split, block, features)
        lo = max(start - block * BLOCK_ROWS, 0)
        hi = min(stop - block * BLOCK_ROWS, BLOCK_ROWS)
        xs.append(x[lo:hi])
        labels.append(y[lo:hi])
    if not xs:
        return np.empty((0, features), np.float32), np.empty(0, np.int64)
    return np.concatenate(xs), np.concatenate(labels)


def wide_sample(
    split: Split, rows: int, *, seed: int = 0, features: int = WIDE_FEATURES
) -> LabelledData:
    """The first ``rows`` rows of ``split`` with their lineage; every row is an independent
    draw, so all of them count as distinct examples for an accuracy interval."""
    x, labels = wide_rows(split, 0, rows, seed=seed, features=features)
    source = {
        "dataset": "leanscore.bench.wide_data",
        "split": split,
        "seed": seed,
        "features": features,
        "distinct_examples": rows,
    }
    return LabelledData(x, labels, source)
