"""Helpers shared by the reliability tests: run the real CLI, snapshot Delta outputs."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml
from pyspark.sql import functions as F
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
LEANSCORE = ROOT / ".venv" / "bin" / "leanscore"


@dataclass
class CliResult:
    exit_code: int
    output: str  # stdout and stderr together
    stderr: str


def run_cli(*args: str) -> CliResult:
    """``leanscore ARGS`` in this process (the test's Spark session is the active one)."""
    from leanscore.jobs.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        # A traceback instead of a one-line error is itself a defect: show it.
        import traceback

        tb = "".join(traceback.format_exception(result.exception))
        return CliResult(99, result.output + "\nUNCAUGHT:\n" + tb, result.stderr)
    return CliResult(result.exit_code, result.output, result.stderr)


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def copy_artifact(artifact, dest: Path) -> Path:
    shutil.copytree(artifact.path, dest)
    return dest


def delta_version(spark, path: str) -> int | None:
    from delta.tables import DeltaTable

    if not DeltaTable.isDeltaTable(spark, path):
        return None
    return DeltaTable.forPath(spark, path).history(1).first()["version"]


def checksum(spark, path: str, run_date: str | None = None) -> dict:
    """Row count, distinct keys and an order-free hash over keys and predictions."""
    df = spark.read.format("delta").load(path)
    if run_date is not None:
        df = df.where(F.col("run_date") == F.lit(run_date).cast("date"))
    row = df.agg(
        F.count(F.lit(1)).alias("rows"),
        F.countDistinct("row_id").alias("keys"),
        # Each row's hash folded into [0, 2^31) so the sum cannot overflow (ANSI mode).
        F.sum(F.pmod(F.xxhash64("row_id", "prediction", "probability"), F.lit(1 << 31))).alias(
            "hash"
        ),
        F.sum("row_id").alias("key_sum"),
    ).first()
    return row.asDict()


def predictions(spark, path: str, run_date: str):
    return (
        spark.read.format("delta")
        .load(path)
        .where(F.col("run_date") == F.lit(run_date).cast("date"))
        .select("row_id", "label", "prediction", "probability", "model_sha256", "run_date")
    )
