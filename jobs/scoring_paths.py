"""Plain functions that time scoring paths side by side, for the benchmark and the issue's
targets. Every timing drives a lazy DataFrame into Spark's ``noop`` sink (all the work,
nothing written, nothing collected to the driver).

- ``measure_bound``: the limit a Spark path can approach: a read-only pass over the same input
  plus raw ONNX Runtime over the same rows, one single-thread session per core, in parallel.
- ``predict_batch_udf_column``: Spark's ``pyspark.ml.functions.predict_batch_udf`` around the
  identical ONNX model (same threads, same batch size), returning label + probability.
- ``time_noop``: wall seconds of one DataFrame into the noop sink (median of repeats).
- ``compare``: all of it in one run: rows/s of leanscore (Arrow and pandas paths) and of
  predict_batch_udf, the bound, and the two target ratios.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import time

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from compression.artifact import Artifact
from udfs.predict import score_dataframe


def time_noop(df: DataFrame, *, repeats: int = 3, warmup: bool = True) -> float:
    """Median wall seconds of writing ``df`` to the noop sink."""
    if warmup:
        df.write.format("noop").mode("overwrite").save()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        df.write.format("noop").mode("overwrite").save()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def feature_columns(artifact: Artifact) -> list[str]:
    spec = artifact.manifest.features
    return spec.columns or [spec.array_column]


def read_only(df: DataFrame, artifact: Artifact, key_columns: list[str]) -> DataFrame:
    """The same columns a scoring path reads, straight into the sink: no Python, no model."""
    return df.select(*key_columns, *feature_columns(artifact))


def _raw_worker(args) -> float:
    model_bytes, input_name, matrix, batch_size = args
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    session.run(None, {input_name: matrix[:batch_size]})  # warm-up
    start = time.perf_counter()
    for i in range(0, len(matrix), batch_size):
        session.run(None, {input_name: matrix[i : i + batch_size]})
    return time.perf_counter() - start


def raw_ort_seconds(
    artifact: Artifact, matrix: np.ndarray, *, cores: int, batch_size: int, rows: int
) -> float:
    """Seconds for ``cores`` single-thread ONNX Runtime processes to score ``rows`` rows
    (``matrix`` repeated as needed, split evenly), numpy already in memory."""
    per_core = -(-rows // cores)
    reps = -(-per_core // len(matrix))
    block = np.ascontiguousarray(np.tile(matrix, (reps, 1))[:per_core], dtype=np.float32)
    name = artifact.manifest.inputs[0].name
    args = [(artifact.read_model_bytes(), name, block, batch_size)] * cores
    with mp.get_context("spawn").Pool(cores) as pool:
        return max(pool.map(_raw_worker, args))


def sample_matrix(df: DataFrame, artifact: Artifact, rows: int = 20_000) -> np.ndarray:
    """A few thousand real rows of the input as the model's float32 matrix (for the raw pass)."""
    spec = artifact.manifest.features
    pdf = df.select(*feature_columns(artifact)).limit(rows).toPandas()
    if spec.array_column is not None:
        return np.stack(pdf[spec.array_column].to_numpy()).astype(np.float32)
    return pdf.to_numpy(dtype=np.float32)


def measure_bound(
    df: DataFrame,
    artifact: Artifact,
    *,
    cores: int,
    batch_size: int = 4096,
    key_columns: list[str] | None = None,
    repeats: int = 3,
    rows: int | None = None,
) -> dict:
    """Bound time = read-only pass over ``df`` + raw ORT over the same rows with ``cores``
    single-thread sessions. Returns seconds for each part and the bound's rows/s."""
    rows = rows if rows is not None else df.count()
    read_s = time_noop(read_only(df, artifact, key_columns or []), repeats=repeats)
    matrix = sample_matrix(df, artifact)
    ort_s = statistics.median(
        raw_ort_seconds(artifact, matrix, cores=cores, batch_size=batch_size, rows=rows)
        for _ in range(repeats)
    )
    bound_s = read_s + ort_s
    return {
        "rows": rows,
        "read_only_s": read_s,
        "raw_ort_s": ort_s,
        "bound_s": bound_s,
        "bound_rows_per_s": rows / bound_s,
    }


def predict_batch_udf_column(
    artifact: Artifact, *, batch_size: int = 4096, threads: int = 1
) -> tuple[list[str], Column]:
    """``(input columns, column)``: ``predict_batch_udf`` running the artifact's ONNX model with
    ``threads`` intra-op threads, returning struct<label bigint, probability float> (the
    classification outputs leanscore returns). Apply as ``df.select(col)``."""
    from pyspark.ml.functions import predict_batch_udf

    model_bytes = artifact.read_model_bytes()
    input_name = artifact.manifest.inputs[0].name
    spec = artifact.manifest.features

    def make_predict_fn():
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])

        def predict(*inputs: np.ndarray) -> dict[str, np.ndarray]:
            if len(inputs) == 1:
                x = inputs[0].astype(np.float32, copy=False)
            else:
                x = np.stack(inputs, axis=1).astype(np.float32, copy=False)
            out = session.run(None, {input_name: x})[0]
            return {"label": out.argmax(axis=1), "probability": out.max(axis=1)}

        return predict

    shapes = [[spec.size]] if spec.array_column is not None else None
    from pyspark.sql.types import FloatType, LongType, StructField, StructType

    udf = predict_batch_udf(
        make_predict_fn,
        # predict_batch_udf needs a StructType object here, not a DDL string
        return_type=StructType(
            [StructField("label", LongType()), StructField("probability", FloatType())]
        ),
        batch_size=batch_size,
        input_tensor_shapes=shapes,
    )
    cols = feature_columns(artifact)
    return cols, udf(*cols)


def compare(
    df: DataFrame,
    artifact: Artifact,
    *,
    cores: int,
    batch_size: int = 4096,
    key_columns: list[str] | None = None,
    repeats: int = 3,
) -> dict:
    """Everything measured side by side on the same session and input."""
    keys = key_columns or []
    rows = df.count()
    bound = measure_bound(
        df, artifact, cores=cores, batch_size=batch_size, key_columns=keys, repeats=repeats
    )
    timings = {}
    for engine in ("arrow", "pandas"):
        scored = score_dataframe(
            df, artifact, keep_columns=keys, key_columns=keys, engine=engine, batch_size=batch_size
        )
        timings[f"leanscore_{engine}"] = time_noop(scored, repeats=repeats)
    _, column = predict_batch_udf_column(artifact, batch_size=batch_size)
    timings["predict_batch_udf"] = time_noop(
        df.select(*keys, column.alias("p")).select(*keys, F.col("p.*")), repeats=repeats
    )
    result = {
        "rows": rows,
        "cores": cores,
        "batch_size": batch_size,
        **bound,
        **{f"{k}_s": v for k, v in timings.items()},
        **{f"{k}_rows_per_s": rows / v for k, v in timings.items()},
    }
    best = timings["leanscore_arrow"]
    result["bound_ratio"] = bound["bound_s"] / best
    result["vs_predict_batch_udf"] = timings["predict_batch_udf"] / best
    return result


if __name__ == "__main__":  # pragma: no cover - manual measurement
    import argparse
    import json

    from jobs.spark import get_spark

    parser = argparse.ArgumentParser(description="Time scoring paths side by side")
    parser.add_argument("--artifact", required=True)
    parser.add_argument("--input", required=True, help="Parquet or Delta path")
    parser.add_argument("--format", default="parquet")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--arrow-batch-rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--key", action="append", default=[])
    args = parser.parse_args()
    spark = get_spark("leanscore-scoring-paths", master=args.master)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(args.arrow_batch_rows))
    table = spark.read.format(args.format).load(args.input)
    report = compare(
        table,
        Artifact.load(args.artifact),
        cores=int(spark.sparkContext.defaultParallelism),
        batch_size=args.batch_size,
        key_columns=args.key,
        repeats=args.repeats,
    )
    report["arrow_batch_rows"] = args.arrow_batch_rows
    report["cpu_count"] = os.cpu_count()
    print(json.dumps(report, indent=2))
