"""The Delta log as Delta Kernel reads it must say what Spark's Delta reader says: the same
files, rows and null keys, through appends and overwrites; where the log's counts cannot be
trusted (deletion vectors) it gives none and the job counts with Spark."""

from __future__ import annotations

import pytest
from leanscore.jobs.score import InputConfig, count_input, whole_delta_log
from leanscore.udfs.delta_log import read_delta_log


def _frame(spark, ids, *, null_keys: int = 0):
    rows = [(i, float(i)) for i in ids] + [(None, 0.0)] * null_keys
    return spark.createDataFrame(rows, "row_id long, x double")


class _Config:
    """What ``count_input`` reads of a job's config."""

    def __init__(self, path: str, **input_options):
        self.input = InputConfig(path=path, format="delta", **input_options)
        self.key_columns = ["row_id"]


def test_files_rows_and_null_counts_match_spark_through_append_and_overwrite(spark, tmp_path):
    path = str(tmp_path / "t")
    _frame(spark, range(50)).repartition(3).write.format("delta").save(path)
    _frame(spark, range(50, 80), null_keys=2).write.format("delta").mode("append").save(path)
    for step in ("append", "overwrite"):
        if step == "overwrite":  # the first files are removed from the snapshot, not the disk
            _frame(spark, range(7), null_keys=1).repartition(2).write.format("delta").mode(
                "overwrite"
            ).save(path)
        logged = read_delta_log(spark, path)
        df = spark.read.format("delta").load(path)
        assert sorted(uri for uri, _ in logged.files) == sorted(df.inputFiles())
        assert logged.rows == df.count()
        assert logged.null_counts["row_id"] == df.where("row_id is null").count()
        assert logged.partition_columns == () and logged.column_mapping == "none"
    assert logged.version == 2 and logged.rows == 8 and logged.null_counts["row_id"] == 1
    with pytest.raises(ValueError, match=r"key column 'row_id' is null in 1 of 8 input rows"):
        count_input(df, _Config(path))


def test_deletion_vectors_leave_the_count_to_spark(spark, tmp_path):
    path = str(tmp_path / "dv")
    _frame(spark, range(40)).coalesce(1).write.format("delta").option(
        "delta.enableDeletionVectors", "true"
    ).save(path)
    spark.sql(f"DELETE FROM delta.`{path}` WHERE row_id < 10")
    logged = read_delta_log(spark, path)
    assert "deletionVectors" in logged.reader_features
    assert logged.rows is None and logged.null_counts == {}  # numRecords counts deleted rows
    df = spark.read.format("delta").load(path)
    assert count_input(df, _Config(path)) == 30


def test_only_a_whole_delta_table_by_path_is_read_from_its_log(spark, tmp_path):
    path = str(tmp_path / "t")
    _frame(spark, range(5)).write.format("delta").save(path)
    df = spark.read.format("delta").load(path)
    assert whole_delta_log(df, InputConfig(path=path)).rows == 5
    assert whole_delta_log(df, InputConfig(path=path, filter="row_id > 2")) is None
    assert read_delta_log(spark, str(tmp_path / "missing")) is None
    assert count_input(df.where("row_id > 2"), _Config(path, filter="row_id > 2")) == 2


def test_column_mapping_leaves_the_null_look_to_spark(spark, tmp_path):
    """Statistics name physical columns: after swapping two names by rename, the log's null
    count for 'row_id' would be another column's, so the job asks Spark."""
    path = str(tmp_path / "renamed")
    spark.createDataFrame([(1, None), (2, 5)], "row_id long, other long").write.format(
        "delta"
    ).option("delta.columnMapping.mode", "name").save(path)
    for old, new in (("row_id", "tmp"), ("other", "row_id"), ("tmp", "other")):
        spark.sql(f"ALTER TABLE delta.`{path}` RENAME COLUMN {old} TO {new}")
    logged = read_delta_log(spark, path)
    assert logged.column_mapping == "name" and logged.null_counts == {} and logged.rows == 2
    df = spark.read.format("delta").load(path)
    with pytest.raises(ValueError, match=r"key column 'row_id' is null in 1 of 2 input rows"):
        count_input(df, _Config(path))
