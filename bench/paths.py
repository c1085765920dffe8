"""The scoring paths the benchmark times, each a lazy DataFrame to drive into the noop sink.

- ``leanscore``: this project's scoring: the scan engine (``udfs.engines.scan``) where the input
  is a whole Parquet/Delta table it can read, else ``leanscore.udfs.score_dataframe`` on Spark's
  reader.
- ``predict_batch_udf``: Spark's own ``pyspark.ml.functions.predict_batch_udf``, as teams run
  a model today, around either the PyTorch model or the identical ONNX model (one thread per
  task, the same batch size), returning the same label + probability as ``leanscore``.
- ``spark_udf``: ``mlflow.pyfunc.spark_udf`` on the model as MLflow serves it (what Databricks
  teams run on registered models), here leanscore's python_function wrapper of the artifact.
- ``read_only``: the input's feature column into the sink, no Python, no model; and the scan
  engine's read of the same column with pyarrow, no model.

Plus ``raw_rows_per_s``: the model alone on numpy rows already in memory, one thread.

Every path takes a ``TaskClock`` (``timing``): its tasks then add the seconds they spend
reading, in the model and converting to accumulators. The timed ``leanscore`` paths are the
product's own pieces (``build_scorer``, ``record_batch_scorer``, ``plan_reader``, the scan plan)
assembled with a clock around them; without a clock (Spark Connect) the product's entry
points run as they are.

Adding a kind of path (another way teams score) is one frame function here, taking
``clock=`` like the others, and one ``Variant(...)`` entry in ``bench.build_variants`` naming
its ``model``, ``path`` and reader (``engine``), which is what ``decompose`` pairs on.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from leanscore.bench.timing import TaskClock, timed_batches, timed_predict_fn
from leanscore.compression.artifact import Artifact
from leanscore.udfs.api import build_scorer, resolve_columns, score_dataframe, score_table
from leanscore.udfs.arrow_path import output_schema, record_batch_scorer
from leanscore.udfs.distribution import DEFAULT_PATH_THRESHOLD_BYTES
from leanscore.udfs.engines.scan import ScanPlan, arrow_types, plan_reader, slice_frame
from leanscore.udfs.kernel import Scorer
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import FloatType, LongType, StructField, StructType

LABEL_PROBABILITY = StructType(
    [StructField("label", LongType(), True), StructField("probability", FloatType(), True)]
)


@dataclass(frozen=True)
class TorchModel:
    """A PyTorch model as teams keep it: a factory (``module.function``) and a state_dict."""

    factory: str
    state_dict_bytes: bytes

    @classmethod
    def load(cls, factory: str, state_dict_path: str | Path) -> TorchModel:
        path = Path(state_dict_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"torch state_dict {path} does not exist; save it with "
                "torch.save(model.state_dict(), path) or let the bench's prepare step make it"
            )
        model = cls(factory, path.read_bytes())
        model.build()  # fail on the driver, naming the file, not in a task
        return model

    def build(self):
        import torch

        module_name, _, func = self.factory.rpartition(".")
        try:
            make = getattr(importlib.import_module(module_name), func)
        except (ImportError, AttributeError, ValueError) as err:
            raise ValueError(
                f"torch factory {self.factory!r} is not an importable module.function: {err}"
            ) from err
        model = make()
        state = torch.load(io.BytesIO(self.state_dict_bytes), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        return model.eval()

    def params(self) -> int:
        return sum(p.numel() for p in self.build().parameters())


def feature_matrix_column(artifact: Artifact) -> tuple[list[str], list[list[int]] | None]:
    """The columns and ``input_tensor_shapes`` predict_batch_udf needs for this artifact (an
    image column goes in as its bytes: the predict function decodes them, ``image_decoding``)."""
    spec = artifact.manifest.features
    if spec.image_column is not None:
        return [spec.image_column], None
    if spec.array_column is not None:
        return [spec.array_column], [[spec.size]]
    return list(spec.columns), [[1]] * len(spec.columns)


def _label_probability(probabilities: np.ndarray) -> dict[str, np.ndarray]:
    return {"label": probabilities.argmax(axis=1), "probability": probabilities.max(axis=1)}


def image_decoding(make_predict_fn: Callable, artifact: Artifact) -> Callable:
    """For an image artifact, ``make_predict_fn``'s predict behind the image family's own
    decoding (PNG/JPEG bytes -> the model's normalised float32 input), as a team scoring
    image bytes in ``predict_batch_udf`` would decode in its predict function; other
    artifacts' functions as they are."""
    features = artifact.manifest.features
    if features.image_column is None:
        return make_predict_fn
    column, spec = features.image_column, features.image

    def make_decoding_fn():
        from leanscore.compression.image_inputs import decode_images

        predict = make_predict_fn()

        def decode_then_predict(x: np.ndarray):
            return predict(decode_images(list(x), column, spec).matrix)

        return decode_then_predict

    return make_decoding_fn


def torch_predict_fn(model: TorchModel) -> Callable:
    def make_predict_fn():
        import torch

        torch.set_num_threads(1)  # one per task, as each task has one core
        net = model.build()

        def predict(x: np.ndarray) -> dict[str, np.ndarray]:
            with torch.inference_mode():
                logits = net(torch.from_numpy(np.asarray(x, dtype=np.float32)))
                return _label_probability(torch.softmax(logits, dim=-1).numpy())

        return predict

    return make_predict_fn


def onnx_predict_fn(model_bytes: bytes, threads: int = 1) -> Callable:
    def make_predict_fn():
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def predict(x: np.ndarray) -> dict[str, np.ndarray]:
            out = session.run(None, {name: np.asarray(x, dtype=np.float32)})[0]
            return _label_probability(out)

        return predict

    return make_predict_fn


def predict_batch_frame(
    df: DataFrame,
    artifact: Artifact,
    make_predict_fn: Callable,
    *,
    batch_size: int,
    keep: list[str],
    clock: TaskClock | None = None,
) -> DataFrame:
    from pyspark.ml.functions import predict_batch_udf

    if clock is not None:
        make_predict_fn = timed_predict_fn(make_predict_fn, clock)
    make_predict_fn = image_decoding(make_predict_fn, artifact)  # outside the model's clock

    cols, shapes = feature_matrix_column(artifact)
    if len(cols) > 1:
        # predict_batch_udf takes one tensor per column; many scalar columns go in as one array
        cols, shapes = [F.array(*[F.col(c).cast("float") for c in cols])], [[len(cols)]]
    udf = predict_batch_udf(
        make_predict_fn,
        return_type=LABEL_PROBABILITY,
        batch_size=batch_size,
        input_tensor_shapes=shapes,
    )
    return df.withColumn("__pred", udf(*cols)).select(
        *keep,
        F.col("__pred.label").alias("prediction"),
        F.col("__pred.probability").alias("probability"),
    )


def leanscore_frame(
    df: DataFrame,
    artifact: Artifact,
    *,
    batch_size: int,
    keep: list[str],
    scan: ScanPlan | None = None,
    arrow_batch_rows: int = 10_000,
    clock: TaskClock | None = None,
) -> DataFrame:
    """This project's scoring of ``df``: by the scan engine when ``scan`` plans the read of
    the same table (``udfs.engines.scan``), else Spark's reader and the Arrow path."""
    if clock is not None:
        return _timed_leanscore(
            df,
            artifact,
            batch_size=batch_size,
            keep=keep,
            scan=scan,
            arrow_batch_rows=arrow_batch_rows,
            clock=clock,
        )
    if scan is None:
        return score_dataframe(df, artifact, batch_size=batch_size, keep_columns=keep)
    return score_table(
        df.sparkSession,
        scan.path,
        artifact,
        format=scan.format,
        engine="scan",
        keep_columns=keep,
        batch_size=batch_size,
        arrow_batch_rows=arrow_batch_rows,
    )


def mlflow_model_uri(artifact: Artifact) -> str:
    """The registry version a registered artifact came from, else the artifact saved as a
    local MLflow model folder (no tracking store needed)."""
    registered = getattr(artifact, "registered", None)
    if registered is not None:
        return registered.source
    from leanscore.compression.mlflow_log import save_local_model

    return save_local_model(artifact)


def spark_udf_frame(df: DataFrame, model_uri: str, artifact: Artifact, *, keep: list[str]):
    """``mlflow.pyfunc.spark_udf`` over Spark's reader, returning leanscore's columns."""
    import mlflow.pyfunc
    from leanscore.udfs.schema import feature_names

    udf = mlflow.pyfunc.spark_udf(df.sparkSession, model_uri, env_manager="local")
    return df.withColumn("__pred", udf(*feature_names(artifact.manifest))).select(
        *keep,
        F.col("__pred.prediction").alias("prediction"),
        F.col("__pred.probability").alias("probability"),
    )


def leanscore_over(results: list[dict], path: str) -> dict[str, float]:
    """Per model: leanscore's rows/s over the same model's rows/s on ``path``."""
    rows_per_s = {r["name"]: r["rows_per_s"] for r in results}
    ratios = {}
    for name, rate in rows_per_s.items():
        model, _, kind = name.rpartition("/")
        ours = rows_per_s.get(f"{model}/leanscore")
        if kind == path and ours and rate:
            ratios[model] = round(ours / rate, 3)
    return ratios


@dataclass(frozen=True)
class TimedScorer(Scorer):
    """The product's scorer, adding the seconds of each model call to a clock."""

    clock: TaskClock | None = None

    @classmethod
    def wrap(cls, scorer: Scorer, clock: TaskClock) -> TimedScorer:
        fields = {f.name: getattr(scorer, f.name) for f in dataclasses.fields(scorer)}
        return cls(**fields, clock=clock)

    def run(self, session, input_name: str, matrix: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        try:
            return super().run(session, input_name, matrix)
        finally:
            self.clock.model.add(time.perf_counter() - start)


def _timed_leanscore(
    df: DataFrame,
    artifact: Artifact,
    *,
    batch_size: int,
    keep: list[str],
    scan: ScanPlan | None,
    arrow_batch_rows: int,
    clock: TaskClock,
) -> DataFrame:
    """``leanscore_frame`` with a clock in its tasks (the same scorer, reader and plan)."""
    spark = df.sparkSession
    _, keep, fields, names = resolve_columns(
        df,
        artifact,
        key_columns=None,
        keep_columns=keep,
        output_column="prediction",
        probabilities=False,
    )
    scorer = TimedScorer.wrap(
        build_scorer(
            artifact,
            spark=spark,
            batch_size=batch_size,
            bad_rows="fail",
            probabilities=False,
            session_config=None,
            path_threshold_bytes=DEFAULT_PATH_THRESHOLD_BYTES,
        ),
        clock,
    )
    features = scorer.family.input_columns()
    schema, out_names = output_schema((scan.schema if scan else df.schema), keep, fields, names)

    if scan is None:

        def score_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            start = time.perf_counter()
            score = record_batch_scorer(scorer, features, features, keep, [], out_names)
            yield from timed_batches(batches, score, clock, task_start=start)

        sent = list(dict.fromkeys([*keep, *features]))
        return df.select(*sent).mapInArrow(score_batches, schema)

    types = arrow_types(scan, [*keep, *features], spark.conf.get("spark.sql.session.timeZone"))
    read_slices = plan_reader(scan, types, arrow_batch_rows)

    def score_slices(descriptors: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        start = time.perf_counter()
        score = record_batch_scorer(scorer, features, features, keep, [], out_names)
        yield from timed_batches(read_slices(descriptors), score, clock, task_start=start)

    return slice_frame(spark, scan).mapInArrow(score_slices, schema)


def read_only_frame(df: DataFrame, artifact: Artifact) -> DataFrame:
    cols, _ = feature_matrix_column(artifact)
    return df.select(*cols)


def scan_read_only_frame(
    spark: SparkSession, plan: ScanPlan, artifact: Artifact, *, batch_rows: int
) -> DataFrame:
    """The scan engine's read with no model: each task decodes its slice of the feature
    columns with pyarrow and returns only its row count."""
    cols, _ = feature_matrix_column(artifact)
    types = arrow_types(plan, cols, spark.conf.get("spark.sql.session.timeZone"))
    read_slices = plan_reader(plan, types, batch_rows)

    def read(descriptors: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        rows = sum(rb.num_rows for rb in read_slices(descriptors))
        yield pa.RecordBatch.from_arrays([pa.array([rows], pa.int64())], names=["rows"])

    return slice_frame(spark, plan).mapInArrow(read, "rows long")


def spark_read_only_frame(df: DataFrame, artifact: Artifact, clock: TaskClock) -> DataFrame:
    """Spark's reader handing the feature column to a Python task that only counts rows: its
    clock's ``read_s`` is what reading costs a path on Spark's reader, measured in the task."""
    cols, _ = feature_matrix_column(artifact)

    def count(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        start = time.perf_counter()
        yield from timed_batches(
            batches,
            lambda rb: pa.RecordBatch.from_arrays([pa.array([rb.num_rows], pa.int64())], ["rows"]),
            clock,
            task_start=start,
        )

    return df.select(*cols).mapInArrow(count, "rows long")


def input_matrix(df: DataFrame, artifact: Artifact, rows: int) -> np.ndarray:
    """Up to ``rows`` rows of the model's input as one float32 matrix on the driver."""
    spec = artifact.manifest.features
    if spec.image_column is not None:  # decoded as the image family decodes for scoring
        from leanscore.compression.image_inputs import decode_images

        table = df.select(spec.image_column).limit(rows).toArrow()
        values = table.column(0).to_pylist()
        return decode_images(values, spec.image_column, spec.image).matrix
    if spec.array_column is not None:
        table = df.select(F.col(spec.array_column).cast("array<float>")).limit(rows).toArrow()
        flat = table.column(0).combine_chunks().flatten().to_numpy(zero_copy_only=False)
        return np.array(flat, dtype=np.float32).reshape(-1, spec.size)  # writable for torch
    table = df.select(*[F.col(c).cast("float") for c in spec.columns]).limit(rows).toArrow()
    return np.column_stack([table.column(c).to_numpy() for c in spec.columns]).astype(np.float32)


def raw_rows_per_s(
    predict: Callable[[np.ndarray], object], matrix: np.ndarray, *, batch_size: int
) -> float:
    """Rows/s of ``predict`` over ``matrix`` in batches, after one warm-up batch."""
    predict(matrix[:batch_size])
    start = time.perf_counter()
    for i in range(0, len(matrix), batch_size):
        predict(matrix[i : i + batch_size])
    return len(matrix) / (time.perf_counter() - start)


def raw_onnx_predict(model_bytes: bytes, threads: int = 1) -> Callable:
    return onnx_predict_fn(model_bytes, threads)()
