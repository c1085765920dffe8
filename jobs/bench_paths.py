"""The scoring paths the benchmark times, each a lazy DataFrame to drive into the noop sink.

- ``leanscore``: this project's scoring: the scan engine (``udfs.scan``) where the input is a
  whole Parquet/Delta table it can read, else ``leanscore.udfs.score_dataframe`` on Spark's reader.
- ``predict_batch_udf``: Spark's own ``pyspark.ml.functions.predict_batch_udf``, as teams run
  a model today, around either the PyTorch model or the identical ONNX model (one thread per
  task, the same batch size), returning the same label + probability as ``leanscore``.
- ``read_only``: the input's feature column into the sink, no Python, no model; and the scan
  engine's read of the same column with pyarrow, no model.

Plus ``raw_rows_per_s``: the model alone on numpy rows already in memory, one thread (the
bound a Spark path can approach per core).
"""

from __future__ import annotations

import importlib
import io
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from leanscore.compression.artifact import Artifact
from leanscore.udfs.predict import score_dataframe
from leanscore.udfs.scan import ScanPlan, arrow_types, plan_reader, score_table, slice_frame
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


def feature_matrix_column(artifact: Artifact) -> tuple[list[str], list[list[int]]]:
    """The columns and ``input_tensor_shapes`` predict_batch_udf needs for this artifact."""
    spec = artifact.manifest.features
    if spec.array_column is not None:
        return [spec.array_column], [[spec.size]]
    return list(spec.columns), [[1]] * len(spec.columns)


def _label_probability(probabilities: np.ndarray) -> dict[str, np.ndarray]:
    return {"label": probabilities.argmax(axis=1), "probability": probabilities.max(axis=1)}


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
) -> DataFrame:
    from pyspark.ml.functions import predict_batch_udf

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
) -> DataFrame:
    """This project's scoring of ``df``: by the scan engine when ``scan`` plans the read of
    the same table (``udfs.scan``), else Spark's reader and the Arrow path."""
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


def input_matrix(df: DataFrame, artifact: Artifact, rows: int) -> np.ndarray:
    """Up to ``rows`` rows of the model's input as one float32 matrix on the driver."""
    spec = artifact.manifest.features
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
