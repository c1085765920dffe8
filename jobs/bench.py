"""Comparing model variants on the same table, in the same Spark session, in rows/s and money.

``compare_variants`` is the measuring core (the demo uses it too); ``run_bench`` is the
``leanscore bench`` job around it.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from rich.console import Console
from rich.table import Table

from compression.artifact import Artifact
from jobs.pricing import Pricing, cost, load_pricing
from jobs.score import InputConfig, read_table
from udfs.distribution import is_connect
from udfs.predict import model_udf, score_dataframe


class BenchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input: InputConfig
    artifacts: list[str] = Field(min_length=1, description="the uncompressed model first")
    label_column: str | None = None
    pricing: str = "pricing.yaml"
    repeats: int = Field(default=3, ge=1)
    batch_size: int = Field(default=4096, gt=0)
    arrow_batch_rows: int = Field(default=10_000, gt=0)
    history_format: Literal["delta"] = "delta"


def wide_console() -> Console:
    """Rich assumes 80 columns when output is not a terminal (logs, CI): tables need more."""
    console = Console()
    return console if console.is_terminal else Console(width=140)


def spark_cores(spark: SparkSession) -> int:
    """Cores running tasks: ``defaultParallelism`` on classic Spark, this machine's otherwise."""
    if not is_connect(spark):
        return int(spark.sparkContext.defaultParallelism)
    return os.cpu_count() or 1


def time_scoring(df: DataFrame, artifact: Artifact, *, repeats: int = 1, **udf_options) -> dict:
    """Score ``df`` into Spark's ``noop`` sink (all the work, nothing written) ``repeats`` times
    after a warm-up on a slice; return rows and the median wall time."""
    scored = score_dataframe(df, artifact, **udf_options)
    # Warm-up touches every partition so each Python worker builds its session first.
    score_dataframe(df.sample(fraction=0.01, seed=1), artifact, **udf_options).write.format(
        "noop"
    ).mode("overwrite").save()
    rows = df.count()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        scored.write.format("noop").mode("overwrite").save()
        times.append(time.perf_counter() - start)
    wall = statistics.median(times)
    return {"rows": rows, "wall_s": wall, "rows_per_s": rows / wall, "wall_s_all": times}


def quality(df: DataFrame, artifacts: list[Artifact], label_column: str | None) -> list[dict]:
    """One pass scoring every variant side by side: accuracy (with labels) and agreement with
    the first (uncompressed) variant."""
    spec = artifacts[0].manifest.features
    cols = spec.columns or [spec.array_column]
    preds = [model_udf(a, spark=df.sparkSession)(*cols)["label"] for a in artifacts]
    aggs = []
    for i, p in enumerate(preds):
        aggs.append(F.avg((p == preds[0]).cast("double")).alias(f"agree_{i}"))
        if label_column:
            aggs.append(F.avg((p == F.col(label_column)).cast("double")).alias(f"acc_{i}"))
    row = df.agg(*aggs).first()
    return [
        {
            "accuracy": float(row[f"acc_{i}"]) if label_column else None,
            "fidelity": {"agreement": float(row[f"agree_{i}"])},
        }
        for i in range(len(artifacts))
    ]


def compare_variants(
    spark: SparkSession,
    df: DataFrame,
    artifacts: list[Artifact],
    pricing: Pricing,
    *,
    label_column: str | None = None,
    repeats: int = 3,
    batch_size: int = 4096,
    console: Console | None = None,
) -> dict:
    """Measure every artifact on ``df`` (interleaved, after a warm-up, median of ``repeats``)."""
    console = console or wide_console()
    cores = spark_cores(spark)
    timings: list[list[float]] = [[] for _ in artifacts]
    rows = None
    for r in range(repeats):
        for i, artifact in enumerate(artifacts):
            t = time_scoring(df, artifact, repeats=1, batch_size=batch_size)
            rows = t["rows"]
            timings[i].append(t["wall_s"])
            console.log(
                f"  round {r + 1}/{repeats} {artifact.manifest.name}: {t['rows_per_s']:,.0f} rows/s"
            )
    quality_rows = (
        quality(df, artifacts, label_column)
        if artifacts[0].manifest.task == "classification"
        else [{"accuracy": None, "fidelity": None} for _ in artifacts]
    )
    variants = []
    for artifact, walls, q in zip(artifacts, timings, quality_rows, strict=True):
        wall = statistics.median(walls)
        money = cost(pricing, rows=rows, wall_s=wall, cores=cores)
        variants.append(
            {
                "name": artifact.manifest.name,
                "artifact": str(artifact.path),
                "sha256": artifact.sha256,
                "rows": rows,
                "wall_s": round(wall, 3),
                "wall_s_all": [round(w, 3) for w in walls],
                "wall_s_spread": round(max(walls) - min(walls), 3),
                "rows_per_s": round(rows / wall, 1),
                "rows_per_s_per_core": round(rows / wall / cores, 1),
                "model_bytes": artifact.manifest.model_bytes,
                "params": (artifact.manifest.metrics.get("final") or {}).get("params"),
                **q,
                **{k: round(v, 6) for k, v in money.items()},
            }
        )
    return {
        "rows": rows,
        "cores": cores,
        "repeats": repeats,
        "variants": variants,
        "pricing": pricing.model_dump(),
    }


def comparison_table(report: dict, title: str | None = None) -> Table:
    base = report["variants"][0]
    table = Table(title=title or f"{report['rows']:,} rows on {report['cores']} cores")
    for col in (
        "model",
        "rows/s",
        "speed-up",
        "model bytes",
        "accuracy",
        "agreement",
        "$ / M rows",
        "$ / month",
    ):
        table.add_column(col, justify="left" if col == "model" else "right")
    for v in report["variants"]:
        acc = "n/a" if v["accuracy"] is None else f"{100 * v['accuracy']:.2f}%"
        agree = "n/a" if not v["fidelity"] else f"{100 * v['fidelity']['agreement']:.2f}%"
        table.add_row(
            v["name"],
            f"{v['rows_per_s']:,.0f}",
            f"{v['rows_per_s'] / base['rows_per_s']:.2f}x",
            f"{v['model_bytes']:,}",
            acc,
            agree,
            f"{v['usd_per_million_rows']:.5f}",
            f"{v['monthly_usd']:,.2f}",
        )
    return table


def run_bench(
    spark: SparkSession, config: BenchConfig, out: str | Path, *, config_dir: Path
) -> dict:
    console = wide_console()
    out = Path(out)
    pricing = load_pricing(_resolve(config.pricing, config_dir))
    artifacts = [Artifact.load(_resolve(a, config_dir)) for a in config.artifacts]
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(config.arrow_batch_rows))
    df = read_table(spark, config.input)
    if config.input.filter:
        df = df.where(config.input.filter)
    report = compare_variants(
        spark,
        df,
        artifacts,
        pricing,
        label_column=config.label_column,
        repeats=config.repeats,
        batch_size=config.batch_size,
        console=console,
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    console.print(comparison_table(report))
    return report


def _resolve(path: str, base: Path) -> str:
    p = Path(path)
    return str(p if p.is_absolute() or p.exists() else base / p)
