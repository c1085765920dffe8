"""The executor side of shadow fidelity: a deterministic sample of each batch's rows, scored
again by the reference model (the model the compressed one replaced) in the same task, from
the same Arrow batch, and compared with the compressed model's outputs.

The sample is a hash of the row's key columns mixed with a seed taken from the run date, so a
rerun of a date shadows the same rows and a row's membership depends on that row alone (never
on its batch, its task or the number of cores). Per shadowed row the task writes a comparison
(class agreement and probability difference, cosine, or relative error) into extra columns the
nightly job aggregates while it writes and then drops; per batch, on its first row, it writes
how many rows had each feature outside the calibrated range and the seconds the shadow cost.
Nothing here touches Spark: ``leanscore.jobs.shadow`` plans, aggregates and judges.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from leanscore.udfs.kernel import Scored, Scorer

SHADOW_PREFIX = "__shadow_"  # the comparison columns: aggregated while writing, never written
METRIC = "__shadow_metric"  # agreement (0/1), cosine or relative error; null: not shadowed
PROBABILITY_DIFF = "__shadow_probability_diff"  # classification only
REFERENCE_LABEL = "__shadow_reference_label"  # classification only
OUT_OF_RANGE = "__shadow_out_of_range"  # per-feature counts, on each batch's first row
SECONDS = "__shadow_seconds"  # the batch's shadow time, on its first row


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


def shadow_fields(task: str, n_features: int) -> list[tuple[str, pa.DataType]]:
    """The extra columns a shadowed scoring writes for ``task`` (``n_features``: how many
    features have a calibrated range; 0: none)."""
    fields = [(METRIC, pa.float64())]
    if task == "classification":
        fields += [(PROBABILITY_DIFF, pa.float64()), (REFERENCE_LABEL, pa.int64())]
    if n_features:
        fields.append((OUT_OF_RANGE, pa.list_(pa.int64())))
    return [*fields, (SECONDS, pa.float64())]


def compare(task: str, ours: np.ndarray, theirs: np.ndarray) -> dict[str, np.ndarray]:
    """Per-row comparison of the compressed outputs ``ours`` with the reference's ``theirs``
    (result rows of the same inputs): classification ``METRIC`` 1.0 when the classes agree,
    ``PROBABILITY_DIFF`` the largest absolute difference of a class probability, and the
    reference's class; embedding the cosine; regression the absolute error relative to the
    reference's value (to 1 where that value is below 1 in magnitude, so near-zero targets do
    not explode it)."""
    a = ours.reshape(len(ours), -1).astype(np.float64)
    b = theirs.reshape(len(theirs), -1).astype(np.float64)
    if task == "classification":
        label = b.argmax(axis=1)
        return {
            METRIC: (a.argmax(axis=1) == label).astype(np.float64),
            PROBABILITY_DIFF: np.abs(a - b).max(axis=1),
            REFERENCE_LABEL: label.astype(np.int64),
        }
    if task == "embedding":
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        cosine = (a * b).sum(axis=1) / np.where(norms > 0, norms, 1.0)
        return {METRIC: np.where(norms > 0, cosine, 0.0)}
    return {METRIC: np.abs(a[:, 0] - b[:, 0]) / np.maximum(np.abs(b[:, 0]), 1.0)}


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
        return shadow_fields(self.task, 0 if self.allowed is None else len(self.allowed[0]))

    def session(self):
        return self.reference.session()

    def columns(
        self, rb: pa.RecordBatch, refs: list[str], scored: Scored, ref_session
    ) -> list[pa.Array]:
        """The shadow columns of one scored batch: ``rb`` as it arrived (features under
        ``refs``), ``scored`` the compressed model's result for it."""
        started = time.perf_counter()
        n = rb.num_rows
        values = {name: np.full(n, np.nan) for name, _ in self.fields if name != OUT_OF_RANGE}
        shadowed = np.zeros(n, dtype=bool)
        keys = rb.select(list(self.key_columns))
        rows = np.flatnonzero(sample_mask(keys, self.fraction, self.seed))
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
            for name, column in compared.items():
                values[name][picked] = column
            shadowed[picked] = True
        arrays = []
        for name, dtype in self.fields:
            if name == OUT_OF_RANGE:
                arrays.append(self._range_counts(scored, n))
            elif name == SECONDS:
                arrays.append(_first_row(time.perf_counter() - started, n, dtype))
            else:
                column = values[name]
                if dtype == pa.int64():
                    column = np.where(shadowed, column, 0).astype(np.int64)
                arrays.append(pa.array(column, type=dtype, mask=~shadowed))
        return arrays

    def _range_counts(self, scored: Scored, n: int) -> pa.Array:
        """Per feature, how many rows of the batch lie outside the compressed model's allowed
        range (what the guard sees), on the batch's first row."""
        low, high = self.allowed
        matrix = scored.batch.matrix
        counts = np.zeros(len(low), dtype=np.int64)
        flat = matrix.reshape(len(matrix), -1)
        # Column extremes first: one cheap pass when every row is in range, the usual case.
        # NaN compares False: a null or NaN feature is not counted.
        inside = len(flat) == 0 or (
            (flat.min(axis=0) >= low).all() and (flat.max(axis=0) <= high).all()
        )
        if n and not inside:
            counts = ((flat < low) | (flat > high)).sum(axis=0).astype(np.int64)
        return _first_row(counts.tolist(), n, pa.list_(pa.int64()))


def _first_row(value, n: int, dtype: pa.DataType) -> pa.Array:
    return pa.array([value] + [None] * (n - 1), type=dtype) if n else pa.nulls(0, dtype)
