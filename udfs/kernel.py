"""The executor-side core every scoring path shares (pandas, Arrow, scan): the row policies,
chunked ONNX Runtime calls, and the model's outputs as numpy arrays. The paths differ only in
how a batch arrives and how the result leaves, so they give bitwise identical predictions.

The model sees the good rows of one Arrow batch, in chunks of at most ``batch_size`` rows: the
model batch size is independent of the Arrow batch size (``spark.sql.execution.arrow.
maxRecordsPerBatch``).

A row's prediction must not depend on the other rows of its batch. Dynamic int8 models
(``manifest.batch_dependent``) quantize activations with a scale taken from the whole call, so
one extreme row coarsens every other row's activations (one row of 10,000 among real digits
changed most of their classes; 3e38 turned every output into NaN). Rows outside the calibrated
range (``manifest.input_range``, widened by ``range_margin``) therefore follow
``out_of_range``: ``score_alone`` (the default) scores each such row in a call of its own,
``flag`` gives it a null prediction and the reason, ``fail`` stops naming it. A model whose
outputs do not depend on the batch (float32, fp16, static QDQ int8) gives an outlier the same
prediction alone or not, so ``score_alone`` costs it nothing. Whatever the policy, an output
that is NaN or infinite is never written as a prediction: it is flagged (or fails the job
under ``bad_rows='fail'``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from leanscore.compression.artifact import FeatureSpec, Manifest
from leanscore.compression.errors import LeanscoreError
from leanscore.compression.tabular_inputs import Batch
from leanscore.udfs.distribution import ModelSource
from leanscore.udfs.families import Family, family_for
from leanscore.udfs.options import (
    DEFAULT_RANGE_MARGIN,
    BadRowPolicy,
    OutOfRangePolicy,
    RowPolicy,
    ScoringOptions,
    row_policy,
)
from leanscore.udfs.session_cache import SessionConfig, get_session

__all__ = [
    "DEFAULT_RANGE_MARGIN",
    "ERROR_FIELD",
    "BadRowError",
    "BadRowPolicy",
    "OutOfRangePolicy",
    "RowPolicy",
    "Scored",
    "Scorer",
    "ScoringOptions",
    "allowed_range",
    "output_fields",
    "row_policy",
]

ERROR_FIELD = "error"


class BadRowError(LeanscoreError, ValueError):
    """A row could not be scored under the ``fail`` policy."""


def allowed_range(
    manifest: Manifest, margin: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(low, high, widened low, widened high) per feature as float32, or None without a
    recorded range. Widened by ``margin`` times each feature's calibrated width."""
    recorded = manifest.input_range
    if recorded is None:
        return None
    low = np.asarray(recorded.low, dtype=np.float64)
    high = np.asarray(recorded.high, dtype=np.float64)
    width = high - low
    width = np.where(width > 0, width, np.maximum(1.0, np.abs(low)))
    return (
        low.astype(np.float32),
        high.astype(np.float32),
        (low - margin * width).astype(np.float32),
        (high + margin * width).astype(np.float32),
    )


def output_fields(manifest: Manifest, *, probabilities: bool = False) -> list[tuple[str, str]]:
    """The (name, Spark DDL type) fields of the result, from the manifest's family and task."""
    fields = family_for(manifest).output_fields(probabilities=probabilities)
    return [*fields, (ERROR_FIELD, "string")]


@dataclass
class Scored:
    """One batch's result: ``out`` holds the model output of the good rows only."""

    out: np.ndarray
    batch: Batch

    @property
    def n(self) -> int:
        return len(self.batch.bad)

    @property
    def good(self) -> np.ndarray:
        return ~self.batch.bad

    @property
    def any_bad(self) -> bool:
        return bool(self.batch.bad.any())


@dataclass(frozen=True)
class Scorer:
    """Everything a task needs to score, and nothing that holds a Spark object: the family,
    where the model comes from, ONNX Runtime's settings and the run's ``ScoringOptions``."""

    family: Family
    source: ModelSource
    config: SessionConfig
    options: ScoringOptions
    fields: tuple[str, ...]
    batch_dependent: bool = True
    # (calibrated low, high, allowed low, allowed high) per feature; None: no range recorded
    range: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
    # the reference model that scores the run's shadow sample: a leanscore.udfs.shadow.
    # ShadowScorer (which imports this module, so it is not named here); None: off
    shadow: Any = None

    @property
    def batch_size(self) -> int:
        return self.options.batch_size or self.family.default_batch_size

    @property
    def policy(self) -> RowPolicy:
        return self.options.policy

    @property
    def bad_rows(self) -> BadRowPolicy:
        return self.options.bad_rows

    @property
    def task(self) -> str:
        return self.family.manifest.task

    @property
    def features(self) -> FeatureSpec:
        return self.family.manifest.features

    def columns(self, scored: Scored) -> dict[str, np.ndarray]:
        """Output name -> values for the good rows of ``scored``, in field order."""
        return self.family.output_columns(scored.out, list(self.fields))

    @classmethod
    def build(
        cls,
        manifest: Manifest,
        source: ModelSource,
        config: SessionConfig,
        *,
        options: ScoringOptions | None = None,
        **settings,
    ) -> Scorer:
        """The scorer of ``manifest``'s model under ``options``, with any ``ScoringOptions``
        fields given as keywords (``batch_size=``, ``bad_rows=``, ``probabilities=``...) in
        their place."""
        options = ScoringOptions.of(options, **settings)
        family = family_for(manifest)
        family.configure(options)
        result = family.output_fields(probabilities=options.probabilities)
        fields = (*(name for name, _ in result), ERROR_FIELD)
        return cls(
            family,
            source,
            family.session_config(config),
            options,
            fields,
            batch_dependent=manifest.batch_dependent is not False,
            range=allowed_range(manifest, options.range_margin),
        )

    def session(self):
        session = get_session(self.source, self.config)
        return session, session.get_inputs()[0].name

    def score(self, session, input_name: str, batch: Batch, key_of: Callable[[int], str] | None):
        """Apply the row policies, run the model on the rows it scores, and flag (or fail on)
        rows whose output is not finite."""
        bad, reasons = batch.bad, batch.reasons
        if bad.any() and self.bad_rows == "fail":
            self._fail(int(np.flatnonzero(bad)[0]), reasons, key_of, "bad_rows")
        rows = np.flatnonzero(~bad)  # batch positions of the rows the model sees
        matrix = batch.matrix[rows] if len(rows) < len(bad) else batch.matrix
        outside = self._outside(matrix)
        alone = None
        if outside is not None and self.options.out_of_range == "score_alone":
            alone = outside  # each in a call of its own, not flagged
        elif outside is not None:
            flagged = rows[outside]
            reasons = list(reasons)
            for pos, i in zip(np.flatnonzero(outside), flagged, strict=True):
                reasons[i] = self._range_reason(matrix[pos])
            if self.options.out_of_range == "fail":
                self._fail(int(flagged[0]), reasons, key_of, "out_of_range")
            bad = bad.copy()
            bad[flagged] = True
            rows, matrix = rows[~outside], matrix[~outside]
        out = self.run_isolated(session, input_name, matrix, alone)
        flat = out.reshape(len(out), -1) if len(out) else out
        finite = np.isfinite(flat).all(axis=1)
        if not finite.all():
            broken = np.flatnonzero(~finite)
            reasons = list(reasons)
            for pos in broken:
                value = flat[pos]
                first = value[~np.isfinite(value)][0]
                reasons[rows[pos]] = (
                    f"the model's output is {first} (not finite) for this row; "
                    f"{self.family.nonfinite_hint()}"
                )
            if self.bad_rows == "fail":
                self._fail(int(rows[broken[0]]), reasons, key_of, "bad_rows")
            bad = bad.copy()
            bad[rows[broken]] = True
            out = out[finite]
        if bad is batch.bad and reasons is batch.reasons:
            return Scored(out, batch)
        return Scored(out, Batch(batch.matrix, bad, reasons))

    def _outside(self, matrix: np.ndarray) -> np.ndarray | None:
        """Which rows of ``matrix`` hold a feature outside the allowed range; None when none
        does, or when it does not matter (no range recorded, or ``score_alone`` on a model
        whose rows do not depend on each other: the row gets the same prediction alone)."""
        if self.range is None or len(matrix) == 0:
            return None
        if self.options.out_of_range == "score_alone" and not self.batch_dependent:
            return None
        _, _, low, high = self.range
        matrix = matrix.reshape(len(matrix), -1)
        # Column extremes first: one cheap pass when every row is in range, the usual case.
        if (matrix.min(axis=0) >= low).all() and (matrix.max(axis=0) <= high).all():
            return None
        return ((matrix < low) | (matrix > high)).any(axis=1)

    def _range_reason(self, row: np.ndarray) -> str:
        calibrated_low, calibrated_high, low, high = self.range
        row = row.reshape(-1)
        j = int(np.flatnonzero((row < low) | (row > high))[0])
        name = self.family.element_name(j)
        return (
            f"{name} is {float(row[j])!r}, outside the calibrated range "
            f"[{float(calibrated_low[j]):g}, {float(calibrated_high[j]):g}] widened by "
            f"range_margin {self.options.range_margin:g} to [{float(low[j]):g}, {float(high[j]):g}]"
        )

    def _fail(self, i: int, reasons, key_of, option: str):
        where = f"row with key {key_of(i)!r}" if key_of is not None else f"row {i} of a batch"
        if option == "out_of_range":
            fix = (
                "fix the input, or score with out_of_range='score_alone' (the row in a call of "
                "its own) or 'flag' (a null prediction and the reason)"
            )
        else:
            fix = (
                "fix the input or score with bad_rows='flag' to get a null prediction and an "
                "error column instead"
            )
        raise BadRowError(f"{where}: {reasons[i]}; {fix}")

    def run_isolated(
        self, session, input_name: str, matrix: np.ndarray, alone: np.ndarray | None
    ) -> np.ndarray:
        """The model's outputs for ``matrix``, the rows marked ``alone`` each in a call of its
        own and the others together, in the order of ``matrix``."""
        if alone is None:
            return self.run(session, input_name, matrix)
        together = self.run(session, input_name, matrix[~alone])
        singles = [self.run(session, input_name, matrix[i : i + 1]) for i in np.flatnonzero(alone)]
        out = np.empty((len(matrix), *singles[0].shape[1:]), dtype=singles[0].dtype)
        out[~alone] = together
        out[alone] = np.concatenate(singles)
        return out

    def run(self, session, input_name: str, matrix: np.ndarray) -> np.ndarray:
        if len(matrix) == 0:
            return np.zeros((0, 1), dtype=np.float32)
        result = self.family.result_output()
        wanted = None if result is None else [result]
        feeds = self.family.feeds
        groups = self.family.call_groups(matrix, self.batch_size)
        if groups is not None:
            out = None
            for idx in groups:
                part = session.run(wanted, feeds(input_name, matrix[idx]))[0]
                if out is None:
                    out = np.empty((len(matrix), *part.shape[1:]), dtype=part.dtype)
                out[idx] = part
            return out
        if len(matrix) <= self.batch_size:
            return session.run(wanted, feeds(input_name, matrix))[0]
        parts = [
            session.run(wanted, feeds(input_name, matrix[i : i + self.batch_size]))[0]
            for i in range(0, len(matrix), self.batch_size)
        ]
        return np.concatenate(parts)
