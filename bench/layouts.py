"""What the feature layout costs: the same rows stored in each layout a user's table may hold,
each read alone and scored by leanscore, on the same cores, in one Spark session.

When the model is small, reading the features is the job's largest cost, and how the table
stores them decides that cost. The layouts (``LAYOUTS``), written from one source table into
Delta tables of the same rows and files:

- ``array<float>``: one nested array column (a Parquet list: a repetition level per number);
- ``array<double>``: the same at twice the bytes, cast to float32 for the model;
- ``vector``: a Spark ML dense vector (a struct of type, size, indices and values);
- ``columns``: one float column per feature;
- ``binary``: one binary column holding each row's float32 numbers, little-endian (a tensor's
  raw bytes, as ``numpy.ndarray.tobytes`` writes them).

Per layout: rows/s of Spark's reader alone into its noop sink (every column of the table), and of
``leanscore.udfs.score_table`` (engine ``auto``: the scan engine where it applies, otherwise
Spark's reader and the Arrow path) into the noop sink, the model given the layout's columns.
After a warm-up pass of each, every layout runs in interleaved rounds; a figure is the median
round. Each layout's scoring speed is set against ``array<float>``'s.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import statistics
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
from leanscore.bench.prepare import delta_rows
from leanscore.bench.timing import interleaved_noop_seconds
from pydantic import BaseModel, ConfigDict, Field
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

Layout = Literal["array<float>", "array<double>", "vector", "columns", "binary"]
LAYOUTS: tuple[Layout, ...] = ("array<float>", "array<double>", "vector", "columns", "binary")
BASELINE: Layout = "array<float>"


class LayoutsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    workload: str = Field(
        default="bench-wide.yaml",
        description="the bench config whose model and table generator are used; its prepare "
        "step builds whatever is missing",
    )
    artifact: str | None = Field(
        default=None, description="the artifact scored; default the workload's last"
    )
    rows: int = Field(default=200_000, gt=0)
    files: int = Field(default=4, gt=0, description="Parquet files of every layout's table")
    layouts: list[Layout] = Field(default_factory=lambda: list(LAYOUTS), min_length=1)
    repeats: int = Field(default=3, ge=1, description="interleaved rounds; the median counts")
    batch_size: int = Field(default=4096, gt=0)
    arrow_batch_rows: int = Field(default=10_000, gt=0)
    workdir: str = Field(default="bench-output/layouts", description="the layouts' tables")


def float32_bytes(matrix: np.ndarray) -> pa.BinaryArray:
    """Each row of a float32 matrix as one binary value of its little-endian bytes, zero-copy
    from the matrix's buffer."""
    rows, width = matrix.shape
    data = np.ascontiguousarray(matrix, dtype="<f4")
    offsets = np.arange(0, (rows + 1) * width * 4, width * 4, dtype=np.int32)
    return pa.Array.from_buffers(
        pa.binary(), rows, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def layout_frame(source: DataFrame, layout: Layout, *, column: str, size: int) -> DataFrame:
    """``source``'s ``row_id`` and its ``column`` of ``size`` numbers, stored as ``layout``."""
    numbers = F.col(column).cast("array<float>")
    if layout == "array<float>":
        return source.select("row_id", numbers.alias(column))
    if layout == "array<double>":
        return source.select("row_id", F.col(column).cast("array<double>").alias(column))
    if layout == "vector":
        from pyspark.ml.functions import array_to_vector

        return source.select("row_id", array_to_vector(numbers).alias(column))
    if layout == "columns":
        return source.select("row_id", *[numbers[i].alias(element(column, i)) for i in range(size)])
    if layout == "binary":
        arrays = source.select("row_id", numbers.alias(column))

        def pack(batches):
            for batch in batches:
                values = batch.column(1).flatten().to_numpy(zero_copy_only=False)
                matrix = values.astype(np.float32, copy=False).reshape(-1, size)
                yield pa.RecordBatch.from_arrays(
                    [batch.column(0), float32_bytes(matrix)], names=["row_id", column]
                )

        return arrays.mapInArrow(pack, f"row_id long, `{column}` binary")
    raise ValueError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")


def element(column: str, i: int) -> str:
    return f"{column}_{i:04d}"


def layout_artifact(artifact, layout: Layout):
    """``artifact`` reading its features from ``layout``'s columns (the same model bytes)."""
    features = artifact.manifest.features
    if layout != "columns":
        return artifact
    spec = features.model_copy(
        update={
            "array_column": None,
            "columns": [element(features.array_column, i) for i in range(features.size)],
        }
    )
    relabelled = copy.copy(artifact)
    relabelled.manifest = artifact.manifest.model_copy(update={"features": spec})
    return relabelled


def write_layouts(
    spark: SparkSession, source: str, config: LayoutsConfig, *, column: str, size: int
) -> dict[str, str]:
    """Each layout's Delta table of ``config.rows`` rows of ``source`` (kept when it already
    holds them); ``{layout: path}``."""
    rows = spark.read.format("delta").load(source).limit(config.rows).repartition(config.files)
    rows = rows.persist()
    tables = {}
    try:
        for layout in config.layouts:
            path = Path(config.workdir, "tables", layout.replace("<", "-").replace(">", ""))
            path = str(path.resolve())
            if delta_rows(spark, path) != config.rows:
                frame = layout_frame(rows, layout, column=column, size=size)
                frame.write.format("delta").mode("overwrite").option(
                    "overwriteSchema", "true"
                ).save(path)
            tables[layout] = path
    finally:
        rows.unpersist()
    return tables


def measure_layouts(
    spark: SparkSession, tables: dict[str, str], artifact, config: LayoutsConfig
) -> dict:
    """Rows/s of reading alone and of scoring, per layout (medians of interleaved rounds)."""
    from leanscore.udfs import score_table

    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(config.arrow_batch_rows))
    frames, engines = {}, {}
    for layout, path in tables.items():
        reasons: list[str] = []
        frames[(layout, "read")] = spark.read.format("delta").load(path)
        frames[(layout, "score")] = score_table(
            spark,
            path,
            layout_artifact(artifact, layout),
            format="delta",
            keep_columns=["row_id"],
            batch_size=config.batch_size,
            arrow_batch_rows=config.arrow_batch_rows,
            on_fallback=reasons.append,
        )
        engines[layout] = ("Spark's reader: " + reasons[0]) if reasons else "scan"
    walls = interleaved_noop_seconds(frames, config.repeats)
    results = {}
    for layout, path in tables.items():
        read_s = statistics.median(walls[(layout, "read")])
        score_s = statistics.median(walls[(layout, "score")])
        results[layout] = {
            "table_bytes": _bytes(path),
            "read_rows_per_s": round(config.rows / read_s, 1),
            "score_rows_per_s": round(config.rows / score_s, 1),
            "read_s_all": [round(w, 3) for w in walls[(layout, "read")]],
            "score_s_all": [round(w, 3) for w in walls[(layout, "score")]],
            "engine": engines[layout],
        }
    base = results.get(BASELINE)
    for r in results.values():
        r["score_x_array_float"] = (
            round(r["score_rows_per_s"] / base["score_rows_per_s"], 3) if base else None
        )
    return results


def _bytes(path: str) -> int:
    return sum(p.stat().st_size for p in Path(path).glob("*.parquet"))


def run_layouts_bench(config: LayoutsConfig, out: str | Path, *, config_dir: Path) -> dict:
    """Prepare the workload, write the layouts' tables, measure, write ``layouts.json`` and
    ``layouts.md`` into ``out``."""
    from leanscore.bench.compare import resolve_path, spark_cores
    from leanscore.bench.metrics import environment, source_commit
    from leanscore.bench.workload import prepare_workload_source
    from leanscore.compression.mlflow_registry import load_artifact
    from leanscore.jobs.runtime.spark import get_spark

    out = Path(out).resolve()
    commit = source_commit()  # the code measured: taken before the run, not after it
    started = dt.datetime.now(dt.UTC)
    spark = get_spark("leanscore-bench-layouts")
    try:
        prepared = prepare_workload_source(
            spark,
            config.workload,
            config_dir=config_dir,
            rows=config.rows,
            tables_dir=Path(config.workdir, "tables", "workload"),
        )
        chosen = resolve_path(config.artifact, config_dir) if config.artifact else None
        artifact = load_artifact(chosen or prepared.artifacts[-1])
        features = artifact.manifest.features
        if features.array_column is None:
            raise ValueError(
                f"artifact {artifact.manifest.name!r} reads columns {features.columns}; the "
                "layouts bench stores one array of numbers in each layout: give a model that "
                "reads an array_column"
            )
        tables = write_layouts(
            spark, prepared.table, config, column=features.array_column, size=features.size
        )
        results = measure_layouts(spark, tables, artifact, config)
        cores = spark_cores(spark)
        report = {
            "kind": "layouts",
            "workload": prepared.config.workload,
            "artifact": artifact.manifest.name,
            "features": features.size,
            "rows": config.rows,
            "files": config.files,
            "repeats": config.repeats,
            "batch_size": config.batch_size,
            "cores": cores,
            "run_at": started.isoformat(timespec="seconds"),
            "layouts": results,
            "environment": {**environment(spark, cores=cores), "commit": commit},
        }
    finally:
        spark.stop()
    out.mkdir(parents=True, exist_ok=True)
    (out / "layouts.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "layouts.md").write_text("\n".join(report_lines(report)) + "\n")
    return report


HEADER = [
    "layout",
    "Parquet bytes",
    "Spark's reader alone rows/s",
    "leanscore rows/s",
    "x array<float>",
    "engine",
]


def summary_line(report: dict) -> str:
    """What was measured, and which layout scored fastest by how much."""
    fastest, r = max(report["layouts"].items(), key=lambda kv: kv[1]["score_rows_per_s"])
    ratio = r["score_x_array_float"]
    than = f", {ratio:.2f}x `{BASELINE}`" if ratio is not None and fastest != BASELINE else ""
    return (
        f"{report['rows']:,} rows of {report['features']} numbers in {report['files']} files, "
        f"scored by `{report['artifact']}` on {report['cores']} cores; medians of "
        f"{report['repeats']} interleaved rounds into Spark's noop sink. Fastest to score: "
        f"`{fastest}`{than}."
    )


def table_rows(report: dict) -> list[list[str]]:
    """One row per layout, fastest scoring first."""
    ordered = sorted(report["layouts"].items(), key=lambda kv: -kv[1]["score_rows_per_s"])
    return [
        [
            f"`{layout}`",
            f"{r['table_bytes']:,}",
            f"{r['read_rows_per_s']:,.0f}",
            f"{r['score_rows_per_s']:,.0f}",
            "" if r["score_x_array_float"] is None else f"{r['score_x_array_float']:.2f}x",
            r["engine"],
        ]
        for layout, r in ordered
    ]


def report_lines(report: dict) -> list[str]:
    """The report as Markdown."""
    return [
        summary_line(report),
        "",
        "| " + " | ".join(HEADER) + " |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
        *["| " + " | ".join(row) + " |" for row in table_rows(report)],
    ]
