"""Fidelity of an embedding model to its fp32 original on real text."""

from __future__ import annotations

import numpy as np


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def neighbours(embeddings: np.ndarray, k: int) -> np.ndarray:
    """Indices of each row's ``k`` nearest rows by cosine, the row itself excluded."""
    e = _normalise(embeddings)
    sims = e @ e.T
    np.fill_diagonal(sims, -np.inf)
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def embedding_fidelity(reference: np.ndarray, candidate: np.ndarray, *, k: int = 10) -> dict:
    """Cosine to the reference per row (mean, 1st percentile, minimum) and the mean overlap of
    the top-``k`` nearest-neighbour sets (1.0: every row keeps the same neighbours)."""
    if reference.shape != candidate.shape:
        raise ValueError(f"embedding shapes differ: {reference.shape} vs {candidate.shape}")
    if len(reference) <= k:
        raise ValueError(f"top-{k} overlap needs more than {k} rows, got {len(reference)}")
    cos = (_normalise(reference) * _normalise(candidate)).sum(axis=1)
    ref_nn, cand_nn = neighbours(reference, k), neighbours(candidate, k)
    overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(ref_nn, cand_nn, strict=True)])
    return {
        "rows": int(len(cos)),
        "cosine_mean": round(float(cos.mean()), 5),
        "cosine_p1": round(float(np.percentile(cos, 1)), 5),
        "cosine_min": round(float(cos.min()), 5),
        f"top{k}_overlap": round(float(overlap), 4),
    }
