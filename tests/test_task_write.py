"""The score job's output written by its scoring tasks and committed in one Delta transaction:
the same table Spark's writer makes, its files' statistics, where Spark's writer keeps it,
and the files a task writes."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import held_out_frame
from conftest import score_config as _config
from leanscore.jobs.delta_commit import _column_names
from leanscore.jobs.score import run_score
from leanscore.udfs.task_files import FileSink, TaskFile


def _commits(path) -> list[list[dict]]:
    return [
        [json.loads(line) for line in commit.read_text().splitlines()]
        for commit in sorted(Path(path, "_delta_log").glob("*.json"))
    ]


@pytest.mark.spark
def test_the_tasks_write_the_table_sparks_writer_writes(spark, digits, artifact, tmp_path):
    """The same rows, schema, partitions and statistics property as Spark's writer, in one
    WRITE commit of files whose statistics count their rows and nulls; a rerun of a date
    replaces only that date's files."""
    src = str(tmp_path / "in")
    held_out_frame(spark, digits, n=90).repartition(3).write.format("delta").save(src)
    tasks, spark_out = str(tmp_path / "tasks"), str(tmp_path / "spark")
    summary = run_score(spark, _config(artifact, src, tasks), "2026-01-01")
    run_score(spark, _config(artifact, src, spark_out, writer="spark"), "2026-01-01")
    assert summary["engine"] == "scan" and "commit" in summary["phase_seconds"]
    assert summary["rows_out"] == 90 and summary["output_version"] == 0

    ours, theirs = (spark.read.format("delta").load(p) for p in (tasks, spark_out))
    assert ours.schema == theirs.schema
    columns = [c for c in ours.columns if c != "scored_at"]
    assert ours.select(columns).exceptAll(theirs.select(columns)).count() == 0
    assert theirs.select(columns).exceptAll(ours.select(columns)).count() == 0
    assert ours.select("scored_at").distinct().count() == 1
    detail = {
        p: spark.sql(f"DESCRIBE DETAIL delta.`{p}`").first().asDict() for p in (tasks, spark_out)
    }
    assert detail[tasks]["partitionColumns"] == ["run_date"]
    assert detail[tasks]["properties"] == detail[spark_out]["properties"]

    (commit,) = _commits(tasks)
    assert commit[0]["commitInfo"]["operation"] == "WRITE"
    metrics = commit[0]["commitInfo"]["operationMetrics"]
    assert metrics["numOutputRows"] == "90" and int(metrics["numOutputBytes"]) > 0
    assert commit[0]["commitInfo"]["operationParameters"]["predicate"] == (
        "run_date = DATE'2026-01-01'"
    )
    added = [a["add"] for a in commit if "add" in a]
    assert added
    for add in added:
        stats = json.loads(add["stats"])
        assert stats["nullCount"]["prediction_error"] == stats["numRecords"]
        assert stats["minValues"]["row_id"] <= stats["maxValues"]["row_id"]
        assert add["path"].startswith("run_date=2026-01-01/part-")
    assert sum(json.loads(a["stats"])["numRecords"] for a in added) == 90
    # Data skipping works on the statistics the tasks computed.
    assert ours.where("row_id = 7").count() == 1

    run_score(spark, _config(artifact, src, tasks), "2026-01-02")
    run_score(spark, _config(artifact, src, tasks), "2026-01-01")
    latest = _commits(tasks)[-1]
    removed = {a["remove"]["path"] for a in latest if "remove" in a}
    assert removed == {a["path"] for a in added}  # the first date's files, not the second's
    table = spark.read.format("delta").load(tasks)
    counts = {str(r["run_date"]): r["count"] for r in table.groupBy("run_date").count().collect()}
    assert counts == {"2026-01-01": 90, "2026-01-02": 90}


@pytest.mark.spark
def test_spark_writes_where_the_table_has_a_check_constraint(
    spark, digits, artifact, tmp_path, caplog
):
    """A CHECK constraint is checked by Spark's writer row by row: the job leaves such a table
    to it, and a row breaking the constraint fails the run."""
    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    held_out_frame(spark, digits, n=30).write.format("delta").save(src)
    run_score(spark, _config(artifact, src, out), "2026-01-01")
    # every row of the first date keeps the constraint; every row of the next breaks it
    constraint = "CHECK (run_date < DATE'2026-01-02')"
    spark.sql(f"ALTER TABLE delta.`{out}` ADD CONSTRAINT first_date_only {constraint}")
    broken = pytest.raises(Exception, match="first_date_only")
    with caplog.at_level(logging.INFO, logger="leanscore.jobs"), broken:
        run_score(spark, _config(artifact, src, out), "2026-01-02")
    assert "since it has CHECK constraints" in caplog.text
    assert spark.read.format("delta").load(out).count() == 30


@pytest.mark.spark
def test_a_failed_task_leaves_no_new_table(spark, digits, artifact, tmp_path):
    """A bad row fails its task under bad_rows: fail; the run created the output's folder, so
    nothing of it is left (no files that a next run would take for another table's)."""
    src, out = str(tmp_path / "in"), tmp_path / "out"
    held_out_frame(spark, digits, n=20).union(
        spark.createDataFrame([(1000, 0, None)], "row_id long, label int, features array<float>")
    ).write.format("delta").save(src)
    with pytest.raises(Exception, match="features"):
        run_score(spark, _config(artifact, src, str(out)), "2026-01-01")
    assert not out.exists()


def test_a_task_file_holds_its_rows_constants_and_delta_statistics(tmp_path):
    """Scored batches become one row group with the constants as one-entry dictionaries and no
    footer statistics on them; the description counts rows and flagged rows, and gives Delta
    statistics only where they are exact (no NaN bounds, a long string's maximum left out)."""
    when = dt.datetime(2026, 1, 1, 2, 3, 4, tzinfo=dt.UTC)
    sink = FileSink(
        directory=str(tmp_path / "run_date=2026-01-01"),
        relative="run_date=2026-01-01",
        codec="snappy",
        constants=(
            ("model_sha256", pa.scalar("a" * 64)),
            ("scored_at", pa.scalar(when, pa.timestamp("us", tz="UTC"))),
        ),
        statistics_columns=("row_id", "score", "note", "error", "model_sha256"),
        error_column="error",
        dictionary_columns=("note",),
    )
    out = TaskFile(sink, 7)
    out.write(
        pa.record_batch(
            {
                "row_id": pa.array([3, 1], pa.int64()),
                "score": pa.array([0.5, None], pa.float32()),
                "note": pa.array(["z" * 40, "a"]),
                "error": pa.array([None, "bad"]),
            }
        )
    )
    out.write(
        pa.record_batch(
            {
                "row_id": pa.array([2], pa.int64()),
                "score": pa.array([float("nan")], pa.float32()),
                "note": pa.array(["c"]),
                "error": pa.array([None], pa.string()),
            }
        )
    )
    described = out.close()
    assert described["path"].startswith("run_date=2026-01-01/part-00007-")
    assert described["rows"] == 3 and described["flagged"] == 1
    stats = json.loads(described["stats"])
    assert stats["numRecords"] == 3
    assert stats["nullCount"] == {
        "row_id": 0,
        "score": 1,
        "note": 0,
        "error": 2,
        "model_sha256": 0,
    }
    assert stats["minValues"] == {
        "row_id": 1,
        "note": "a",
        "error": "bad",
        "model_sha256": "a" * 32,
    }
    assert stats["maxValues"] == {"row_id": 3, "error": "bad"}  # no NaN bound, no long maximum

    file = pq.ParquetFile(tmp_path / described["path"])
    assert file.metadata.num_row_groups == 1
    table = file.read()
    assert table.column("model_sha256").to_pylist() == ["a" * 64] * 3
    assert table.column("scored_at").to_pylist() == [when] * 3
    group = file.metadata.row_group(0)
    columns = {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}
    assert not columns["model_sha256"].is_stats_set and columns["row_id"].is_stats_set
    assert "RLE_DICTIONARY" in columns["model_sha256"].encodings
    assert "RLE_DICTIONARY" not in columns["row_id"].encodings


def test_a_task_without_rows_writes_no_file(tmp_path):
    sink = FileSink(str(tmp_path / "d"), "d", "none", (), (), "error")
    out = TaskFile(sink, 0)
    out.write(pa.record_batch({"error": pa.array([], pa.string())}))
    assert out.close() is None and not (tmp_path / "d").exists()


def test_column_names_follow_deltas_quoting():
    assert _column_names("`row_id`,`odd``name`, plain ,`a,b`") == [
        "row_id",
        "odd`name",
        "plain",
        "a,b",
    ]
    assert _column_names("") == []


def test_the_config_and_master_tell_whether_the_tasks_may_write(artifact, tmp_path):
    """Before a session starts (it decides how the JVM compiles), the config and the master
    alone say whether the tasks may write; each thing that leaves the write to Spark says no."""
    from leanscore.jobs.score import tasks_may_write

    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    assert tasks_may_write(_config(artifact, src, out), master="local[2]")
    assert tasks_may_write(_config(artifact, src, f"file://{out}"), master="local[*]")
    refused = [
        (_config(artifact, src, out, writer="spark"), "local[2]"),
        (_config(artifact, src, out), "spark://host:7077"),
        (_config(artifact, src, "s3a://bucket/out"), "local[2]"),
        (_config(artifact, src, out, output={"path": out, "format": "parquet"}), "local[2]"),
        (_config(artifact, src, out, engine="arrow"), "local[2]"),
        (_config(artifact, src, out, input={"path": src, "filter": "row_id > 3"}), "local[2]"),
        (_config(artifact, src, out, shadow={"fraction": 0.5}), "local[2]"),
    ]
    for config, master in refused:
        assert not tasks_may_write(config, master=master), (config, master)


@pytest.mark.spark
def test_slices_held_as_arrow_are_written_and_committed_as_the_tasks_write(spark, tmp_path):
    """The bench's write alone: each task writes the Arrow rows it holds, constants added, and
    one commit makes them the run date's partition of a new table."""
    from leanscore.jobs.task_write import write_slices
    from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

    schema = StructType(
        [
            StructField("row_id", LongType()),
            StructField("score", DoubleType()),
            StructField("score_error", StringType()),
        ]
    )
    held = {
        i: pa.RecordBatch.from_pydict(
            {
                "row_id": pa.array(range(i * 10, i * 10 + 10), pa.int64()),
                "score": [0.5] * 10,
                "score_error": pa.array([None] * 9 + ["bad row"], pa.string()),
            }
        )
        for i in range(3)
    }
    root = str(tmp_path / "out")
    version = write_slices(
        spark,
        lambda i: iter([held[i]]),
        3,
        schema,
        root,
        dt.date(2026, 12, 1),
        constants={"model_name": pa.scalar("m", pa.string())},
        statistics_columns=["row_id"],
        properties={},
        error_column="score_error",
        key_columns=["row_id"],
    )
    assert version == 0
    table = spark.read.format("delta").load(root)
    assert table.count() == 30 and table.select("row_id").distinct().count() == 30
    assert {r["model_name"] for r in table.select("model_name").collect()} == {"m"}
    assert {str(r["run_date"]) for r in table.select("run_date").collect()} == {"2026-12-01"}
    assert table.where("score_error IS NOT NULL").count() == 3
    assert sum("add" in action for action in _commits(root)[0]) == 3  # a file a task
