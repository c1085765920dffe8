"""``score_table``: score a whole Parquet directory or Delta table, by default with the scan
engine (pyarrow reads the files inside the tasks; ``leanscore.udfs.engines.scan``, whose
planning and reading functions are re-exported here), falling back to Spark's reader where the
scan engine does not apply."""

from __future__ import annotations

import os
from collections.abc import Callable

from leanscore.compression.artifact import Artifact
from leanscore.udfs.engines import TableInput, check_name, score_with
from leanscore.udfs.engines.scan import (
    SLICE_SCHEMA,
    ScanPlan,
    ScanUnsupported,
    Slice,
    TableFormat,
    arrow_types,
    deal,
    feature_list,
    open_parquet,
    plan_reader,
    plan_scan,
    read_slice,
    row_groups_in,
    score_plan,
    size_tasks,
    slice_frame,
    stored_names,
)
from leanscore.udfs.options import BadRowPolicy, OutOfRangePolicy, RowPolicy, ScoringOptions
from leanscore.udfs.prepare import as_artifact
from leanscore.udfs.session_cache import SessionConfig
from pyspark.sql import DataFrame, SparkSession

__all__ = [
    "SLICE_SCHEMA",
    "ScanPlan",
    "ScanUnsupported",
    "Slice",
    "TableFormat",
    "arrow_types",
    "deal",
    "feature_list",
    "open_parquet",
    "plan_reader",
    "plan_scan",
    "read_slice",
    "row_groups_in",
    "score_plan",
    "score_table",
    "size_tasks",
    "slice_frame",
    "stored_names",
]


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
