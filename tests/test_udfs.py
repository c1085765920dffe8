"""The scoring engine: the Arrow path against the pandas path, input layouts and coercion,
bad-row policies, model distribution and session options. Real Spark, real ONNX Runtime."""

from __future__ import annotations

import decimal

import numpy as np
import onnxruntime as ort
import pandas as pd
import pyarrow as pa
import pytest
from conftest import BAD_ROWS, held_out_frame, make_artifact
from leanscore.udfs import model_udf, score_dataframe
from leanscore.udfs.arrow_batch import from_arrow_columns, from_arrow_list
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual


@pytest.fixture(scope="module")
def int8_artifact(small_model, tmp_path_factory):
    steps = [{"step": "export"}, {"step": "quantize", "mode": "dynamic_int8"}]
    return make_artifact(
        small_model, tmp_path_factory.mktemp("artifacts") / "int8", recipe_steps=steps
    )


def _with_bad_rows(spark, digits, n=90):
    bad = spark.createDataFrame(BAD_ROWS, "row_id long, features array<float>")
    good = held_out_frame(spark, digits, n=n).drop("label")
    return good.unionByName(bad).repartition(2, "row_id")


def _both_paths(df, artifact, **options):
    return [
        score_dataframe(df, artifact, key_columns=["row_id"], engine=e, **options)
        .orderBy("row_id")
        .toPandas()
        for e in ("pandas", "arrow")
    ]


@pytest.mark.parametrize("model", ["artifact", "int8_artifact"])
def test_arrow_path_equals_pandas_path_bitwise_with_flagged_rows(spark, digits, model, request):
    artifact = request.getfixturevalue(model)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "32")
    try:
        pandas_out, arrow_out = _both_paths(
            _with_bad_rows(spark, digits), artifact, bad_rows="flag", batch_size=13
        )
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
    assert len(arrow_out) == 95
    for column in ("row_id", "prediction", "probability"):
        a, p = arrow_out[column].to_numpy(), pandas_out[column].to_numpy()
        np.testing.assert_array_equal(a, p, err_msg=column)
    assert arrow_out["probability"].dtype == pandas_out["probability"].dtype
    # pandas cannot tell a null element from a NaN; the Arrow path can.
    pandas_errors = pandas_out["prediction_error"].str.replace(" (or null)", "", regex=False)
    assert arrow_out["prediction_error"].tolist()[:90] == [None] * 90
    assert dict(zip(arrow_out["row_id"][90:], arrow_out["prediction_error"][90:], strict=True)) == {
        1000: "column 'features' is null",
        1001: "column 'features' has 63 elements, the model expects 64",
        1002: "column 'features' element 0 is NaN",
        1003: "column 'features' element 0 is inf",
        1004: "column 'features' element 10 is null",
    }
    assert pandas_errors[:94].tolist() == arrow_out["prediction_error"][:94].tolist()
    assert pandas_errors[94] == "column 'features' element 10 is NaN"
    assert arrow_out["prediction"][90:].isna().all()


@pytest.mark.parametrize("engine", ["pandas", "arrow"])
def test_fail_policy_names_key_column_and_value(spark, digits, artifact, engine):
    df = _with_bad_rows(spark, digits, n=20).where("row_id < 1000 or row_id = 1003")
    with pytest.raises(
        Exception, match=r"row with key 'row_id=1003': column 'features' element 0 is inf"
    ):
        score_dataframe(df, artifact, key_columns=["row_id"], engine=engine).collect()


def test_vector_double_and_numeric_columns_score_like_float_arrays(
    spark, digits, artifact, columns_artifact
):
    from leanscore.bench.demo.datagen import feature_column_names
    from pyspark.ml.functions import array_to_vector

    base = held_out_frame(spark, digits, n=70).drop("label")
    expected = _both_paths(base, artifact)[1]
    doubles = base.withColumn("features", F.col("features").cast("array<double>"))
    vectors = base.withColumn("features", array_to_vector("features"))
    names = feature_column_names()
    # mixed numeric types: double, int (the pixels are whole numbers 0..16 before augmentation
    # noise, so round them first to keep the values equal), decimal
    exact = base.withColumn("features", F.transform("features", lambda x: F.round(x, 0)))
    expected_exact = _both_paths(exact, artifact)[1]
    wide = exact.select(
        "row_id",
        *[
            F.col("features")[i].cast(["double", "int", "decimal(10,2)"][i % 3]).alias(n)
            for i, n in enumerate(names)
        ],
    )
    for frame, art, want in [
        (doubles, artifact, expected),
        (vectors, artifact, expected),
        (wide, columns_artifact, expected_exact),
    ]:
        for got in _both_paths(frame, art):
            np.testing.assert_array_equal(got["prediction"], want["prediction"])
            np.testing.assert_array_equal(got["probability"], want["probability"])


def test_output_schema_and_kept_columns(spark, digits, artifact):
    df = held_out_frame(spark, digits, n=10).withColumn("day", F.lit("2026-01-01").cast("date"))
    for engine in ("pandas", "arrow"):
        out = score_dataframe(
            df,
            artifact,
            keep_columns=["row_id", "day"],
            probabilities=True,
            engine=engine,
            output_column="digit",
        )
        assert out.schema.simpleString() == (
            "struct<row_id:bigint,day:date,digit:bigint,probability:float,"
            "probabilities:array<float>,digit_error:string>"
        )
    assertDataFrameEqual(
        score_dataframe(df, artifact, engine="arrow", probabilities=True),
        score_dataframe(df, artifact, engine="pandas", probabilities=True),
    )
    with pytest.raises(ValueError, match="already has a column 'label'"):
        score_dataframe(df, artifact, output_column="label")


def test_model_batch_size_is_independent_of_arrow_batches(spark, digits, artifact):
    _, held_out = digits
    expected = ort.InferenceSession(artifact.read_model_bytes()).run(
        None, {"features": held_out.features[:150]}
    )[0]
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "40")
    try:
        got = (
            score_dataframe(held_out_frame(spark, digits, n=150), artifact, batch_size=7)
            .orderBy("row_id")
            .toPandas()
        )
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
    np.testing.assert_array_equal(got["prediction"], expected.argmax(1))
    np.testing.assert_allclose(got["probability"], expected.max(1), rtol=1e-5)


def test_model_goes_by_path_above_threshold_and_session_options_apply(spark, digits, artifact):
    from leanscore.udfs.session_cache import SessionConfig

    df = held_out_frame(spark, digits, n=30)
    by_broadcast = model_udf(artifact, spark=spark)
    assert by_broadcast.scorer.source.how == "broadcast"
    assert by_broadcast.scorer.config.intra_op_threads == 1  # spark.task.cpus
    config = SessionConfig(graph_optimization="disable", memory_arena=False)
    by_path = model_udf(artifact, spark=spark, path_threshold_bytes=1, session_config=config)
    assert by_path.scorer.source.how == "path"
    a = df.select(by_broadcast("features")["label"].alias("l")).toPandas()
    b = df.select(by_path("features")["label"].alias("l")).toPandas()
    pd.testing.assert_frame_equal(a, b)
    arrow = score_dataframe(df, artifact, path_threshold_bytes=1, session_config=config)
    assert arrow.select("prediction").toPandas()["prediction"].tolist() == a["l"].tolist()


def test_arrow_matrix_is_the_arrow_buffer_when_rows_are_regular():
    values = pa.array(np.arange(12, dtype=np.float32))
    array = pa.ListArray.from_arrays(pa.array([0, 3, 6, 9, 12], pa.int32()), values)
    batch = from_arrow_list(array.slice(1, 3), "f", 3)
    assert not batch.bad.any()
    np.testing.assert_array_equal(batch.matrix, np.arange(3, 12, dtype=np.float32).reshape(3, 3))
    assert np.shares_memory(batch.matrix, values.to_numpy())
    fixed = pa.FixedSizeListArray.from_arrays(values, 4)
    np.testing.assert_array_equal(
        from_arrow_list(fixed, "f", 4).matrix, values.to_numpy().reshape(3, 4)
    )


def test_float32_bytes_read_as_the_tensor_they_hold_alike_in_arrow_and_pandas():
    """A binary column of each row's float32 bytes: a view of the Arrow buffer where every row
    is whole, and bad rows (null, short, NaN) flagged with the same reasons by both paths."""
    from leanscore.compression.tabular_inputs import from_array

    matrix = np.arange(16, dtype=np.float32).reshape(4, 4)
    matrix[3, 2] = np.nan
    values = [matrix[0].tobytes(), None, matrix[2].tobytes()[:12], matrix[3].tobytes()]
    by_arrow = from_arrow_list(pa.array(values, pa.binary()), "t", 4)
    by_pandas = from_array(pd.Series(values, dtype=object), "t", 4)
    for batch in (by_arrow, by_pandas):
        assert batch.bad.tolist() == [False, True, True, True]
        assert batch.reasons[1:] == [
            "column 't' is null",
            "column 't' has 12 bytes, the model expects 16 (4 float32 numbers, little-endian)",
            "column 't' element 2 is NaN",
        ]
        np.testing.assert_array_equal(batch.matrix[0], matrix[0])
        assert not batch.matrix[1:].any()
    whole = pa.array([row.tobytes() for row in matrix[:3]], pa.binary())
    batch = from_arrow_list(whole.slice(1), "t", 4)
    np.testing.assert_array_equal(batch.matrix, matrix[1:3])
    assert np.shares_memory(batch.matrix, np.frombuffer(whole.buffers()[2], dtype=np.uint8))
    fixed = pa.array([row.tobytes() for row in matrix[:3]], pa.binary(16))
    np.testing.assert_array_equal(from_arrow_list(fixed, "t", 4).matrix, matrix[:3])


def test_arrow_columns_cast_and_flag_like_pandas():
    cols = [
        pa.array([1, 2, None], pa.int64()),
        pa.array([decimal.Decimal("0.5"), decimal.Decimal("1.25"), decimal.Decimal("2")]),
        pa.array([0.5, float("nan"), 2.0]),
    ]
    batch = from_arrow_columns(cols, ["a", "b", "c"])
    assert batch.matrix.dtype == np.float32 and batch.matrix.flags["C_CONTIGUOUS"]
    assert batch.bad.tolist() == [False, True, True]
    assert batch.reasons[1:] == ["column 'c' is NaN", "column 'a' is null"]
    np.testing.assert_array_equal(batch.matrix[0], [1.0, 0.5, 0.5])
    with pytest.raises(TypeError, match="feature column 's' holds Arrow type string"):
        from_arrow_columns([pa.array(["x"])], ["s"])
