"""The nightly text-embedding job: read a Delta table of texts, embed, write the run date.

    leanscore embed --config conf/nightly-embed.yaml --run-date 2026-11-28

Same contract as ``score``: a rerun for ``run_date`` replaces exactly that date's rows
(Delta ``replaceWhere``), checked as it is written and restored when the check fails; keys and
passthrough columns are kept; the model's name, version and sha256 go next to every embedding.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Annotated, Literal

import typer
from leanscore.compression.artifact import Artifact
from leanscore.jobs.score import (
    RUN_DATE_COLUMN,
    InputConfig,
    NightlyJob,
    TableRef,
    kept_columns,
    run_nightly,
)
from leanscore.udfs.distribution import DEFAULT_PATH_THRESHOLD_BYTES
from leanscore.udfs.engines import check_name, reads_whole_tables_only
from leanscore.udfs.text import embed_dataframe, resolve_engine
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

log = logging.getLogger(__name__)


class EmbedConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    artifact: str = Field(min_length=1, description="text artifact (model.onnx + tokenizer.json)")
    input: InputConfig
    output: TableRef
    text_column: str | None = Field(default=None, description="default: the artifact's column")
    key_columns: list[str] = Field(default_factory=list)
    passthrough_columns: list[str] = Field(default_factory=list)
    bad_rows: Literal["fail", "flag"] = "fail"
    long_text: Literal["truncate", "bad"] = "truncate"
    max_length: int | None = Field(default=None, gt=0, description="tokens; default: artifact's")
    max_chars: int = Field(default=100_000, gt=0)
    sort_by_length: bool = True
    sub_batch_rows: int = Field(default=16, gt=0)
    engine: str = Field(
        default="auto",
        description="arrow (Arrow UDF, Spark 4.1+), pandas (pandas UDF), or auto: Arrow where "
        "Spark has it (engines are registered in leanscore.udfs.engines)",
    )
    arrow_batch_rows: int = Field(default=2_000, gt=0)
    path_threshold_bytes: int = Field(
        default=DEFAULT_PATH_THRESHOLD_BYTES,
        ge=0,
        description="models above this size reach executors by path, not broadcast",
    )
    summary_path: str | None = None

    @field_validator("engine")
    @classmethod
    def _column_engine(cls, name: str) -> str:
        return column_engine(name)


def column_engine(name: str) -> str:
    """``name`` when it is a registered engine that scores a text column with a UDF."""
    if reads_whole_tables_only(check_name(name)):
        raise ValueError(
            f"engine {name!r} reads whole Parquet/Delta tables; embeddings are a text "
            "column scored with a UDF: use arrow, pandas or auto"
        )
    return name


def embed_frame(
    df: DataFrame, config: EmbedConfig, artifact: Artifact, run_date: dt.date
) -> DataFrame:
    keep = kept_columns(df, config)
    scored = embed_dataframe(
        df,
        artifact,
        text_column=config.text_column,
        key_columns=config.key_columns or None,
        bad_rows=config.bad_rows,
        long_text=config.long_text,
        max_length=config.max_length,
        max_chars=config.max_chars,
        sort_by_length=config.sort_by_length,
        sub_batch_rows=config.sub_batch_rows,
        path_threshold_bytes=config.path_threshold_bytes,
        engine=config.engine,
    )
    manifest = artifact.manifest
    return scored.select(
        *keep,
        "embedding",
        "embedding_error",
        F.lit(manifest.name).alias("model_name"),
        F.lit(manifest.version).alias("model_version"),
        F.lit(manifest.sha256).alias("model_sha256"),
        F.current_timestamp().alias("scored_at"),
        F.lit(run_date).cast("date").alias(RUN_DATE_COLUMN),
    )


def score_text_table(spark: SparkSession, config: EmbedConfig, run_date: str | dt.date) -> dict:
    """Embed ``config.input`` into the ``run_date`` partition of ``config.output``; return the
    run summary. The nightly core is the score job's (``leanscore.jobs.score.run_nightly``):
    the same checks before anything is written, the same verification and failed summary."""
    return run_nightly(spark, config, run_date, EMBED_JOB)


def _embedded(
    df: DataFrame, config: EmbedConfig, artifact: Artifact, run_date: dt.date
) -> tuple[DataFrame, str]:
    return embed_frame(df, config, artifact, run_date), resolve_engine(config.engine)


EMBED_JOB = NightlyJob("embed", _embedded, "embedding_error", "sentences_per_s")


app = typer.Typer(add_completion=False)


@app.command()
def main(
    config: Annotated[Path, typer.Option(help="embedding job YAML (conf/nightly-embed.yaml)")],
    run_date: Annotated[str, typer.Option(help="YYYY-MM-DD partition to (re)write")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="override: a.b=value")] = None,
) -> None:
    from leanscore.jobs.config import load_config
    from leanscore.jobs.runtime.spark import get_spark

    cfg = load_config(EmbedConfig, config, set_ or [])
    summary = score_text_table(get_spark("leanscore-embed"), cfg, run_date)
    typer.echo(json.dumps(summary, indent=2))


if __name__ == "__main__":
    app()
