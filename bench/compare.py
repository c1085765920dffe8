"""Comparing model variants on the same table, in the same Spark session, in rows/s and money.

A *variant* is a model on a scoring path over a reader: ``torch-fp32/predict_batch_udf`` (the
PyTorch model inside Spark's ``predict_batch_udf``, as teams run it today),
``onnx-fp32/predict_batch_udf`` (the identical ONNX model there),
``onnx-fp32/leanscore-spark-reader`` (leanscore's Arrow path over Spark's reader),
``onnx-fp32/leanscore`` and ``<compressed>/leanscore`` (over the scan engine where it applies).
Neighbours differ in one thing only, so each effect (runtime, engine, reader, compression) is
one ratio (``decompose``). ``compare_variants`` is the measuring core (the demo uses it
too): a warm-up, then ``repeats`` interleaved rounds into Spark's noop sink with a clock in
the tasks (``timing``), one quality pass, the read-only passes and the cost.
``run_bench`` is the ``leanscore bench`` job around it (see ``report`` for outputs).
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from leanscore.bench.decompose import BenchTargets, accuracy_text, decompose
from leanscore.bench.metrics import CpuMeter
from leanscore.bench.paths import (
    TorchModel,
    feature_matrix_column,
    image_decoding,
    input_matrix,
    leanscore_frame,
    leanscore_over,
    mlflow_model_uri,
    onnx_predict_fn,
    predict_batch_frame,
    raw_onnx_predict,
    raw_rows_per_s,
    read_only_frame,
    scan_read_only_frame,
    spark_read_only_frame,
    spark_udf_frame,
    torch_predict_fn,
)
from leanscore.bench.prepare import PrepareConfig
from leanscore.bench.pricing import Pricing, cost, rounded_cost, savings
from leanscore.bench.timing import PARTS, TaskClock, breakdown, noop_seconds, since
from leanscore.compression.artifact import Artifact
from leanscore.compression.evaluate import accuracy_interval
from leanscore.jobs.score import InputConfig
from leanscore.jobs.tables import TextTable, percent
from leanscore.udfs.distribution import is_connect
from leanscore.udfs.engines.scan import ScanPlan, ScanUnsupported, plan_scan
from leanscore.udfs.schema import feature_names
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from rich.console import Console

BASELINE_ONNX = "onnx-fp32"
TORCH = "torch-fp32"


class TorchModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    state_dict: str = Field(min_length=1, description="file written by torch.save(state_dict)")
    factory: str = Field(
        default="leanscore.compression.models.digits_mlp",
        description="module.function building the net",
    )


class BenchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    workload: str = Field(
        default="digits-mlp",
        min_length=1,
        description="the workload's name in the report and the history (one history table "
        "holds several workloads' runs)",
    )
    input: InputConfig
    artifacts: list[str] = Field(
        min_length=1, description="the fp32 ONNX export of the uncompressed model first"
    )
    torch_model: TorchModelConfig | None = Field(
        default=None, description="the uncompressed PyTorch model: the baseline when given"
    )
    prepare: PrepareConfig | None = Field(
        default=None, description="build the table, model and artifacts when they are missing"
    )
    label_column: str | None = None
    keep_columns: list[str] | None = Field(
        default=None,
        description="columns every variant writes next to its prediction, as a nightly job "
        "keeps keys; default: every input column but the features",
    )
    scan: bool = Field(
        default=True,
        description="leanscore reads a whole Parquet/Delta input with its scan engine where "
        "it applies (leanscore.udfs.engines.scan); false: Spark's reader, like predict_batch_udf",
    )
    pricing: str = "pricing.yaml"
    repeats: int = Field(default=3, ge=1)
    batch_size: int = Field(default=4096, gt=0)
    arrow_batch_rows: int = Field(default=10_000, gt=0)
    torch_batch_sizes: list[int] = Field(
        default_factory=lambda: [256, 1024, 4096, 10_000],
        description="PyTorch's batch in predict_batch_udf is the fastest of these, measured "
        "on the model alone (one thread, rows from the input) before the timed rounds; "
        "empty: batch_size",
    )
    torch_sweep_rows: int = Field(
        default=10_000, gt=0, description="input rows the batch-size sweep runs at each size"
    )
    onnx_predict_batch_udf: bool = Field(
        default=True, description="also time the fp32 ONNX model inside predict_batch_udf"
    )
    mlflow_spark_udf: bool = Field(
        default=False,
        description="also time every model in mlflow.pyfunc.spark_udf (needs leanscore[mlflow])",
    )
    spark_reader_variant: bool = Field(
        default=True,
        description="with the scan engine: also time the fp32 ONNX model through leanscore "
        "over Spark's reader (the engine's and the reader's effects each become one ratio)",
    )
    bound_rows: int = Field(
        default=500_000, gt=0, description="rows for each model alone in ONNX Runtime / PyTorch"
    )
    distinct_examples: int | None = Field(
        default=None,
        gt=0,
        description="independent examples behind the accuracy (the digits table augments "
        "450 distinct held-out images): the 95% interval uses this many; default: rows",
    )
    targets: BenchTargets = Field(default_factory=BenchTargets)
    history: str | None = Field(
        default=None,
        description="Delta history: a path, or a catalog table (catalog.schema.table) the "
        "dashboard reads; default OUT/history",
    )
    history_format: Literal["delta"] = "delta"

    @model_validator(mode="after")
    def _torch_batches_fit_an_arrow_batch(self) -> BenchConfig:
        too_big = [n for n in self.torch_batch_sizes if n <= 0 or n > self.arrow_batch_rows]
        if too_big:
            raise ValueError(
                f"torch_batch_sizes: {too_big} must be between 1 and arrow_batch_rows "
                f"({self.arrow_batch_rows}); predict_batch_udf never sees more rows than one "
                "Arrow batch"
            )
        return self


@dataclass
class Variant:
    name: str
    model: str  # the key of its model in the quality and model-alone results
    path: Literal["predict_batch_udf", "spark_udf", "leanscore"]
    frame: Callable[[DataFrame], DataFrame]
    model_bytes: int
    params: int | None
    compressed: bool
    engine: str  # the reader: Spark's ("spark") or this project's scan engine ("scan")
    keep: list[str] = field(default_factory=list)  # passed-through columns, not predictions
    clock: TaskClock | None = None  # its tasks' seconds (reading, model, converting)
    batch_size: int | None = None  # rows per model call; None where the path decides (MLflow)


def wide_console() -> Console:
    """Rich assumes 80 columns when output is not a terminal (logs, CI): its log lines get
    160. Tables go through ``print_table``, which prints them whole either way."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


def spark_cores(spark: SparkSession) -> int:
    """Cores running tasks: ``defaultParallelism`` on classic Spark, this machine's otherwise."""
    if not is_connect(spark):
        return int(spark.sparkContext.defaultParallelism)
    return os.cpu_count() or 1


def model_key(artifact: Artifact, index: int) -> str:
    return BASELINE_ONNX if index == 0 else artifact.manifest.name


def build_variants(
    artifacts: list[Artifact],
    *,
    torch_model: TorchModel | None = None,
    onnx_predict_batch_udf: bool = False,
    batch_size: int = 4096,
    torch_batch_size: int | None = None,
    keep: list[str],
    scan: ScanPlan | None = None,
    arrow_batch_rows: int = 10_000,
    mlflow_spark_udf: bool = False,
    spark: SparkSession | None = None,
    spark_reader_variant: bool = False,
) -> list[Variant]:
    """The variants in report order: the baseline first. Every variant returns ``keep`` and
    its prediction; leanscore reads the table with the scan engine when ``scan`` is given, and
    with ``spark_reader_variant`` it also runs the fp32 model over Spark's reader, so the
    reader's effect is one ratio.
    With ``spark`` (classic), each variant gets a clock its tasks report their seconds to.
    ``torch_batch_size``: the batch of both predict_batch_udf variants (PyTorch's best, so the
    runtime pair differs in the runtime only; default ``batch_size``). Where it is not
    ``batch_size``, the ONNX model also runs in predict_batch_udf at ``batch_size``
    (``<model>/predict_batch_udf@<batch>``), so the engine pair against leanscore's Arrow path
    differs in the engine only, not in the batch too."""
    base = artifacts[0]
    params = [(a.manifest.metrics.get("final") or {}).get("params") for a in artifacts]

    def clock() -> TaskClock | None:
        return TaskClock.create(spark) if spark is not None else None

    def predict_batch_variant(
        model: str, predict_fn, model_bytes: int, n_params, batch: int, *, suffix: str = ""
    ) -> Variant:
        c = clock()
        return Variant(
            f"{model}/predict_batch_udf{suffix}",
            model,
            "predict_batch_udf",
            lambda df: predict_batch_frame(
                df, base, predict_fn, batch_size=batch, keep=keep, clock=c
            ),
            model_bytes,
            n_params,
            False,
            "spark",
            keep=keep,
            clock=c,
            batch_size=batch,
        )

    variants = []
    if torch_model is not None:
        variants.append(
            predict_batch_variant(
                TORCH,
                torch_predict_fn(torch_model),
                len(torch_model.state_dict_bytes),
                torch_model.params(),
                torch_batch_size or batch_size,
            )
        )
    if onnx_predict_batch_udf:
        pbu_batches = [torch_batch_size or batch_size]  # the runtime pair: runtime only differs
        if pbu_batches[0] != batch_size:
            pbu_batches.append(batch_size)  # the engine pair: engine only differs
        for n, batch in enumerate(pbu_batches):
            variants.append(
                predict_batch_variant(
                    BASELINE_ONNX,
                    onnx_predict_fn(base.read_model_bytes()),
                    base.manifest.model_bytes,
                    params[0],
                    batch,
                    suffix=f"@{batch}" if n else "",
                )
            )
    for i, artifact in enumerate(artifacts if mlflow_spark_udf else []):
        key, uri = model_key(artifact, i), mlflow_model_uri(artifact)
        frame = lambda df, u=uri, a=artifact: spark_udf_frame(df, u, a, keep=keep)  # noqa: E731
        variants.append(
            Variant(
                f"{key}/spark_udf",
                key,
                "spark_udf",
                frame,
                artifact.manifest.model_bytes,
                params[i],
                i > 0,
                "spark",
                keep=keep,
            )
        )

    def leanscore_variant(i: int, artifact: Artifact, plan: ScanPlan | None, name: str) -> Variant:
        c = clock()
        return Variant(
            name,
            model_key(artifact, i),
            "leanscore",
            lambda df: leanscore_frame(
                df,
                artifact,
                batch_size=batch_size,
                keep=keep,
                scan=plan,
                arrow_batch_rows=arrow_batch_rows,
                clock=c,
            ),
            artifact.manifest.model_bytes,
            params[i],
            i > 0,
            "spark" if plan is None else "scan",
            keep=keep,
            clock=c,
            batch_size=batch_size,
        )

    if scan is not None and spark_reader_variant:  # the same fp32 model on Spark's reader
        variants.append(leanscore_variant(0, base, None, f"{BASELINE_ONNX}/leanscore-spark-reader"))
    for i, artifact in enumerate(artifacts):
        variants.append(leanscore_variant(i, artifact, scan, f"{model_key(artifact, i)}/leanscore"))
    return variants


def default_keep(df: DataFrame, artifact: Artifact) -> list[str]:
    """Every input column but the model's features: what a nightly job would pass through."""
    features = set(feature_matrix_column(artifact)[0])
    return [c for c in df.columns if c not in features]


def scan_plan(
    spark: SparkSession, ref: InputConfig, artifact: Artifact, keep: list[str], console: Console
) -> ScanPlan | None:
    """The scan engine's plan for a whole-table input, or None (logged why) where it does not
    apply and leanscore reads with Spark."""
    why = "the input is a catalog table, or is filtered"
    if ref.path and not ref.filter and not ref.partition:
        try:
            columns = [*keep, *feature_names(artifact.manifest)]
            plan = plan_scan(spark, ref.path, format=ref.format, columns=columns)
            console.log(
                f"leanscore reads with its scan engine: {len(plan.units)} slices in "
                f"{len(plan.tasks)} tasks"
            )
            return plan
        except ScanUnsupported as err:
            why = str(err)
    console.log(f"leanscore reads with Spark: {why}")
    return None


WARM_UP_NOTE = (
    "Warm-up: one untimed pass of each variant's timed query over the whole input, so the "
    "rounds run the very frames that were warmed (predict_batch_udf's model cache is keyed by "
    "the UDF it built, leanscore's by the model's hash: both are warm in every round)."
)


def time_variants(
    df: DataFrame,
    variants: list[Variant],
    *,
    repeats: int,
    meter: CpuMeter,
    console: Console,
) -> list[list[dict]]:
    """Warm every variant up on the very frame its rounds time, then ``repeats`` rounds; each
    round runs every variant once, in an order rotated by one per round so no variant always
    runs first or last. A warm-up on other frames would warm other UDFs: each
    ``predict_batch_udf`` call makes a new model cache key, so its first round would reload
    the model while leanscore's session cache (keyed by the model's hash) stayed warm."""
    frames = [v.frame(df) for v in variants]
    for v, frame in zip(variants, frames, strict=True):
        console.log(f"  warm-up {v.name}: {noop_seconds(frame):.1f}s")
    runs: list[list[dict]] = [[] for _ in variants]
    for r in range(repeats):
        order = [(i + r) % len(variants) for i in range(len(variants))]
        for i in order:
            mark = meter.mark()
            clock = variants[i].clock
            before = clock.values() if clock is not None else None
            wall = noop_seconds(frames[i])
            tasks = since(clock, before)
            runs[i].append({"wall_s": wall, **meter.since(mark), "task_s": tasks})
            console.log(f"  round {r + 1}/{repeats} {variants[i].name}: {wall:.2f}s")
    # Untimed: the rows each path really produced (the scan engine's reads are not in Spark's
    # input metrics, and a dropped row must show).
    for i, frame in enumerate(frames):
        runs[i][0].update(rows_produced(frame, variants[i].keep))
    return runs


def rows_produced(frame: DataFrame, keep: list[str]) -> dict[str, int]:
    """Rows a scoring frame produced and rows with a prediction. ``count()`` alone may prune
    the prediction column and never run the model; counting the prediction's non-null values
    needs every prediction computed. (Other output columns, such as an error column, are null
    on good rows.)"""
    outputs = [c for c in frame.columns if c not in set(keep)]
    prediction = "prediction" if "prediction" in outputs else outputs[0]
    row = frame.agg(
        F.count(F.lit(1)).alias("rows"), F.count(F.col(prediction)).alias("predicted")
    ).first()
    return {"rows_out": int(row["rows"]), "rows_predicted": int(row["predicted"])}


def _argmax(col: F.Column) -> F.Column:
    return F.array_position(col, F.array_max(col)) - 1


def quality(
    df: DataFrame,
    artifacts: list[Artifact],
    label_column: str | None,
    *,
    torch_model: TorchModel | None = None,
    batch_size: int = 4096,
) -> dict[str, dict]:
    """One pass scoring every model side by side (probabilities); per model: accuracy (with
    labels), and fidelity against the uncompressed model (PyTorch when given, else the first
    artifact): agreement of labels and the largest absolute difference of a probability, or
    the cosine of embeddings."""
    from leanscore.udfs.api import model_udf

    spark = df.sparkSession
    task = artifacts[0].manifest.task
    spec = artifacts[0].manifest.features
    cols = spec.columns or [spec.array_column or spec.image_column]
    field = {"classification": "probabilities", "embedding": "embedding"}.get(task)
    if field is None:  # regression: fidelity is the largest absolute difference of the value
        field = "value"
    outputs: dict[str, F.Column] = {}
    if torch_model is not None and task == "classification":
        outputs[TORCH] = _torch_probabilities(torch_model, artifacts[0], batch_size)(*cols)
    for i, artifact in enumerate(artifacts):
        udf = model_udf(artifact, spark=spark, probabilities=True, batch_size=batch_size)
        outputs[model_key(artifact, i)] = udf(*cols)[field]
    names = list(outputs)
    ref = names[0]
    scored = df.select(
        *([F.col(label_column).alias("__label")] if label_column else []),
        *[c.alias(f"__m{j}") for j, c in enumerate(outputs.values())],
    )
    r = F.col("__m0")
    aggs = [F.count(F.lit(1)).alias("rows")]
    for j in range(len(names)):
        m = F.col(f"__m{j}")
        if task == "classification":
            aggs.append(F.avg((_argmax(m) == _argmax(r)).cast("double")).alias(f"agree_{j}"))
            diff = F.array_max(F.zip_with(m, r, lambda x, y: F.abs(x - y)))
            aggs.append(F.max(diff).alias(f"maxdiff_{j}"))
            if label_column:
                acc = (_argmax(m) == F.col("__label")).cast("double")
                aggs.append(F.avg(acc).alias(f"acc_{j}"))
        elif task == "embedding":
            dot = F.aggregate(F.zip_with(m, r, lambda x, y: x * y), F.lit(0.0), lambda a, x: a + x)
            norm_m = F.sqrt(F.aggregate(m, F.lit(0.0), lambda a, x: a + x * x))
            norm_r = F.sqrt(F.aggregate(r, F.lit(0.0), lambda a, x: a + x * x))
            cosine = dot / (norm_m * norm_r)
            aggs += [F.avg(cosine).alias(f"cos_{j}"), F.min(cosine).alias(f"mincos_{j}")]
        else:
            aggs.append(F.max(F.abs(m - r)).alias(f"maxdiff_{j}"))
    row = scored.agg(*aggs).first()
    out = {}
    for j, name in enumerate(names):
        if task == "classification":
            fidelity = {
                "reference": ref,
                "agreement": float(row[f"agree_{j}"]),
                "max_abs_diff": float(row[f"maxdiff_{j}"]),
            }
        elif task == "embedding":
            fidelity = {
                "reference": ref,
                "cosine_mean": float(row[f"cos_{j}"]),
                "min_cosine": float(row[f"mincos_{j}"]),
            }
        else:
            fidelity = {"reference": ref, "max_abs_diff": float(row[f"maxdiff_{j}"])}
        accuracy = float(row[f"acc_{j}"]) if label_column and task == "classification" else None
        out[name] = {"accuracy": accuracy, "fidelity": fidelity, "rows": int(row["rows"])}
    return out


def _torch_probabilities(model: TorchModel, artifact: Artifact, batch_size: int):
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import ArrayType, FloatType

    def make_predict_fn():
        import numpy as np
        import torch

        torch.set_num_threads(1)
        net = model.build()

        def predict(x):
            with torch.inference_mode():
                logits = net(torch.from_numpy(np.asarray(x, dtype=np.float32)))
                return torch.softmax(logits, dim=-1).numpy()

        return predict

    _, shapes = feature_matrix_column(artifact)
    return predict_batch_udf(
        image_decoding(make_predict_fn, artifact),
        return_type=ArrayType(FloatType()),
        batch_size=batch_size,
        input_tensor_shapes=shapes,
    )


def measure_bound(
    df: DataFrame,
    artifacts: list[Artifact],
    *,
    torch_model: TorchModel | None,
    rows: int,
    cores: int,
    bound_rows: int,
    batch_size: int,
    repeats: int,
    console: Console,
    scan: ScanPlan | None = None,
    arrow_batch_rows: int = 10_000,
    torch_batch_size: int | None = None,
) -> dict:
    """What reading and each model cost alone: read-only passes over the input (no model) by
    Spark's reader into its noop sink, by Spark's reader into a Python task (its in-task
    clock gives the reading cost per row of a path on Spark's reader), and by the scan
    engine's pyarrow reader when ``scan`` is given; and each model alone on numpy rows already
    in memory, one thread, times the cores."""
    base = artifacts[0]
    clock = TaskClock.create(df.sparkSession)
    passes = {"spark": read_only_frame(df, base)}
    if clock is not None:
        passes["spark-to-python"] = spark_read_only_frame(df, base, clock)
    if scan is not None:
        passes["pyarrow"] = scan_read_only_frame(
            df.sparkSession, scan, base, batch_rows=arrow_batch_rows
        )
    read_only = {}
    for reader, frame in passes.items():
        noop_seconds(frame)
        reads, in_task = [], []
        for _ in range(repeats):
            before = clock.values() if clock is not None else None
            reads.append(noop_seconds(frame))
            if reader == "spark-to-python":
                in_task.append(since(clock, before)["read_s"])
        wall = statistics.median(reads)
        console.log(f"  read-only pass ({reader}): {rows / wall:,.0f} rows/s")
        if in_task:
            read_only["spark_read_s_per_row"] = statistics.median(in_task) / rows
        read_only[reader] = {
            "reader": reader,
            "rows": rows,
            "wall_s": round(wall, 3),
            "wall_s_all": [round(w, 3) for w in reads],
            "rows_per_s": round(rows / wall, 1),
        }
    read_s_per_row = read_only.pop("spark_read_s_per_row", None)
    fastest = min(read_only.values(), key=lambda r: r["wall_s"])
    matrix = input_matrix(df, base, bound_rows)
    models = {}
    if torch_model is not None:
        models[TORCH] = {
            "rows_per_s_per_core": _raw_torch(torch_model, matrix, torch_batch_size or batch_size)
        }
    for i, artifact in enumerate(artifacts):
        per_core = raw_rows_per_s(
            raw_onnx_predict(artifact.read_model_bytes(), threads=1), matrix, batch_size=batch_size
        )
        models[model_key(artifact, i)] = {"rows_per_s_per_core": per_core}
    for name, m in models.items():
        m["rows_per_s"] = round(m["rows_per_s_per_core"] * cores, 1)
        m["rows_per_s_per_core"] = round(m["rows_per_s_per_core"], 1)
        m["runtime"] = "torch" if name == TORCH else "onnxruntime"
        console.log(f"  raw {name}: {m['rows_per_s_per_core']:,.0f} rows/s on one thread")
    return {
        "read_only": fastest,
        "read_only_passes": read_only,
        "spark_read_s_per_row": read_s_per_row,
        "raw_rows": len(matrix),
        "threads_per_core": 1,
        "models": models,
        "how": (
            "Read-only passes of the input's feature column with no model: Spark's reader "
            "into its noop sink; Spark's reader into a Python task that only counts rows (its "
            "in-task wait is the reading cost per row used for predict_batch_udf's breakdown); "
            "and (where the scan engine applies) pyarrow decoding the same Parquet files inside "
            "the tasks. Models alone: rows already in a numpy matrix on the driver, one "
            f"thread, batches of {batch_size} (PyTorch: {torch_batch_size or batch_size}), times "
            f"{cores} cores (ideal scaling)."
        ),
    }


def sweep_torch_batch_size(model: TorchModel, matrix, sizes: list[int], *, rounds: int = 2) -> dict:
    """PyTorch's best batch for predict_batch_udf: rows/s of the model alone on one thread
    (as in a task) over ``matrix`` at each size, interleaved ``rounds`` times, medians; the
    fastest wins. The per-row cost of the model is what the batch changes; predict_batch_udf's
    own overhead per batch only favours larger batches further."""
    speeds: dict[int, list[float]] = {n: [] for n in sizes}
    for _ in range(rounds):
        for n in sizes:
            speeds[n].append(_raw_torch(model, matrix, n))
    medians = {n: round(statistics.median(v), 1) for n, v in speeds.items()}
    chosen = max(medians, key=lambda n: medians[n])
    return {
        "chosen": chosen,
        "rows_per_s_by_size": {str(n): medians[n] for n in sizes},
        "rows": len(matrix),
        "how": f"the PyTorch model alone on {len(matrix):,} input rows in this process, one "
        f"thread, {rounds} interleaved rounds per size, medians; the fastest size is used",
    }


def _raw_torch(model: TorchModel, matrix, batch_size: int) -> float:
    import torch

    previous = torch.get_num_threads()
    try:  # torch_predict_fn sets one thread, as in a task
        return raw_rows_per_s(torch_predict_fn(model)(), matrix, batch_size=batch_size)
    finally:
        torch.set_num_threads(previous)


def compare_variants(
    spark: SparkSession,
    df: DataFrame,
    artifacts: list[Artifact],
    pricing: Pricing,
    *,
    label_column: str | None = None,
    repeats: int = 3,
    batch_size: int = 4096,
    torch_model: TorchModel | None = None,
    onnx_predict_batch_udf: bool = False,
    bound_rows: int | None = None,
    console: Console | None = None,
    keep: list[str] | None = None,
    scan: ScanPlan | None = None,
    arrow_batch_rows: int = 10_000,
    mlflow_spark_udf: bool = False,
    distinct_examples: int | None = None,
    bench_targets: BenchTargets | None = None,
    spark_reader_variant: bool = False,
    torch_batch_sizes: list[int] | None = None,
    torch_sweep_rows: int = 10_000,
) -> dict:
    """Measure every variant on ``df``: interleaved, after a warm-up, median of ``repeats``;
    then quality, the bound (when ``bound_rows``) and the cost of each. ``scan``: the plan of
    the scan engine over the table ``df`` reads (leanscore variants then use it).
    ``torch_batch_sizes``: PyTorch's batch in predict_batch_udf is the fastest of these
    (``sweep_torch_batch_size``); none: ``batch_size``."""
    console = console or wide_console()
    cores = spark_cores(spark)
    keep = default_keep(df, artifacts[0]) if keep is None else keep
    torch_batch = None
    if torch_model is not None and torch_batch_sizes:
        matrix = input_matrix(df, artifacts[0], torch_sweep_rows)
        torch_batch = sweep_torch_batch_size(torch_model, matrix, torch_batch_sizes)
        console.log(
            f"PyTorch batch for predict_batch_udf: {torch_batch['chosen']} rows (rows/s alone, "
            f"one thread, by size: {torch_batch['rows_per_s_by_size']})"
        )
    torch_batch_size = torch_batch["chosen"] if torch_batch else batch_size
    variants = build_variants(
        artifacts,
        torch_model=torch_model,
        onnx_predict_batch_udf=onnx_predict_batch_udf,
        batch_size=batch_size,
        torch_batch_size=torch_batch_size,
        keep=keep,
        scan=scan,
        arrow_batch_rows=arrow_batch_rows,
        mlflow_spark_udf=mlflow_spark_udf,
        spark=spark,
        spark_reader_variant=spark_reader_variant,
    )
    rows = df.count()
    console.log(f"timing {len(variants)} variants on {rows:,} rows, {cores} cores, {repeats}x")
    runs = time_variants(df, variants, repeats=repeats, meter=CpuMeter(spark), console=console)
    console.log("quality pass: every model on every row, side by side")
    qualities = quality(df, artifacts, label_column, torch_model=torch_model, batch_size=batch_size)
    bound = None
    if bound_rows:
        console.log("read-only passes and each model alone")
        bound = measure_bound(
            df,
            artifacts,
            torch_model=torch_model,
            rows=rows,
            cores=cores,
            bound_rows=bound_rows,
            batch_size=batch_size,
            repeats=repeats,
            console=console,
            scan=scan,
            arrow_batch_rows=arrow_batch_rows,
            torch_batch_size=torch_batch_size,
        )
    results = [
        _variant_result(
            v,
            r,
            qualities,
            bound,
            pricing,
            rows=rows,
            cores=cores,
            distinct_examples=distinct_examples,
        )
        for v, r in zip(variants, runs, strict=True)
    ]
    base_cost = results[0]
    for res in results:
        res.update(rounded_cost(savings(base_cost, res)))
        res["speedup"] = round(res["rows_per_s"] / base_cost["rows_per_s"], 3)
    return {
        "rows": rows,
        "cores": cores,
        "repeats": repeats,
        "batch_size": batch_size,
        "torch_batch_size": torch_batch_size if torch_model is not None else None,
        "torch_batch_sweep": torch_batch,
        "kept_columns": keep,
        "baseline": results[0]["name"],
        "variants": results,
        "leanscore_vs_spark_udf": leanscore_over(results, "spark_udf") or None,
        "decomposition": decompose(results, bench_targets or BenchTargets()),
        "distinct_examples": distinct_examples,
        "notes": [WARM_UP_NOTE],
        "bound": bound,
        "pricing": pricing.model_dump(),
    }


def _variant_result(
    v: Variant,
    runs: list[dict],
    qualities: dict[str, dict],
    bound: dict | None,
    pricing: Pricing,
    *,
    rows: int,
    cores: int,
    distinct_examples: int | None = None,
) -> dict:
    walls = [r["wall_s"] for r in runs]
    wall = statistics.median(walls)
    q = qualities.get(v.model, {"accuracy": None, "fidelity": None})

    def median_of(key: str) -> float | None:
        values = [r[key] for r in runs if r.get(key) is not None]
        return statistics.median(values) if values else None

    executor_cpu, process_cpu = median_of("executor_cpu_s"), median_of("process_cpu_s")
    rows_read = [r.get("rows_read") for r in runs]
    rows_out = next((r["rows_out"] for r in runs if "rows_out" in r), None)
    rows_predicted = next((r["rows_predicted"] for r in runs if "rows_predicted" in r), None)
    # the round whose wall is the median: its in-task seconds, so the parts add up to it
    median_run = min(runs, key=lambda r: abs(r["wall_s"] - wall))
    times = breakdown(
        median_run.get("task_s"),
        wall_s=median_run["wall_s"],
        cores=cores,
        rows=rows,
        read_s_per_row=(
            (bound or {}).get("spark_read_s_per_row") if v.path == "predict_batch_udf" else None
        ),
    )
    money = cost(pricing, rows=rows, wall_s=wall, cores=cores)
    return {
        "name": v.name,
        "model": v.model,
        "path": v.path,
        "engine": v.engine,
        "compressed": v.compressed,
        "batch_size": v.batch_size,
        "rows": rows,
        "rows_read": rows_read,
        "rows_out": rows_out,
        "rows_predicted": rows_predicted,
        "rows_scored": q.get("rows"),
        "wall_s": round(wall, 6),
        "wall_s_all": [round(w, 3) for w in walls],
        "wall_s_spread": round(max(walls) - min(walls), 3),
        "rows_per_s": round(rows / wall, 1),
        "rows_per_s_per_core": round(rows / wall / cores, 1),
        "executor_cpu_s": None if executor_cpu is None else round(executor_cpu, 3),
        "process_cpu_s": None if process_cpu is None else round(process_cpu, 3),
        "process_cpu_s_per_million_rows": (
            None if process_cpu is None else round(process_cpu / rows * 1e6, 3)
        ),
        "model_bytes": v.model_bytes,
        "params": v.params,
        "accuracy": q["accuracy"],
        "accuracy_interval": accuracy_interval(q["accuracy"], distinct_examples or rows),
        "fidelity": q["fidelity"],
        "time_breakdown": times,
        **rounded_cost(money),
    }


def comparison_table(report: dict, title: str | None = None) -> TextTable:
    """Every variant's speed, money, quality and time shares, as a table ``print_table``
    prints complete (fitted to a terminal, or as Markdown). Says how many distinct examples
    the accuracy intervals count."""
    columns = [
        "variant",
        "rows/s",
        "spread",
        "speed-up",
        "$ / M rows",
        "$ / month",
        "saved",
        "accuracy (95%)",
        "agreement",
        "model bytes",
        "read",
        "model",
        "convert",
        "Spark",
    ]
    rows = []
    for v in report["variants"]:
        fid = v["fidelity"] or {}
        spread = v["wall_s_spread"] / v["wall_s"] if v["wall_s"] else 0.0
        shares = (v.get("time_breakdown") or {}).get("shares") or {}
        rows.append(
            [
                v["name"],
                f"{v['rows_per_s']:,.0f}",
                f"±{50 * spread:.0f}%",
                f"{v['rows_per_s'] / report['variants'][0]['rows_per_s']:.2f}x",
                f"{v['usd_per_million_rows']:.5f}",
                f"{v['monthly_usd']:,.2f}",
                f"{v.get('savings_pct', 0.0):.0f}%",
                accuracy_text(v),
                percent(fid.get("agreement")) if "agreement" in fid else "n/a",
                f"{v['model_bytes']:,}",
                *[percent(shares.get(k)) if shares else "n/a" for k in PARTS],
            ]
        )
    n = report.get("distinct_examples") or report["rows"]
    notes = [f"Accuracy: Wilson 95% intervals over {n:,} distinct examples."]
    over = [v for v in report["variants"] if (v.get("time_breakdown") or {}).get("over_measured_s")]
    notes += [
        f"{v['name']}: in-task clocks measured {v['time_breakdown']['over_measured_s']:.2f} s "
        "more than the cores had (shares add up to more than 100%)."
        for v in over
    ]
    return TextTable(
        title or f"{report['rows']:,} rows on {report['cores']} cores",
        columns,
        rows,
        left={"variant"},
        notes=notes,
    )


def decomposition_table(report: dict, title: str = "What each part buys") -> TextTable:
    from leanscore.bench.decompose import candidates_lines, decomposition_rows

    return TextTable(
        f"{title} (rows/s ratios, side by side in this run)",
        ["effect", "ratio", "variant", "against", "target", "met"],
        decomposition_rows(report["decomposition"]),
        left={"variant", "against", "target", "met"},
        notes=candidates_lines(report["decomposition"]),
    )


def resolve_path(path: str, base: Path) -> str:
    """Absolute as given; else relative to the working directory, or to the config's folder
    when only that exists; paths yet to be made are relative to the working directory."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return str(p.resolve())
    return str((base / p).resolve()) if (base / p).exists() else str(p.resolve())
