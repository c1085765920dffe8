"""The executor-side core both UDF paths share: bad-row policy, chunked ONNX Runtime calls, and
the model's outputs as numpy arrays. The pandas and the Arrow paths differ only in how a batch
arrives and how the result leaves, so they give bitwise identical predictions.

The model sees the good rows of one Arrow batch, in chunks of at most ``batch_size`` rows: the
model batch size is independent of the Arrow batch size (``spark.sql.execution.arrow.
maxRecordsPerBatch``). Dynamic int8 models quantize activations per call, so their outputs
depend slightly on which rows share a call; both paths form the calls identically.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from leanscore.compression.artifact import FeatureSpec, Manifest
from leanscore.udfs.batch import Batch
from leanscore.udfs.distribution import ModelSource
from leanscore.udfs.session_cache import SessionConfig, get_session

BadRowPolicy = Literal["fail", "flag"]
ERROR_FIELD = "error"


class BadRowError(ValueError):
    """A row could not be scored under the ``fail`` policy."""


def output_fields(manifest: Manifest, *, probabilities: bool = False) -> list[tuple[str, str]]:
    """The (name, Spark DDL type) fields of the result, from the manifest's task."""
    if manifest.task == "classification":
        fields = [("label", "bigint"), ("probability", "float")]
        if probabilities:
            fields.append(("probabilities", "array<float>"))
    elif manifest.task == "regression":
        fields = [("value", "float")]
    else:
        fields = [("embedding", "array<float>")]
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

    def columns(self, task: str, fields: list[str]) -> dict[str, np.ndarray]:
        """Output name -> values for the good rows (rows of ``out``), in field order."""
        out = self.out
        columns: dict[str, np.ndarray] = {}
        if task == "classification":
            label = out.argmax(axis=1)
            columns["label"] = label.astype(np.int64, copy=False)
            top = np.take_along_axis(out, label[:, None], axis=1)[:, 0]  # one pass, not a max
            columns["probability"] = top.astype(np.float32, copy=False)
            if "probabilities" in fields:
                columns["probabilities"] = out.astype(np.float32, copy=False)
        elif task == "regression":
            columns["value"] = out.reshape(len(out), -1)[:, 0].astype(np.float32, copy=False)
        else:
            columns["embedding"] = out.reshape(len(out), -1).astype(np.float32, copy=False)
        return columns


@dataclass(frozen=True)
class Scorer:
    """Everything a task needs to score, and nothing that holds a Spark object."""

    task: str
    features: FeatureSpec
    source: ModelSource
    config: SessionConfig
    batch_size: int
    bad_rows: BadRowPolicy
    fields: tuple[str, ...]

    @classmethod
    def build(
        cls,
        manifest: Manifest,
        source: ModelSource,
        config: SessionConfig,
        *,
        batch_size: int,
        bad_rows: BadRowPolicy,
        probabilities: bool,
    ) -> Scorer:
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive number of rows, got {batch_size}")
        if bad_rows not in ("fail", "flag"):
            raise ValueError(f"bad_rows must be 'fail' or 'flag', got {bad_rows!r}")
        fields = tuple(n for n, _ in output_fields(manifest, probabilities=probabilities))
        return cls(manifest.task, manifest.features, source, config, batch_size, bad_rows, fields)

    def session(self):
        session = get_session(self.source, self.config)
        return session, session.get_inputs()[0].name

    def score(self, session, input_name: str, batch: Batch, key_of: Callable[[int], str] | None):
        """Apply the bad-row policy, then run the model on the good rows."""
        any_bad = bool(batch.bad.any())
        if any_bad and self.bad_rows == "fail":
            i = int(np.flatnonzero(batch.bad)[0])
            where = f"row with key {key_of(i)!r}" if key_of is not None else f"row {i} of a batch"
            raise BadRowError(
                f"{where}: {batch.reasons[i]}; fix the input or score with bad_rows='flag' "
                "to get a null prediction and an error column instead"
            )
        matrix = batch.matrix[~batch.bad] if any_bad else batch.matrix
        return Scored(self.run(session, input_name, matrix), batch)

    def run(self, session, input_name: str, matrix: np.ndarray) -> np.ndarray:
        if len(matrix) == 0:
            return np.zeros((0, 1), dtype=np.float32)
        if len(matrix) <= self.batch_size:
            return session.run(None, {input_name: matrix})[0]
        parts = [
            session.run(None, {input_name: matrix[i : i + self.batch_size]})[0]
            for i in range(0, len(matrix), self.batch_size)
        ]
        return np.concatenate(parts)
