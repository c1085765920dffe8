"""The public scoring API: a pandas UDF built from an artifact, and a DataFrame-level helper.

    from udfs import model_udf, score_dataframe
    predict = model_udf("/dbfs/models/digits")
    df.withColumn("prediction", predict(*feature_cols))          # a struct column
    score_dataframe(df, "/dbfs/models/digits", key_columns=["id"])  # flat output columns

The model's bytes reach the executors once (see ``udfs.distribution``); each Python worker
builds one ONNX Runtime session and keeps it (``udfs.session_cache``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Literal

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf

from compression.artifact import Artifact, Manifest
from udfs.batch import Batch, from_array, from_columns
from udfs.distribution import DEFAULT_PATH_THRESHOLD_BYTES, ModelSource, distribute
from udfs.session_cache import SessionConfig, get_session

BadRowPolicy = Literal["fail", "flag"]
ERROR_FIELD = "error"


class BadRowError(ValueError):
    """A row could not be scored under the ``fail`` policy."""


def output_fields(manifest: Manifest, *, probabilities: bool = False) -> list[tuple[str, str]]:
    """The (name, Spark DDL type) fields of the UDF's struct result, from the manifest's task."""
    if manifest.task == "classification":
        fields = [("label", "bigint"), ("probability", "float")]
        if probabilities:
            fields.append(("probabilities", "array<float>"))
    elif manifest.task == "regression":
        fields = [("value", "float")]
    else:
        fields = [("embedding", "array<float>")]
    return [*fields, (ERROR_FIELD, "string")]


def _ddl(fields: list[tuple[str, str]]) -> str:
    return "struct<" + ",".join(f"{n}:{t}" for n, t in fields) + ">"


def task_cpus(spark: SparkSession) -> int:
    try:
        return max(1, int(spark.conf.get("spark.task.cpus", "1")))
    except Exception:  # Connect servers may refuse to show some confs
        return 1


def _as_artifact(artifact: Artifact | str | os.PathLike[str]) -> Artifact:
    return artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)


class ModelUDF:
    """Callable returned by ``model_udf``: ``predict(*feature_cols, key=None) -> Column``."""

    def __init__(
        self,
        artifact: Artifact,
        source: ModelSource,
        config: SessionConfig,
        *,
        batch_size: int,
        bad_rows: BadRowPolicy,
        probabilities: bool,
    ):
        self.artifact = artifact
        self.fields = output_fields(artifact.manifest, probabilities=probabilities)
        self.return_type = _ddl(self.fields)
        features = artifact.manifest.features
        self._expected = features.columns or [features.array_column]
        self._kernel = _Kernel(
            artifact.manifest,
            source,
            config,
            batch_size=batch_size,
            bad_rows=bad_rows,
            fields=[n for n, _ in self.fields],
        )
        self._udfs: dict[bool, object] = {}

    def __call__(self, *cols: Column | str, key: Column | str | None = None) -> Column:
        if len(cols) != len(self._expected):
            raise ValueError(
                f"Model {self.artifact.manifest.name!r} expected {len(self._expected)} input "
                f"columns ({_preview(self._expected)}), but received {len(cols)} columns"
            )
        with_key = key is not None
        if with_key not in self._udfs:
            self._udfs[with_key] = pandas_udf(self._kernel.iterator(with_key), self.return_type)
        args = [F.col(c) if isinstance(c, str) else c for c in cols]
        if with_key:
            args.append((F.col(key) if isinstance(key, str) else key).cast("string"))
        return self._udfs[with_key](*args)


def model_udf(
    artifact: Artifact | str | os.PathLike[str],
    *,
    spark: SparkSession | None = None,
    batch_size: int = 4096,
    bad_rows: BadRowPolicy = "fail",
    probabilities: bool = False,
    session_config: SessionConfig | None = None,
    path_threshold_bytes: int = DEFAULT_PATH_THRESHOLD_BYTES,
) -> ModelUDF:
    """Build a scoring UDF for ``artifact`` (a path or a loaded ``Artifact``)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive number of rows, got {batch_size}")
    if bad_rows not in ("fail", "flag"):
        raise ValueError(f"bad_rows must be 'fail' or 'flag', got {bad_rows!r}")
    artifact = _as_artifact(artifact)
    spark = spark or SparkSession.getActiveSession()
    if spark is None:
        raise RuntimeError("model_udf needs an active Spark session; start one first")
    source = distribute(spark, artifact, path_threshold_bytes=path_threshold_bytes)
    config = session_config or SessionConfig(intra_op_threads=task_cpus(spark))
    return ModelUDF(
        artifact,
        source,
        config,
        batch_size=batch_size,
        bad_rows=bad_rows,
        probabilities=probabilities,
    )


class _Kernel:
    """What runs on the executors. Kept free of Spark objects so it pickles small."""

    def __init__(
        self,
        manifest: Manifest,
        source: ModelSource,
        config: SessionConfig,
        *,
        batch_size: int,
        bad_rows: BadRowPolicy,
        fields: list[str],
    ):
        self.task = manifest.task
        self.features = manifest.features
        self.source = source
        self.config = config
        self.batch_size = batch_size
        self.bad_rows = bad_rows
        self.fields = fields

    def iterator(self, with_key: bool):
        kernel = self

        def predict(batches: Iterator[tuple[pd.Series, ...]]) -> Iterator[pd.DataFrame]:
            session = get_session(kernel.source, kernel.config)
            input_name = session.get_inputs()[0].name
            for cols in batches:
                if isinstance(cols, pd.Series):
                    cols = (cols,)
                keys = cols[-1] if with_key else None
                feats = cols[:-1] if with_key else cols
                yield kernel.score(session, input_name, kernel.to_batch(feats), keys)

        return predict

    def to_batch(self, feats) -> Batch:
        spec = self.features
        if spec.array_column is not None:
            return from_array(feats[0], spec.array_column, spec.size)
        return from_columns(list(feats), spec.columns)

    def score(self, session, input_name: str, batch: Batch, keys: pd.Series | None) -> pd.DataFrame:
        n = len(batch.bad)
        any_bad = bool(batch.bad.any())
        if any_bad and self.bad_rows == "fail":
            i = int(np.flatnonzero(batch.bad)[0])
            where = f"row with key {keys.iloc[i]!r}" if keys is not None else f"row {i} of a batch"
            raise BadRowError(
                f"{where}: {batch.reasons[i]}; fix the input or score with bad_rows='flag' "
                "to get a null prediction and an error column instead"
            )
        matrix = batch.matrix[~batch.bad] if any_bad else batch.matrix
        out = self.run(session, input_name, matrix)
        return self.to_frame(out, batch, n, any_bad)

    def run(self, session, input_name: str, matrix: np.ndarray) -> np.ndarray:
        if len(matrix) <= self.batch_size:
            return session.run(None, {input_name: matrix})[0]
        parts = [
            session.run(None, {input_name: matrix[i : i + self.batch_size]})[0]
            for i in range(0, len(matrix), self.batch_size)
        ]
        return np.concatenate(parts)

    def to_frame(self, out: np.ndarray, batch: Batch, n: int, any_bad: bool) -> pd.DataFrame:
        good = ~batch.bad
        columns: dict[str, object] = {}
        if self.task == "classification":
            columns["label"] = _nullable(out.argmax(axis=1), good, any_bad, "int")
            columns["probability"] = _nullable(out.max(axis=1), good, any_bad, "float")
            if "probabilities" in self.fields:
                columns["probabilities"] = _rows(out, good, any_bad, n)
        elif self.task == "regression":
            columns["value"] = _nullable(out.reshape(len(out), -1)[:, 0], good, any_bad, "float")
        else:
            columns["embedding"] = _rows(out, good, any_bad, n)
        columns[ERROR_FIELD] = pd.Series(batch.reasons, dtype=object) if any_bad else [None] * n
        return pd.DataFrame(columns)


def _nullable(values: np.ndarray, good: np.ndarray, any_bad: bool, kind: str):
    """Values with nulls where rows were flagged (a masked pandas array becomes Arrow nulls)."""
    if not any_bad:
        return values
    dtype = np.int64 if kind == "int" else np.float32
    full = np.zeros(len(good), dtype=dtype)
    full[good] = values
    array_type = pd.arrays.IntegerArray if kind == "int" else pd.arrays.FloatingArray
    return array_type(full, ~good)


def _rows(out: np.ndarray, good: np.ndarray, any_bad: bool, n: int) -> list:
    out = out.astype(np.float32, copy=False)
    if not any_bad:
        return list(out)
    rows: list = [None] * n
    for pos, i in enumerate(np.flatnonzero(good)):
        rows[i] = out[pos]
    return rows


def _preview(names: list[str]) -> str:
    return ", ".join(names) if len(names) <= 4 else f"{names[0]}, {names[1]}, ..., {names[-1]}"


def key_expression(key_columns: list[str]) -> Column:
    """``id=7,day=2026-01-01``: names the row in error messages."""
    parts = [
        F.concat(F.lit(f"{k}="), F.coalesce(F.col(k).cast("string"), F.lit("null")))
        for k in key_columns
    ]
    return parts[0] if len(parts) == 1 else F.concat_ws(",", *parts)


def check_features(df: DataFrame, manifest: Manifest) -> None:
    """Fail up front, naming the column, when ``df`` does not carry what the model reads."""
    from pyspark.sql.types import ArrayType, NumericType

    spec = manifest.features
    by_name = {f.name: f.dataType for f in df.schema.fields}
    wanted = spec.columns or [spec.array_column]
    missing = [c for c in wanted if c not in by_name]
    if missing:
        raise ValueError(
            f"feature column {missing[0]!r} is missing from the input ({len(missing)} of "
            f"{len(wanted)} missing); the model {manifest.name!r} reads {_preview(wanted)}"
        )
    for name in wanted:
        dtype = by_name[name]
        if spec.array_column is not None:
            ok = (isinstance(dtype, ArrayType) and isinstance(dtype.elementType, NumericType)) or (
                dtype.typeName() == "vector" or "Vector" in type(dtype).__name__
            )
            expect = "array<float>, array<double> or an ML Vector"
        else:
            ok = isinstance(dtype, NumericType)
            expect = "a numeric type"
        if not ok:
            raise TypeError(
                f"feature column {name!r} has type {dtype.simpleString()}, the model needs "
                f"{expect}; cast it before scoring"
            )


def score_dataframe(
    df: DataFrame,
    artifact: Artifact | str | os.PathLike[str],
    *,
    key_columns: list[str] | None = None,
    output_column: str = "prediction",
    **udf_options,
) -> DataFrame:
    """Append the model's outputs as flat columns: for classification ``prediction`` (label),
    ``probability`` (and ``probabilities``), for regression ``prediction``, for embeddings
    ``embedding``; plus ``prediction_error`` (null unless the row was flagged)."""
    artifact = _as_artifact(artifact)
    check_features(df, artifact.manifest)
    for k in key_columns or []:
        if k not in df.columns:
            raise ValueError(f"key column {k!r} is not in the input; it has {_preview(df.columns)}")
    predict = model_udf(artifact, spark=df.sparkSession, **udf_options)
    spec = artifact.manifest.features
    cols = spec.columns or [spec.array_column]
    key = key_expression(key_columns) if key_columns else None
    tmp = "__leanscore_result"
    scored = df.withColumn(tmp, predict(*cols, key=key))
    rename = {
        "label": output_column,
        "value": output_column,
        "embedding": "embedding",
        "probability": "probability",
        "probabilities": "probabilities",
        ERROR_FIELD: f"{output_column}_error",
    }
    outputs = [F.col(f"{tmp}.{name}").alias(rename[name]) for name, _ in predict.fields]
    return scored.select(*[F.col(c) for c in df.columns], *outputs)
