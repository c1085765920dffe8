"""The executor side of shadow fidelity: a deterministic sample of each batch's rows, scored
again by the reference model (the model the compressed one replaced) in the same task, from
the same Arrow batch, and compared with the compressed model's outputs.

The sample is a hash of the row's key columns mixed with a seed taken from the run date, so a
rerun of a date shadows the same rows and a row's membership depends on that row alone (never
on its batch, its task or the number of cores). Each batch's comparisons (class agreement and
probability difference, cosine, or relative error) are summed in the task into one summary on
the batch's first row (null on the others), with the per-class counts, how many rows had each
feature outside the calibrated range and the seconds the shadow cost. The nightly job collects
those summaries while it writes and then drops the column: Spark evaluates one aggregate per
row, not one per metric, class and feature (about 90 for a 64-feature, 10-class model, which
cost the write about 2 s a million rows). Embeddings also carry each shadowed row's cosine, for
its 1st percentile. Nothing here touches Spark: ``leanscore.jobs.shadow`` plans, aggregates and
judges.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from leanscore.udfs.kernel import Scored, Scorer

SHADOW_PREFIX = "__shadow_"  # the comparison columns: aggregated while writing, never written
SUMMARY = "__shadow_summary"  # the batch's sums (SUMMARY_TYPE), on its first row
COSINE = "__shadow_cosine"  # embeddings only: each shadowed row's cosine; null: not shadowed
SUMMARY_TYPE = pa.struct(
    [
        ("n", pa.int64()),  # rows both models scored
        ("sum", pa.float64()),  # of the metric: agreement (0/1), cosine or relative error
        ("sum_sq", pa.float64()),
        ("diff_sum", pa.float64()),  # classification: the largest probability difference
        ("diff_sum_sq", pa.float64()),
        ("seconds", pa.float64()),  # the shadow's time in this batch
        ("class_n", pa.list_(pa.int64())),  # rows per class the reference predicted
        ("class_agree", pa.list_(pa.float64())),  # agreeing rows per such class
        ("out_of_range", pa.list_(pa.int64())),  # rows per feature outside the allowed range
    ]
)


def date_seed(run_date: str) -> int:
    """A 64-bit seed from the run date (its ISO text): the same date, the same sample."""
    return int.from_bytes(hashlib.sha256(run_date.encode()).digest()[:8], "little")


def sample_mask(keys: pa.RecordBatch | pa.Table, fraction: float, seed: int) -> np.ndarray:
    """Which rows are shadowed: a 64-bit hash of each row's key values (pandas' stable
    ``hash_array`` per column, the same in every process and version of the job), mixed with
    the run date's seed, compared with ``fraction`` of the hash space. Works on the Arrow
    columns as numpy (no pandas frame per batch)."""
    from pandas.util import hash_array

    if keys.num_rows == 0:
        return np.zeros(0, dtype=bool)
    hashed = np.full(keys.num_rows, np.uint64(seed), dtype=np.uint64)
    for column in keys.columns:
        values = column.to_numpy(zero_copy_only=False)
        hashed = hash_array(hashed ^ hash_array(values))
    limit = min(int(fraction * 2.0**64), 2**64 - 1)
    return hashed < np.uint64(limit) if fraction < 1 else np.ones(keys.num_rows, dtype=bool)


def shadow_fields(task: str) -> list[tuple[str, pa.DataType]]:
    """The extra columns a shadowed scoring of ``task`` writes."""
    return [(SUMMARY, SUMMARY_TYPE)] + ([(COSINE, pa.float64())] if task == "embedding" else [])


def compare(task: str, ours: np.ndarray, theirs: np.ndarray) -> dict[str, np.ndarray]:
    """Per-row comparison of the compressed outputs ``ours`` with the reference's ``theirs``
    (result rows of the same inputs): classification ``metric`` 1.0 when the classes agree,
    ``diff`` the largest absolute difference of a class probability, and ``label`` the
    reference's class; embedding the cosine; regression the absolute error relative to the
    reference's value (to 1 where that value is below 1 in magnitude, so near-zero targets do
    not explode it)."""
    a = ours.reshape(len(ours), -1).astype(np.float64)
    b = theirs.reshape(len(theirs), -1).astype(np.float64)
    if task == "classification":
        label = b.argmax(axis=1)
        return {
            "metric": (a.argmax(axis=1) == label).astype(np.float64),
            "diff": np.abs(a - b).max(axis=1),
            "label": label.astype(np.int64),
        }
    if task == "embedding":
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        cosine = (a * b).sum(axis=1) / np.where(norms > 0, norms, 1.0)
        return {"metric": np.where(norms > 0, cosine, 0.0)}
    return {"metric": np.abs(a[:, 0] - b[:, 0]) / np.maximum(np.abs(b[:, 0]), 1.0)}


@dataclass(frozen=True)
class ShadowScorer:
    """The reference's ``Scorer`` (flagging, never failing, on a row it cannot score), the
    sample's fraction and seed, and the compressed model's range for the per-feature counts."""

    reference: Scorer
    fraction: float
    seed: int
    key_columns: tuple[str, ...]
    task: str
    # the compressed model's allowed (low, high) per feature; None: no range recorded
    allowed: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def fields(self) -> list[tuple[str, pa.DataType]]:
        return shadow_fields(self.task)

    def session(self):
        return self.reference.session()

    def columns(
        self, rb: pa.RecordBatch, refs: list[str], scored: Scored, ref_session
    ) -> list[pa.Array]:
        """The shadow columns of one scored batch: ``rb`` as it arrived (features under
        ``refs``), ``scored`` the compressed model's result for it."""
        started = time.perf_counter()
        n = rb.num_rows
        rows = np.flatnonzero(
            sample_mask(rb.select(list(self.key_columns)), self.fraction, self.seed)
        )
        compared: dict[str, np.ndarray] = {}
        picked = rows[:0]
        if len(rows):
            session, input_name = ref_session
            sub = [rb.column(r).take(pa.array(rows)) for r in refs]
            theirs = self.reference.score(
                session, input_name, self.reference.family.from_arrow(sub), None
            )
            both = scored.good[rows] & theirs.good  # rows both models scored
            ours_at = np.cumsum(scored.good) - 1  # batch position -> row of scored.out
            theirs_at = np.cumsum(theirs.good) - 1
            picked = rows[both]
            compared = compare(
                self.task, scored.out[ours_at[picked]], theirs.out[theirs_at[np.flatnonzero(both)]]
            )
        summary = self._summary(compared, scored)
        summary["seconds"] = time.perf_counter() - started
        arrays = [_first_row(summary, n, SUMMARY_TYPE)]
        if self.task == "embedding":
            cosine = np.full(n, np.nan)
            shadowed = np.zeros(n, dtype=bool)
            if len(picked):
                cosine[picked], shadowed[picked] = compared["metric"], True
            arrays.append(pa.array(cosine, type=pa.float64(), mask=~shadowed))
        return arrays

    def _summary(self, compared: dict[str, np.ndarray], scored: Scored) -> dict:
        """The batch's sums of the comparisons (``compare``'s columns; empty: none shadowed)."""
        metric = compared.get("metric", np.zeros(0))
        diff = compared.get("diff", np.zeros(0))
        summary = {
            "n": len(metric),
            "sum": float(metric.sum()),
            "sum_sq": float((metric * metric).sum()),
            "diff_sum": float(diff.sum()),
            "diff_sum_sq": float((diff * diff).sum()),
            "class_n": [],
            "class_agree": [],
            "out_of_range": self._range_counts(scored),
        }
        if "label" in compared:
            label = compared["label"]
            summary["class_n"] = np.bincount(label).tolist()
            summary["class_agree"] = np.bincount(label, weights=metric).tolist()
        return summary

    def _range_counts(self, scored: Scored) -> list[int]:
        """Per feature, how many rows of the batch lie outside the compressed model's allowed
        range (what the guard sees); empty when the artifact records no range."""
        if self.allowed is None:
            return []
        low, high = self.allowed
        flat = scored.batch.matrix.reshape(len(scored.batch.matrix), -1)
        # Column extremes first: one cheap pass when every row is in range, the usual case.
        # NaN compares False: a null or NaN feature is not counted.
        inside = len(flat) == 0 or (
            (flat.min(axis=0) >= low).all() and (flat.max(axis=0) <= high).all()
        )
        if inside:
            return [0] * len(low)
        return ((flat < low) | (flat > high)).sum(axis=0).astype(np.int64).tolist()


def _first_row(value, n: int, dtype: pa.DataType) -> pa.Array:
    return pa.array([value] + [None] * (n - 1), type=dtype) if n else pa.nulls(0, dtype)
