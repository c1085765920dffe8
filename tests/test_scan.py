"""The scan engine (pyarrow reads the files inside the tasks) against the Arrow path over
Spark's reader: the same rows and the same bits, bad rows included; and the tables it must not
read itself (partitioned, deletion vectors, filtered) falling back or refused with the reason.
Real Spark, real Delta, real ONNX Runtime."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from conftest import BAD_ROWS, held_out_frame
from leanscore.udfs import score_dataframe
from leanscore.udfs.api import score_table
from leanscore.udfs.engines.scan import ScanUnsupported, plan_scan
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual


def _table(spark, digits, path, *, n=300, files=3, fmt="delta", bad=True):
    df = held_out_frame(spark, digits, n=n).withColumn(
        "seen_at", F.lit(dt.datetime(2026, 11, 28, 3, 0)).cast("timestamp")
    )
    if bad:
        rows = spark.createDataFrame(BAD_ROWS, "row_id long, features array<float>")
        df = df.unionByName(rows, allowMissingColumns=True)
    df.repartition(files).write.format(fmt).save(str(path))
    return str(path)


def _sorted(df):
    return df.orderBy("row_id").toPandas()


def test_scan_equals_arrow_path_bitwise_with_flagged_rows(spark, digits, artifact, tmp_path):
    path = _table(spark, digits, tmp_path / "t")
    options = dict(key_columns=["row_id"], bad_rows="flag", batch_size=13)
    scanned = score_table(spark, path, artifact, engine="scan", arrow_batch_rows=32, **options)
    reference = score_dataframe(spark.read.format("delta").load(path), artifact, **options)
    assert scanned.schema == reference.schema  # names, types and nullability
    got, want = _sorted(scanned), _sorted(reference)
    assert len(got) == 305
    for column in ("row_id", "label", "prediction", "prediction_error", "seen_at"):
        assert got[column].fillna(-1).tolist() == want[column].fillna(-1).tolist(), column
    np.testing.assert_array_equal(got["probability"].to_numpy(), want["probability"].to_numpy())
    as_text = lambda a: None if a is None else [str(x) for x in a]  # noqa: E731 (NaN == NaN)
    assert got["features"].map(as_text).tolist() == want["features"].map(as_text).tolist()
    assert dict(zip(got["row_id"][300:], got["prediction_error"][300:], strict=True)) == {
        1000: "column 'features' is null",
        1001: "column 'features' has 63 elements, the model expects 64",
        1002: "column 'features' element 0 is NaN",
        1003: "column 'features' element 0 is inf",
        1004: "column 'features' element 10 is null",
    }


def test_scan_fail_policy_names_key_column_and_value(spark, digits, artifact, tmp_path):
    path = _table(spark, digits, tmp_path / "t", n=20)
    scored = score_table(spark, path, artifact, engine="scan", key_columns=["row_id"])
    with pytest.raises(Exception, match=r"row with key 'row_id=100\d': column 'features'"):
        scored.collect()


def test_scan_reads_ml_vectors_dense_and_sparse_like_sparks_reader(
    spark, digits, artifact, tmp_path
):
    """An ML Vector column read by the scan engine as Parquet stores it: dense rows, sparse rows
    and a null vector give the predictions and reasons of Spark's reader, row for row."""
    from pyspark.ml.functions import array_to_vector
    from pyspark.ml.linalg import SparseVector, VectorUDT

    dense = held_out_frame(spark, digits, n=60).select(
        "row_id", array_to_vector("features").alias("features")
    )
    from pyspark.sql.types import LongType, StructField, StructType

    schema = StructType([StructField("row_id", LongType()), StructField("features", VectorUDT())])
    sparse = spark.createDataFrame(
        [(2000, SparseVector(64, {3: 1.0, 40: 16.0})), (2001, None)], schema
    )
    path = str(tmp_path / "vectors")
    dense.unionByName(sparse).repartition(2).write.format("delta").save(path)
    options = dict(key_columns=["row_id"], bad_rows="flag")
    scanned = score_table(spark, path, artifact, engine="scan", **options)
    reference = score_dataframe(spark.read.format("delta").load(path), artifact, **options)
    got, want = _sorted(scanned), _sorted(reference)
    assert len(got) == 62
    for column in ("row_id", "prediction", "prediction_error"):
        assert got[column].fillna(-1).tolist() == want[column].fillna(-1).tolist(), column
    np.testing.assert_array_equal(got["probability"].to_numpy(), want["probability"].to_numpy())
    assert got["prediction_error"].tolist()[-1] == "column 'features' is null"


def test_scan_reads_parquet_columns_layout(spark, digits, columns_artifact, tmp_path):
    from leanscore.bench.demo.datagen import feature_column_names

    names = feature_column_names()
    wide = held_out_frame(spark, digits, n=120).select(
        "row_id", *[F.col("features")[i].alias(c) for i, c in enumerate(names)]
    )
    wide.repartition(2).write.parquet(str(tmp_path / "wide"))
    scanned = score_table(
        spark,
        str(tmp_path / "wide"),
        columns_artifact,
        format="parquet",
        engine="scan",
        keep_columns=["row_id"],
    )
    reference = score_dataframe(
        spark.read.parquet(str(tmp_path / "wide")), columns_artifact, keep_columns=["row_id"]
    )
    assert scanned.columns == ["row_id", "prediction", "probability", "prediction_error"]
    assertDataFrameEqual(scanned, reference)


def _many_row_groups(digits, path, *, files=2, rows=1200, group_rows=40):
    """A Parquet directory written by pyarrow with many small row groups per file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, held_out = digits
    path.mkdir()
    for f in range(files):
        ids = np.arange(f * rows, (f + 1) * rows, dtype=np.int64)
        features = held_out.features[ids % len(held_out.features)]
        table = pa.table(
            {"row_id": ids, "features": pa.array(list(features), pa.list_(pa.float32()))}
        )
        pq.write_table(table, path / f"part-{f}.parquet", row_group_size=group_rows)
    return str(path)


def _size(uri):
    from urllib.parse import urlparse

    return Path(urlparse(uri).path).stat().st_size


def test_tasks_are_sized_by_bytes_and_read_every_row_group_once(spark, digits, artifact, tmp_path):
    from leanscore.udfs.engines.scan import open_parquet, row_groups_in

    path = _many_row_groups(digits, tmp_path / "many")
    files = sorted(spark.read.parquet(path).inputFiles())
    cap = sum(_size(f) for f in files) // 5
    plan = plan_scan(
        spark, path, format="parquet", columns=["row_id", "features"], max_task_bytes=cap
    )
    assert len(plan.tasks) >= 5  # several tasks, none over the cap
    assert all(0 < size <= cap for size in plan.task_bytes())
    read: list[tuple[str, int]] = []
    for uri, start, length in plan.units:
        read += [(uri, g) for g in row_groups_in(open_parquet(uri).metadata, start, length)]
    every = [(f, g) for f in files for g in range(open_parquet(f).metadata.num_row_groups)]
    assert len(every) == 60 and sorted(read) == every  # each row group exactly once
    scanned = score_table(
        spark, path, artifact, format="parquet", engine="scan", max_task_bytes=cap
    )
    assert scanned.rdd.getNumPartitions() == len(plan.tasks)  # one Spark task per plan task
    assertDataFrameEqual(scanned, score_dataframe(spark.read.parquet(path), artifact))


def test_each_task_receives_exactly_its_own_slices(spark):
    """The slice frame is built in the JVM: one row per partition, row i holding task i's
    slices as given, whatever characters a file name holds."""
    from leanscore.udfs.engines.scan import ScanPlan, slice_frame
    from pyspark.sql.types import StructType

    odd = 'file:/data/it\'s a "table"/part-0 é,{}.parquet'
    tasks = tuple(((f"file:/data/part-{i}.parquet", 0, 10 + i), (odd, 7 * i, 5)) for i in range(5))
    frame = slice_frame(spark, ScanPlan("/data", "parquet", StructType([]), tasks))
    by_partition = frame.rdd.glom().collect()
    assert [len(rows) for rows in by_partition] == [1] * 5
    for i, (row,) in enumerate(by_partition):
        assert row.task == i
        assert tuple((s.uri, s.start, s.length) for s in row.slices) == tasks[i]


def test_small_table_fills_whole_waves_big_table_is_sized_by_bytes_alone():
    from leanscore.udfs.engines.scan import size_tasks

    mb = 1024**2
    six = [(f"f{i}", 50 * mb) for i in range(6)]
    small = size_tasks(six, max_task_bytes=128 * mb, min_task_bytes=4 * mb, cores=2)
    assert [sum(n for *_, n in t) // mb for t in small] == [100, 100, 50, 50]
    big = [("big", 10_000 * mb)]
    for cores in (2, 64):  # the plan of a big table does not depend on the cores
        tasks = size_tasks(big, max_task_bytes=128 * mb, min_task_bytes=4 * mb, cores=cores)
        assert len(tasks) == 79 and max(sum(n for *_, n in t) for t in tasks) <= 128 * mb
    assert size_tasks([], max_task_bytes=mb, min_task_bytes=mb, cores=2) == ()


def test_deal_balances_rows_over_tasks():
    from leanscore.udfs.engines.scan import deal

    weighted = [(("a", 0), 100), (("a", 1), 10), (("b", 0), 60), (("b", 1), 50), (("c", 0), 40)]
    tasks = deal(weighted, 2)
    # largest first to the lightest: 100+40 and 60+50+10, each in file order
    assert sorted(tasks) == [(("a", 0), ("c", 0)), (("a", 1), ("b", 0), ("b", 1))]
    assert deal(weighted[:1], 4) == ((("a", 0),),)  # never more tasks than units
    assert deal([], 2) == ()


def test_column_differing_in_case_reads_what_spark_reads(spark, digits, artifact, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, held_out = digits
    path = tmp_path / "cased"
    path.mkdir()
    for f, name in enumerate(["features", "FEATURES"]):  # the second file's writer shouted
        ids = np.arange(f * 50, (f + 1) * 50, dtype=np.int64)
        features = pa.array(list(held_out.features[ids]), pa.list_(pa.float32()))
        pq.write_table(pa.table({"row_id": ids, name: features}), path / f"part-{f}.parquet")
    spark_read = spark.read.parquet(str(path))
    assert spark_read.where("features IS NULL").count() == 0  # Spark ignores the case
    scanned = score_table(
        spark, str(path), artifact, format="parquet", engine="scan", key_columns=["row_id"]
    )
    assertDataFrameEqual(scanned, score_dataframe(spark_read, artifact, key_columns=["row_id"]))
    assert scanned.where("prediction_error IS NOT NULL").count() == 0


def test_scan_of_an_empty_table_gives_no_rows(spark, digits, artifact, tmp_path):
    path = str(tmp_path / "empty")
    held_out_frame(spark, digits, n=5).limit(0).write.format("delta").save(path)
    scored = score_table(spark, path, artifact, engine="scan", key_columns=["row_id"])
    assert scored.count() == 0
    assert scored.columns == [
        "row_id",
        "label",
        "features",
        "prediction",
        "probability",
        "prediction_error",
    ]


def test_partitioned_table_falls_back_to_spark_or_is_refused(spark, digits, artifact, tmp_path):
    path = str(tmp_path / "parted")
    held_out_frame(spark, digits, n=50).write.format("delta").partitionBy("label").save(path)
    with pytest.raises(ScanUnsupported, match=r"partitioned by \['label'\]"):
        score_table(spark, path, artifact, engine="scan")
    reasons: list[str] = []
    scored = score_table(spark, path, artifact, on_fallback=reasons.append)
    assert reasons == [f"Delta table {path} is partitioned by ['label']"]
    assert scored.count() == 50  # scored through Spark's reader, nothing lost


def test_deletion_vectors_are_left_to_spark(spark, digits, artifact, tmp_path):
    from delta.tables import DeltaTable

    path = str(tmp_path / "dv")
    held_out_frame(spark, digits, n=60).repartition(1).write.format("delta").option(
        "delta.enableDeletionVectors", "true"
    ).save(path)
    DeltaTable.forPath(spark, path).delete("row_id < 10")
    reasons: list[str] = []
    scored = score_table(spark, path, artifact, key_columns=["row_id"], on_fallback=reasons.append)
    assert reasons == [f"Delta table {path} uses deletionVectors"]
    ids = sorted(r.row_id for r in scored.select("row_id").collect())
    assert ids == list(range(10, 60))  # the deleted rows stay deleted


def test_score_table_validates_before_any_work(spark, digits, artifact, tmp_path):
    path = _table(spark, digits, tmp_path / "t", n=10, bad=False)
    known = "the known engines are auto, arrow, pandas, scan"
    with pytest.raises(ValueError, match=f"unknown engine 'fast'; {known}"):
        score_table(spark, path, artifact, engine="fast")
    with pytest.raises(ValueError, match="column 'id' is not in the input"):
        score_table(spark, path, artifact, key_columns=["id"])
    with pytest.raises(ValueError, match="arrow_batch_rows is 0: Input should be greater than 0"):
        score_table(spark, path, artifact, arrow_batch_rows=0)


def test_columns_added_later_read_as_nulls(spark, digits, artifact, tmp_path):
    path = str(tmp_path / "grown")
    held_out_frame(spark, digits, n=40).write.format("delta").save(path)
    later = held_out_frame(spark, digits, n=60).where("row_id >= 40")
    later.withColumn("region", F.lit("eu")).write.format("delta").mode("append").option(
        "mergeSchema", "true"
    ).save(path)
    scanned = score_table(spark, path, artifact, engine="scan", keep_columns=["row_id", "region"])
    reference = score_dataframe(
        spark.read.format("delta").load(path), artifact, keep_columns=["row_id", "region"]
    )
    assertDataFrameEqual(scanned, reference)
    regions = {r.row_id: r.region for r in scanned.select("row_id", "region").collect()}
    assert regions == {i: (None if i < 40 else "eu") for i in range(60)}


def test_score_table_takes_the_out_of_range_policy(spark, digits, artifact, tmp_path):
    """The scan engine applies the same row policies as the other engines: with
    ``out_of_range="flag"`` an outlier row is flagged with the reason and no other row is."""
    path = str(tmp_path / "outlier")
    train, _ = digits  # rows the calibrated range was taken from: all inside it
    rows = [(i, int(train.labels[i]), train.features[i].tolist()) for i in range(40)]
    rows.append((999, 0, [1e6] * 64))
    frame = spark.createDataFrame(rows, "row_id long, label int, features array<float>")
    frame.coalesce(1).write.format("delta").save(path)

    with pytest.raises(ValueError, match="out_of_range"):
        score_table(spark, path, artifact.path, out_of_range="drop")

    scored = score_table(
        spark, path, artifact.path, engine="scan", key_columns=["row_id"], out_of_range="flag"
    ).collect()
    flagged = {r["row_id"]: r["prediction_error"] for r in scored if r["prediction_error"]}
    assert len(scored) == 41
    assert set(flagged) == {999}
    assert "range" in flagged[999]
    assert all(r["prediction"] is not None for r in scored if r["row_id"] != 999)
