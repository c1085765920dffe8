"""The nightly scoring job as teams write it today, the baseline of ``leanscore bench-nightly``.

A plain PySpark script: start a session with Delta Lake, read the Delta input, score it with
the PyTorch model inside ``pyspark.ml.functions.predict_batch_udf`` (one torch thread per
task), write the run date's partition of a Delta table (``replaceWhere``), exit. It uses
nothing from leanscore's scoring on purpose: only the model's own factory (``module.function``)
and its state_dict, as a data engineer's script would. The bench runs it as a separate process
with the same Spark settings ``leanscore score`` starts with, and its driver JVM starts as
leanscore's would for a job whose JVM converts and writes every row (the same JVM options
chosen by the same rule, a class archive of its own), so the two differ in the job only.

    python -m leanscore.bench.pytorch_job --input IN --output OUT --run-date 2026-11-28 \\
        --state-dict model.pt --factory pkg.models.make_net --features features --size 64 \\
        --keep row_id,label --jars a.jar,b.jar
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import sys
import time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="Delta table path to score")
    parser.add_argument("--output", required=True, help="Delta table path to write")
    parser.add_argument("--run-date", required=True, help="partition to (re)write, YYYY-MM-DD")
    parser.add_argument("--state-dict", required=True, help="torch.save(model.state_dict())")
    parser.add_argument("--factory", required=True, help="module.function building the net")
    parser.add_argument(
        "--features", required=True, help="one array column, or feature columns comma-separated"
    )
    parser.add_argument("--size", type=int, required=True, help="features per row")
    parser.add_argument("--keep", default="", help="columns written next to the prediction")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--jars", default="", help="Delta Lake jars, comma-separated")
    parser.add_argument("--master", default="local[*]")
    parser.add_argument("--driver-memory", default="4g")
    return parser.parse_args(argv)


def make_predict_fn(factory: str, state_dict: bytes):
    def make():
        import numpy as np
        import torch

        torch.set_num_threads(1)
        module_name, _, func = factory.rpartition(".")
        net = getattr(importlib.import_module(module_name), func)()
        net.load_state_dict(
            torch.load(io.BytesIO(state_dict), map_location="cpu", weights_only=True)
        )
        net.eval()

        def predict(x):
            with torch.inference_mode():
                logits = net(torch.from_numpy(np.asarray(x, dtype=np.float32)))
                probabilities = torch.softmax(logits, dim=-1).numpy()
            return {"label": probabilities.argmax(axis=1), "probability": probabilities.max(axis=1)}

        return predict

    return make


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from leanscore.jobs.runtime import class_archive
    from leanscore.jobs.runtime.spark import with_driver_jvm_options
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F
    from pyspark.sql.types import FloatType, LongType, StructField, StructType

    builder = (
        SparkSession.builder.appName("nightly-pytorch")
        .master(args.master)
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config(
            "spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog"
        )
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", args.driver_memory)
        .config("spark.pyspark.python", os.environ["PYSPARK_PYTHON"])
        # the settings leanscore's local session had when this baseline was written, so the
        # two jobs differ in the job, not in Spark's tuning
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.databricks.delta.snapshotPartitions", "2")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
    )
    if args.jars:
        builder = builder.config("spark.jars", args.jars)
    # the driver JVM starts as leanscore's does where Spark writes the rows (its JVM options,
    # a class archive of its own)
    builder, archive = with_driver_jvm_options(builder)
    spark = builder.getOrCreate()
    if archive is not None:
        class_archive.attach(archive, spark)
    spark.sparkContext.setLogLevel("ERROR")

    with open(args.state_dict, "rb") as f:
        state_dict = f.read()
    score = predict_batch_udf(
        make_predict_fn(args.factory, state_dict),
        return_type=StructType(
            [StructField("label", LongType()), StructField("probability", FloatType())]
        ),
        batch_size=args.batch_size,
        input_tensor_shapes=[[args.size]],
    )
    features = args.features.split(",")
    column = F.col(features[0]) if len(features) == 1 else F.array(*map(F.col, features))
    keep = [c for c in args.keep.split(",") if c]
    scored = (
        spark.read.format("delta")
        .load(args.input)
        .withColumn("__pred", score(column.cast("array<float>")))
        .select(
            *keep,
            F.col("__pred.label").alias("prediction"),
            F.col("__pred.probability").alias("probability"),
            F.current_timestamp().alias("scored_at"),
            F.lit(args.run_date).cast("date").alias("run_date"),
        )
    )
    (
        scored.write.format("delta")
        .mode("overwrite")
        .partitionBy("run_date")
        .option("replaceWhere", f"run_date = DATE'{args.run_date}'")
        .save(args.output)
    )
    print(json.dumps({"seconds": round(time.perf_counter() - started, 3)}))
    spark.stop()


if __name__ == "__main__":
    main()
