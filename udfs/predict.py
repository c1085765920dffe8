"""The public scoring API: a pandas UDF built from an artifact, and a DataFrame-level helper.

    from leanscore.udfs import model_udf, score_dataframe
    predict = model_udf("/dbfs/models/digits")
    df.withColumn("prediction", predict(*feature_cols))          # a struct column
    score_dataframe(df, "/dbfs/models/digits", key_columns=["id"])  # flat output columns

The model's bytes reach the executors once (see ``leanscore.udfs.distribution``); each Python worker
builds one ONNX Runtime session and keeps it (``leanscore.udfs.session_cache``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Literal

import numpy as np
import pandas as pd
from leanscore.compression.artifact import Artifact
from leanscore.compression.registry import load_artifact
from leanscore.udfs import arrow_path
from leanscore.udfs.distribution import DEFAULT_PATH_THRESHOLD_BYTES, distribute
from leanscore.udfs.kernel import (
    ERROR_FIELD,
    BadRowError,
    BadRowPolicy,
    OutOfRangePolicy,
    RowPolicy,
    Scored,
    Scorer,
    output_fields,
    row_policy,
)
from leanscore.udfs.schema import check_features, feature_names, preview
from leanscore.udfs.session_cache import SessionConfig
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf

Engine = Literal["auto", "arrow", "pandas"]
log = logging.getLogger(__name__)

__all__ = [
    "BadRowError",
    "ModelUDF",
    "RowPolicy",
    "check_features",
    "model_udf",
    "output_fields",
    "score_dataframe",
]


def _ddl(fields: list[tuple[str, str]]) -> str:
    return "struct<" + ",".join(f"{n}:{t}" for n, t in fields) + ">"


def task_cpus(spark: SparkSession) -> int:
    try:
        return max(1, int(spark.conf.get("spark.task.cpus", "1")))
    except Exception:  # Connect servers may refuse to show some confs
        return 1


def as_artifact(artifact: Artifact | str | os.PathLike[str]) -> Artifact:
    """A loaded artifact, an artifact folder, or an MLflow URI (models:/NAME@ALIAS)."""
    return load_artifact(artifact)


class ModelUDF:
    """Callable returned by ``model_udf``: ``predict(*feature_cols, key=None) -> Column``."""

    def __init__(self, artifact: Artifact, scorer: Scorer, *, probabilities: bool):
        self.artifact = artifact
        self.scorer = scorer
        self.fields = output_fields(artifact.manifest, probabilities=probabilities)
        self.return_type = _ddl(self.fields)
        self._expected = feature_names(artifact.manifest)
        self._udfs: dict[bool, object] = {}

    def __call__(self, *cols: Column | str, key: Column | str | None = None) -> Column:
        if len(cols) != len(self._expected):
            raise ValueError(
                f"Model {self.artifact.manifest.name!r} expected {len(self._expected)} input "
                f"columns ({preview(self._expected)}), but received {len(cols)} columns"
            )
        with_key = key is not None
        if with_key not in self._udfs:
            self._udfs[with_key] = pandas_udf(
                _pandas_iterator(self.scorer, with_key), self.return_type
            )
        args = [F.col(c) if isinstance(c, str) else c for c in cols]
        if with_key:
            args.append((F.col(key) if isinstance(key, str) else key).cast("string"))
        return self._udfs[with_key](*args)


def model_udf(
    artifact: Artifact | str | os.PathLike[str],
    *,
    spark: SparkSession | None = None,
    batch_size: int = 4096,
    bad_rows: BadRowPolicy | RowPolicy = "fail",
    out_of_range: OutOfRangePolicy | None = None,
    range_margin: float | None = None,
    probabilities: bool = False,
    session_config: SessionConfig | None = None,
    path_threshold_bytes: int = DEFAULT_PATH_THRESHOLD_BYTES,
) -> ModelUDF:
    """Build a scoring UDF for ``artifact`` (a path or a loaded ``Artifact``).

    ``bad_rows``, ``out_of_range`` and ``range_margin`` are the row policies of
    ``leanscore.udfs.kernel.RowPolicy`` (``bad_rows`` may also be a whole ``RowPolicy``);
    ``out_of_range`` defaults to ``score_alone``, so no row changes another row's prediction."""
    artifact = as_artifact(artifact)
    scorer = build_scorer(
        artifact,
        spark=spark,
        batch_size=batch_size,
        bad_rows=row_policy(bad_rows, out_of_range=out_of_range, range_margin=range_margin),
        probabilities=probabilities,
        session_config=session_config,
        path_threshold_bytes=path_threshold_bytes,
    )
    return ModelUDF(artifact, scorer, probabilities=probabilities)


def build_scorer(
    artifact: Artifact,
    *,
    spark: SparkSession | None,
    batch_size: int,
    bad_rows: BadRowPolicy | RowPolicy,
    probabilities: bool,
    session_config: SessionConfig | None,
    path_threshold_bytes: int,
) -> Scorer:
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive number of rows, got {batch_size}")
    policy = row_policy(bad_rows)
    warn_unguarded(artifact, policy)
    spark = spark or SparkSession.getActiveSession()
    if spark is None:
        raise RuntimeError("model_udf needs an active Spark session; start one first")
    source = distribute(spark, artifact, path_threshold_bytes=path_threshold_bytes)
    config = session_config or SessionConfig(intra_op_threads=task_cpus(spark))
    scorer = Scorer.build(
        artifact.manifest,
        source,
        config,
        batch_size=batch_size,
        bad_rows=policy,
        probabilities=probabilities,
    )
    scorer.family.attach(artifact)
    return scorer


def warn_unguarded(artifact: Artifact, policy: RowPolicy) -> None:
    """Say on the driver when an out-of-range row could change its batch mates' predictions:
    a batch-dependent artifact without a recorded input range (built before ranges were)."""
    manifest = artifact.manifest
    unguarded = manifest.input_range is None and manifest.batch_dependent is not False
    if unguarded and manifest.features.text_column is None:
        log.warning(
            "artifact %r records no input range, so out_of_range=%r cannot isolate extreme "
            "rows; its outputs may depend on the batch (dynamic quantization). Rebuild it "
            "with 'leanscore compress' to record the range",
            manifest.name,
            policy.out_of_range,
        )


def _pandas_iterator(scorer: Scorer, with_key: bool):
    family = scorer.family

    def predict(batches: Iterator[tuple[pd.Series, ...]]) -> Iterator[pd.DataFrame]:
        session, input_name = scorer.session()
        for cols in batches:
            if isinstance(cols, pd.Series):
                cols = (cols,)
            keys = cols[-1] if with_key else None
            feats = cols[:-1] if with_key else cols
            batch = family.from_pandas(list(feats))
            key_of = keys.iloc.__getitem__ if keys is not None else None
            yield _to_frame(scorer.score(session, input_name, batch, key_of), scorer)

    return predict


def _to_frame(scored: Scored, scorer: Scorer) -> pd.DataFrame:
    n, good, any_bad = scored.n, scored.good, scored.any_bad
    columns: dict[str, object] = {}
    for name, values in scorer.columns(scored).items():
        if values.ndim == 2:
            columns[name] = _rows(values, good, any_bad, n)
        else:
            columns[name] = _nullable(values, good, any_bad)
    columns[ERROR_FIELD] = pd.Series(scored.batch.reasons, dtype=object) if any_bad else [None] * n
    return pd.DataFrame(columns)


def _nullable(values: np.ndarray, good: np.ndarray, any_bad: bool):
    """Values with nulls where rows were flagged (a masked pandas array becomes Arrow nulls)."""
    if not any_bad:
        return values
    full = np.zeros(len(good), dtype=values.dtype)
    full[good] = values
    array_type = pd.arrays.IntegerArray if values.dtype.kind == "i" else pd.arrays.FloatingArray
    return array_type(full, ~good)


def _rows(out: np.ndarray, good: np.ndarray, any_bad: bool, n: int) -> list:
    if not any_bad:
        return list(out)
    rows: list = [None] * n
    for pos, i in enumerate(np.flatnonzero(good)):
        rows[i] = out[pos]
    return rows


def key_expression(key_columns: list[str]) -> Column:
    """``id=7,day=2026-01-01``: names the row in error messages."""
    parts = [
        F.concat(F.lit(f"{k}="), F.coalesce(F.col(k).cast("string"), F.lit("null")))
        for k in key_columns
    ]
    return parts[0] if len(parts) == 1 else F.concat_ws(",", *parts)


def output_names(fields: list[tuple[str, str]], output_column: str) -> dict[str, str]:
    """Flat output column per result field: classification ``prediction`` (label),
    ``probability`` (and ``probabilities``); regression ``prediction``; embeddings
    ``embedding``; plus ``<output_column>_error``."""
    rename = {
        "label": output_column,
        "value": output_column,
        "embedding": "embedding",
        "probability": "probability",
        "probabilities": "probabilities",
        ERROR_FIELD: f"{output_column}_error",
    }
    return {name: rename[name] for name, _ in fields}


def resolve_columns(
    df: DataFrame,
    artifact: Artifact,
    *,
    key_columns: list[str] | None,
    keep_columns: list[str] | None,
    output_column: str,
    probabilities: bool,
) -> tuple[list[str], list[str], list[tuple[str, str]], dict[str, str]]:
    """Check ``df`` against the model and the options, before any work: the key columns, the
    kept columns, the output fields and their column names."""
    check_features(df, artifact.manifest)
    keys = list(key_columns or [])
    keep = list(df.columns if keep_columns is None else keep_columns)
    for k in [*keys, *keep]:
        if k not in df.columns:
            raise ValueError(f"column {k!r} is not in the input; it has {preview(df.columns)}")
    fields = output_fields(artifact.manifest, probabilities=probabilities)
    names = output_names(fields, output_column)
    clash = [c for c in names.values() if c in keep]
    if clash:
        raise ValueError(
            f"the input already has a column {clash[0]!r}; drop it, leave it out of "
            "keep_columns, or choose another output_column"
        )
    return keys, keep, fields, names


def score_dataframe(
    df: DataFrame,
    artifact: Artifact | str | os.PathLike[str],
    *,
    key_columns: list[str] | None = None,
    output_column: str = "prediction",
    keep_columns: list[str] | None = None,
    engine: Engine = "auto",
    batch_size: int = 4096,
    bad_rows: BadRowPolicy | RowPolicy = "fail",
    out_of_range: OutOfRangePolicy | None = None,
    range_margin: float | None = None,
    probabilities: bool = False,
    session_config: SessionConfig | None = None,
    path_threshold_bytes: int = DEFAULT_PATH_THRESHOLD_BYTES,
) -> DataFrame:
    """``keep_columns`` of ``df`` (default: all) plus the model's outputs as flat columns (see
    ``output_names``). ``key_columns`` name the row in bad-row errors. The row policies are
    ``model_udf``'s.

    ``engine="auto"`` uses the Arrow-native path (``mapInArrow``) where the running Spark has
    it, else the pandas UDF; both give bitwise identical results."""
    artifact = as_artifact(artifact)
    if engine not in ("auto", "arrow", "pandas"):
        raise ValueError(f"engine must be 'auto', 'arrow' or 'pandas', got {engine!r}")
    policy = row_policy(bad_rows, out_of_range=out_of_range, range_margin=range_margin)
    keys, keep, fields, names = resolve_columns(
        df,
        artifact,
        key_columns=key_columns,
        keep_columns=keep_columns,
        output_column=output_column,
        probabilities=probabilities,
    )
    scorer = build_scorer(
        artifact,
        spark=df.sparkSession,
        batch_size=batch_size,
        bad_rows=policy,
        probabilities=probabilities,
        session_config=session_config,
        path_threshold_bytes=path_threshold_bytes,
    )
    if engine == "arrow" or (engine == "auto" and arrow_path.available(df)):
        return arrow_path.score_with_arrow(
            df, scorer, fields=fields, out_names=names, keep=keep, key_columns=keys
        )
    predict = ModelUDF(artifact, scorer, probabilities=probabilities)
    key = key_expression(keys) if keys else None
    tmp = "__leanscore_result"
    scored = df.withColumn(tmp, predict(*feature_names(artifact.manifest), key=key))
    outputs = [F.col(f"{tmp}.{name}").alias(names[name]) for name, _ in fields]
    return scored.select(*[F.col(c) for c in keep], *outputs)
