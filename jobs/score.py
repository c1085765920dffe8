"""The nightly scoring job: read a table, score it, write the run date's partition.

A rerun for the same ``run_date`` replaces exactly that date's rows and nothing else (Delta
``replaceWhere``, or dynamic partition overwrite for Parquet). A failure leaves the previous
output as it was: Delta commits the whole write or nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from compression.artifact import Artifact
from udfs.predict import score_dataframe

log = logging.getLogger(__name__)

RUN_DATE_COLUMN = "run_date"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TableRef(_Strict):
    """A Parquet or Delta path, or a catalog table name."""

    path: str | None = None
    table: str | None = None
    format: Literal["delta", "parquet"] = "delta"

    @model_validator(mode="after")
    def _one_location(self):
        if (self.path is None) == (self.table is None):
            raise ValueError("give exactly one of 'path' or 'table'")
        return self

    def describe(self) -> str:
        return self.table or f"{self.format} path {self.path}"


class InputConfig(TableRef):
    filter: str | None = Field(
        default=None, description="a Spark SQL predicate, e.g. day = '2026-01-01'"
    )


class ScoreConfig(_Strict):
    artifact: str = Field(
        min_length=1, description="artifact directory (model.onnx + manifest.json)"
    )
    input: InputConfig
    output: TableRef
    key_columns: list[str] = Field(default_factory=list)
    passthrough_columns: list[str] = Field(default_factory=list)
    bad_rows: Literal["fail", "flag"] = "fail"
    batch_size: int = Field(default=4096, gt=0, description="rows per ONNX Runtime call")
    arrow_batch_rows: int = Field(default=10_000, gt=0, description="rows per Arrow batch")
    probabilities: bool = False
    summary_path: str | None = None


def parse_run_date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValueError(f"run date {value!r} is not a date in YYYY-MM-DD form") from None


def read_table(spark: SparkSession, ref: TableRef) -> DataFrame:
    if ref.table:
        return spark.read.table(ref.table)
    if ref.format == "delta":
        from delta.tables import DeltaTable

        if not DeltaTable.isDeltaTable(spark, ref.path):
            raise FileNotFoundError(
                f"input {ref.path} is not a Delta table (no _delta_log); check the path, or set "
                "input.format: parquet for a Parquet directory"
            )
    elif not Path(ref.path).exists() and "://" not in ref.path:
        raise FileNotFoundError(f"input Parquet path {ref.path} does not exist")
    return spark.read.format(ref.format).load(ref.path)


def read_input(spark: SparkSession, config: ScoreConfig) -> DataFrame:
    df = read_table(spark, config.input)
    return df.where(config.input.filter) if config.input.filter else df


def score_frame(
    df: DataFrame, config: ScoreConfig, artifact: Artifact, run_date: dt.date
) -> DataFrame:
    """The output rows: keys, passthrough columns, model outputs and lineage columns."""
    keep = list(dict.fromkeys([*config.key_columns, *config.passthrough_columns]))
    missing = [c for c in keep if c not in df.columns]
    if missing:
        raise ValueError(
            f"column {missing[0]!r} named in key_columns/passthrough_columns is not in "
            f"{config.input.describe()}"
        )
    scored = score_dataframe(
        df,
        artifact,
        key_columns=config.key_columns or None,
        bad_rows=config.bad_rows,
        batch_size=config.batch_size,
        probabilities=config.probabilities,
    )
    manifest = artifact.manifest
    outputs = [c for c in scored.columns if c not in df.columns]
    return scored.select(
        *keep,
        *outputs,
        F.lit(manifest.name).alias("model_name"),
        F.lit(manifest.version).alias("model_version"),
        F.lit(manifest.sha256).alias("model_sha256"),
        F.current_timestamp().alias("scored_at"),
        F.lit(run_date).cast("date").alias(RUN_DATE_COLUMN),
    )


def write_partition(df: DataFrame, ref: TableRef, run_date: dt.date) -> None:
    writer = df.write.format(ref.format).mode("overwrite").partitionBy(RUN_DATE_COLUMN)
    if ref.format == "delta":
        writer = writer.option("replaceWhere", f"{RUN_DATE_COLUMN} = DATE'{run_date.isoformat()}'")
    else:
        writer = writer.option("partitionOverwriteMode", "dynamic")
    if ref.table:
        writer.saveAsTable(ref.table)
    else:
        writer.save(ref.path)


def run_score(spark: SparkSession, config: ScoreConfig, run_date: str | dt.date) -> dict:
    """Score ``config.input`` into the ``run_date`` partition of ``config.output``; return the
    run summary (also written to ``config.summary_path`` when set)."""
    day = run_date if isinstance(run_date, dt.date) else parse_run_date(run_date)
    artifact = Artifact.load(config.artifact)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(config.arrow_batch_rows))
    start = time.perf_counter()
    source = read_input(spark, config)
    rows_in = source.count()
    scored = score_frame(source, config, artifact, day)
    write_partition(scored, config.output, day)
    seconds = time.perf_counter() - start
    written = read_table(spark, config.output).where(F.col(RUN_DATE_COLUMN) == F.lit(day))
    counts = written.agg(
        F.count(F.lit(1)).alias("rows"),
        F.count("prediction_error").alias("flagged"),
    ).first()
    summary = {
        "status": "succeeded",
        "run_date": day.isoformat(),
        "model_name": artifact.manifest.name,
        "model_sha256": artifact.sha256,
        "input": config.input.describe(),
        "output": config.output.describe(),
        "rows_in": rows_in,
        "rows_out": int(counts["rows"]),
        "flagged_rows": int(counts["flagged"]),
        "seconds": round(seconds, 3),
        "rows_per_s": round(int(counts["rows"]) / seconds, 1) if seconds > 0 else None,
    }
    if summary["rows_in"] != summary["rows_out"]:
        raise RuntimeError(
            f"wrote {summary['rows_out']} rows for {day} but read {summary['rows_in']}; "
            "the output table was changed by another writer during the run"
        )
    for key, value in summary.items():
        log.info("score summary %s=%s", key, value)
    if config.summary_path:
        Path(config.summary_path).parent.mkdir(parents=True, exist_ok=True)
        Path(config.summary_path).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
