"""The public scoring API, run on the driver: a pandas UDF built from an artifact
(``model_udf``), a DataFrame-level helper (``score_dataframe``) and a whole table's scoring
(``score_table``).

    from leanscore.udfs import model_udf, score_dataframe, score_table
    predict = model_udf("/dbfs/models/digits")
    df.withColumn("prediction", predict(*feature_cols))          # a struct column
    score_dataframe(df, "/dbfs/models/digits", key_columns=["id"])  # flat output columns
    score_table(spark, "/data/features", "/dbfs/models/digits")     # a Delta or Parquet path

The options of all three are ``leanscore.udfs.options.ScoringOptions``' (one validated object,
with every default and legal range): pass one as ``options=``, or its fields as keyword-only
arguments. The engine that scores (``leanscore.udfs.engines``) is chosen by name or ``auto``;
``score_table`` prefers the scan engine (pyarrow reads the files inside the tasks,
``leanscore.udfs.engines.scan``) and falls back to Spark's reader where it does not apply.
The model's bytes reach the executors once (see ``leanscore.udfs.distribution``); each Python
worker builds one ONNX Runtime session and keeps it (``leanscore.udfs.session_cache``).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from leanscore.compression.artifact import Artifact
from leanscore.udfs.engines import TableInput, check_name, score_with
from leanscore.udfs.engines.pandas import ModelUDF
from leanscore.udfs.engines.scan import TableFormat
from leanscore.udfs.kernel import BadRowError, output_fields
from leanscore.udfs.options import (
    BadRowPolicy,
    OutOfRangePolicy,
    RowPolicy,
    ScoringOptions,
    task_cpus,
)
from leanscore.udfs.prepare import (
    as_artifact,
    build_scorer,
    key_expression,
    output_names,
    resolve_columns,
    warn_unguarded,
)
from leanscore.udfs.schema import check_features
from leanscore.udfs.session_cache import SessionConfig
from pyspark.sql import DataFrame, SparkSession

__all__ = [
    "BadRowError",
    "ModelUDF",
    "RowPolicy",
    "ScoringOptions",
    "as_artifact",
    "build_scorer",
    "check_features",
    "key_expression",
    "model_udf",
    "output_fields",
    "output_names",
    "resolve_columns",
    "score_dataframe",
    "task_cpus",
    "warn_unguarded",
]


def model_udf(
    artifact: Artifact | str | os.PathLike[str],
    *,
    spark: SparkSession | None = None,
    options: ScoringOptions | None = None,
    batch_size: int | None = None,
    bad_rows: BadRowPolicy | RowPolicy | None = None,
    out_of_range: OutOfRangePolicy | None = None,
    range_margin: float | None = None,
    probabilities: bool | None = None,
    session_config: SessionConfig | None = None,
    path_threshold_bytes: int | None = None,
) -> ModelUDF:
    """Build a scoring UDF (the pandas engine's column expression) for ``artifact`` (a path, an
    MLflow URI or a loaded ``Artifact``).

    The options are ``ScoringOptions``' (``options=``, or its fields as keywords, which replace
    the fields of ``options``). ``bad_rows`` may also be a whole ``RowPolicy``;
    ``out_of_range`` defaults to ``score_alone``, so no row changes another row's prediction."""
    options = ScoringOptions.of(
        options,
        batch_size=batch_size,
        bad_rows=bad_rows,
        out_of_range=out_of_range,
        range_margin=range_margin,
        probabilities=probabilities,
        session_config=session_config,
        path_threshold_bytes=path_threshold_bytes,
    )
    artifact = as_artifact(artifact)
    scorer = build_scorer(artifact, spark=spark, options=options)
    return ModelUDF(artifact, scorer, probabilities=options.probabilities)


def score_dataframe(
    df: DataFrame,
    artifact: Artifact | str | os.PathLike[str],
    *,
    engine: str = "auto",
    options: ScoringOptions | None = None,
    key_columns: list[str] | None = None,
    output_column: str | None = None,
    keep_columns: list[str] | None = None,
    batch_size: int | None = None,
    bad_rows: BadRowPolicy | RowPolicy | None = None,
    out_of_range: OutOfRangePolicy | None = None,
    range_margin: float | None = None,
    probabilities: bool | None = None,
    session_config: SessionConfig | None = None,
    path_threshold_bytes: int | None = None,
) -> DataFrame:
    """``keep_columns`` of ``df`` (default: all) plus the model's outputs as flat columns (see
    ``output_names``). ``key_columns`` name the row in bad-row errors. The options are
    ``model_udf``'s.

    ``engine="auto"`` uses the Arrow-native path (``mapInArrow``) where the running Spark has
    it, else the pandas UDF; both give bitwise identical results."""
    check_name(engine)
    options = ScoringOptions.of(
        options,
        key_columns=key_columns,
        output_column=output_column,
        keep_columns=keep_columns,
        batch_size=batch_size,
        bad_rows=bad_rows,
        out_of_range=out_of_range,
        range_margin=range_margin,
        probabilities=probabilities,
        session_config=session_config,
        path_threshold_bytes=path_threshold_bytes,
    )
    artifact = as_artifact(artifact)
    scored, _ = score_with(engine, TableInput(df), artifact, options)
    return scored


def score_table(
    spark: SparkSession,
    path: str,
    artifact: Artifact | str | os.PathLike[str],
    *,
    format: TableFormat = "delta",
    engine: str = "auto",
    options: ScoringOptions | None = None,
    key_columns: list[str] | None = None,
    keep_columns: list[str] | None = None,
    output_column: str | None = None,
    batch_size: int | None = None,
    arrow_batch_rows: int | None = None,
    bad_rows: BadRowPolicy | RowPolicy | None = None,
    out_of_range: OutOfRangePolicy | None = None,
    range_margin: float | None = None,
    probabilities: bool | None = None,
    session_config: SessionConfig | None = None,
    path_threshold_bytes: int | None = None,
    on_fallback: Callable[[str], None] | None = None,
    max_task_bytes: int | None = None,
) -> DataFrame:
    """Score a whole Parquet directory or Delta table: ``keep_columns`` (default: all) plus
    the model's outputs, as ``leanscore.udfs.score_dataframe`` names them.

    ``engine="auto"`` uses the scan engine where it applies (see
    ``leanscore.udfs.engines.scan``) and otherwise Spark's reader (the Arrow engine, else
    pandas); ``on_fallback(reason)`` hears why. ``engine="scan"`` raises ``ScanUnsupported``
    instead of falling back. The scoring options are ``ScoringOptions``' (defaults and legal
    values there): pass one as ``options=``, or any of its fields as keywords (a keyword given
    replaces the field of ``options``). ``max_task_bytes`` caps the bytes one scan task reads
    (default ``spark.sql.files.maxPartitionBytes``)."""
    check_name(engine)
    options = ScoringOptions.of(
        options,
        key_columns=key_columns,
        keep_columns=keep_columns,
        output_column=output_column,
        batch_size=batch_size,
        arrow_batch_rows=arrow_batch_rows,
        bad_rows=bad_rows,
        out_of_range=out_of_range,
        range_margin=range_margin,
        probabilities=probabilities,
        session_config=session_config,
        path_threshold_bytes=path_threshold_bytes,
        max_task_bytes=max_task_bytes,
    )
    artifact = as_artifact(artifact)
    table = TableInput(spark.read.format(format).load(path), path=path, format=format)
    scored, _ = score_with(engine, table, artifact, options, on_fallback=on_fallback)
    return scored
