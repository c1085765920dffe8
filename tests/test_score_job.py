"""The nightly job: idempotent reruns per date, bad-row policies, nothing half-written."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from conftest import held_out_frame
from conftest import score_config as _config
from leanscore.jobs.output import OutputCheckError
from leanscore.jobs.score import ScoreConfig, run_score
from pyspark.sql import functions as F


def test_rerun_replaces_only_its_date(spark, digits, artifact, tmp_path):
    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    held_out_frame(spark, digits, n=120).write.format("delta").save(src)
    config = _config(artifact, src, out, summary_path=str(tmp_path / "summary.json"))

    run_score(spark, config, "2026-01-01")
    run_score(spark, config, "2026-01-02")
    first = spark.read.format("delta").load(out).where("run_date = '2026-01-01'")
    before = first.drop("scored_at").orderBy("row_id").toPandas()

    summary = run_score(spark, config, "2026-01-02")
    table = spark.read.format("delta").load(out)
    counts = {str(r["run_date"]): r["count"] for r in table.groupBy("run_date").count().collect()}
    assert counts == {"2026-01-01": 120, "2026-01-02": 120}
    after = table.where("run_date = '2026-01-01'").drop("scored_at").orderBy("row_id").toPandas()
    pd.testing.assert_frame_equal(before, after)
    assert table.where("run_date = '2026-01-02'").select("row_id").distinct().count() == 120

    assert summary["rows_in"] == summary["rows_out"] == 120
    assert summary["flagged_rows"] == 0
    assert summary["engine"] == "scan"  # a whole Delta path: read by pyarrow in the tasks
    assert json.loads((tmp_path / "summary.json").read_text())["run_date"] == "2026-01-02"
    assert set(table.columns) >= {
        "row_id",
        "label",
        "prediction",
        "probability",
        "prediction_error",
        "model_name",
        "model_version",
        "model_sha256",
        "scored_at",
        "run_date",
    }
    assert table.select("model_sha256").distinct().first()[0] == artifact.sha256


def _file_statistics(path) -> list[dict]:
    """The statistics of the files the table's latest commit added, from its log."""
    from pathlib import Path

    latest = sorted(Path(path, "_delta_log").glob("*.json"))[-1]
    actions = [json.loads(line) for line in latest.read_text().splitlines()]
    return [json.loads(a["add"]["stats"]) for a in actions if "add" in a]


def test_a_new_output_keeps_statistics_on_keys_and_outputs_and_an_existing_one_its_own(
    spark, digits, artifact, tmp_path
):
    """Delta computes each indexed column's min and max row by row as it writes: the table the
    job creates indexes the keys and the model's outputs, not the lineage strings nor the
    passthrough columns; a table that already exists keeps the statistics its owner chose."""
    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    held_out_frame(spark, digits, n=60).write.format("delta").save(src)
    config = _config(artifact, src, out)
    run_score(spark, config, "2026-01-01")
    properties = dict(spark.sql(f"SHOW TBLPROPERTIES delta.`{out}`").collect())
    assert properties["delta.dataSkippingStatsColumns"] == (
        "`row_id`,`prediction`,`probability`,`prediction_error`"
    )
    files = _file_statistics(out)
    for stats in files:
        assert set(stats["minValues"]) == {"row_id", "prediction", "probability"}
        assert set(stats["nullCount"]) == {
            "row_id",
            "prediction",
            "probability",
            "prediction_error",
        }
    assert sum(stats["numRecords"] for stats in files) == 60
    # Data skipping still works on what readers filter by.
    assert spark.read.format("delta").load(out).where("row_id = 7").count() == 1

    owned = str(tmp_path / "owned")
    run_score(spark, _config(artifact, src, owned), "2026-01-01")
    spark.sql(f"ALTER TABLE delta.`{owned}` UNSET TBLPROPERTIES ('delta.dataSkippingStatsColumns')")
    run_score(spark, _config(artifact, src, owned), "2026-01-02")
    properties = dict(spark.sql(f"SHOW TBLPROPERTIES delta.`{owned}`").collect())
    assert "delta.dataSkippingStatsColumns" not in properties
    latest = spark.sql(f"DESCRIBE HISTORY delta.`{owned}` LIMIT 1").first()["version"]
    newest = _file_statistics(owned)[-1]
    assert latest == 2 and "model_sha256" in newest["minValues"]  # Delta's default: all


def _footer_min_max(path) -> dict[str, bool]:
    """Whether each column of a data file under ``path`` has min and max in its footer."""
    from pathlib import Path

    import pyarrow.parquet as pq

    first = next(Path(path).rglob("*.parquet"))
    group = pq.ParquetFile(first).metadata.row_group(0)
    columns = [group.column(i) for i in range(group.num_columns)]
    return {c.path_in_schema: bool(c.is_stats_set and c.statistics.has_min_max) for c in columns}


def test_lineage_columns_are_written_without_parquet_footer_statistics(
    spark, digits, artifact, tmp_path
):
    """Parquet's min and max of the run's constant lineage values cost the writer a compare per
    row and skip nothing; the keys, outputs and passthrough columns keep theirs, readers still
    filter on lineage correctly, and the session's own setting is put back after the write."""
    from leanscore.jobs.output import session_settings, write_settings

    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    held_out_frame(spark, digits, n=60).write.format("delta").save(src)
    key = "parquet.column.statistics.enabled#model_version"
    spark.conf.set(key, "true")  # the user's own choice, before the job
    try:
        run_score(spark, _config(artifact, src, out), "2026-01-01")
        assert spark.conf.get(key) == "true"
        assert spark.conf.get("parquet.column.statistics.enabled#model_sha256", None) is None
    finally:
        spark.conf.unset(key)
    footer = _footer_min_max(out)
    assert not any(footer[c] for c in ("model_name", "model_version", "model_sha256", "scored_at"))
    assert all(footer[c] for c in ("row_id", "label", "prediction", "probability"))
    table = spark.read.format("delta").load(out)
    assert table.where(F.col("model_sha256") == artifact.sha256).count() == 60
    assert table.where(F.col("model_sha256") == "other").count() == 0

    plain = str(tmp_path / "plain")  # without the setting Parquet keeps them (the check can fail)
    with session_settings(spark, write_settings(spark, [])):
        table.write.format("parquet").save(plain)
    assert _footer_min_max(plain)["model_sha256"]


def test_a_write_runs_unsorted_under_its_settings_and_leaves_the_sessions_own(spark):
    """Spark sorts a partitioned write's rows by date unless it may keep a few files open; a
    run's write holds one date, so the job allows that for its write and puts back the
    session's settings after, a value the user chose kept as it was."""
    from leanscore.jobs.output import session_settings, write_settings

    writers = "spark.sql.maxConcurrentOutputFileWriters"
    assert write_settings(spark, ["model_name"]) == {
        "parquet.column.statistics.enabled#model_name": "false",
        writers: "2",
    }
    with session_settings(spark, write_settings(spark, [])):
        assert spark.conf.get(writers) == "2"
    assert spark.conf.get(writers) == "0"
    spark.conf.set(writers, "16")
    try:
        assert writers not in write_settings(spark, [])
        with session_settings(spark, {"parquet.column.statistics.enabled#x": "false"}):
            assert spark.conf.get("parquet.column.statistics.enabled#x") == "false"
        assert spark.conf.get(writers) == "16"
        assert spark.conf.get("parquet.column.statistics.enabled#x", None) is None
    finally:
        spark.conf.unset(writers)


@pytest.mark.parametrize("fmt", ["delta", "parquet"])
def test_a_catalog_table_output_is_created_then_replaced_a_date_at_a_time(
    spark, digits, artifact, tmp_path, fmt
):
    """Output named as a catalog table (as on Databricks): the first run creates it, each run
    replaces its date only, and the rows are counted and checked as for a path."""
    src = str(tmp_path / "in")
    held_out_frame(spark, digits, n=50).write.format("delta").save(src)
    table = f"nightly_scores_{fmt}"
    config = _config(artifact, src, "unused").model_copy(
        update={"output": {"table": table, "format": fmt}}
    )
    config = ScoreConfig.model_validate(config.model_dump())
    for day in ("2026-01-01", "2026-01-02", "2026-01-01"):
        summary = run_score(spark, config, day)
        assert summary["rows_out"] == 50 and summary["output"] == table
    counts = spark.read.table(table).groupBy("run_date").count().collect()
    assert {str(r["run_date"]): r["count"] for r in counts} == {
        "2026-01-01": 50,
        "2026-01-02": 50,
    }
    if fmt == "delta":
        assert summary["output_version"] == 3  # created empty, then three dates written
        properties = dict(spark.sql(f"SHOW TBLPROPERTIES {table}").collect())
        assert properties["delta.dataSkippingStatsColumns"] == (
            "`row_id`,`prediction`,`probability`,`prediction_error`"
        )


def test_statistics_property_quotes_names_and_skips_types_delta_does_not_index(spark, tmp_path):
    from leanscore.jobs.output import statistics_property

    frame = spark.createDataFrame(
        [(1, "a", [1.0], "x", "2026-01-01")],
        "`id.1` long, `odd``name` string, embedding array<float>, note string, run_date string",
    ).withColumn("run_date", F.col("run_date").cast("date"))
    property_ = statistics_property(frame.schema, ["id.1", "odd`name", "embedding"])
    assert property_ == {"delta.dataSkippingStatsColumns": "`id.1`,`odd``name`"}
    no_statistics = {"delta.dataSkippingNumIndexedCols": "0"}
    assert statistics_property(frame.schema, ["embedding"]) == no_statistics
    assert statistics_property(frame.schema, None) == {}
    path = str(tmp_path / "odd")
    writer = frame.write.format("delta").partitionBy("run_date")
    for key, value in property_.items():
        writer = writer.option(key, value)
    writer.save(path)
    (stats,) = _file_statistics(path)
    assert set(stats["minValues"]) == {"id.1", "odd`name"}
    assert set(stats["nullCount"]) == {"id.1", "odd`name"}


def _with_bad_rows(spark, digits, path):
    df = held_out_frame(spark, digits, n=40)
    bad = spark.createDataFrame(
        [
            (1000, 1, None),
            (1001, 2, [1.0] * 63),
            (1002, 3, [float("nan")] + [0.0] * 63),
            (1003, 4, [float("inf")] * 64),
        ],
        "row_id long, label int, features array<float>",
    )
    df.unionByName(bad).write.format("delta").save(path)


def test_flag_policy_keeps_every_row_and_counts_the_bad_ones(spark, digits, artifact, tmp_path):
    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    _with_bad_rows(spark, digits, src)
    summary = run_score(spark, _config(artifact, src, out, bad_rows="flag"), "2026-02-01")
    assert summary["rows_in"] == summary["rows_out"] == 44
    assert summary["flagged_rows"] == 4
    errors = {
        r["row_id"]: r["prediction_error"]
        for r in spark.read.format("delta").load(out).where(F.col("prediction").isNull()).collect()
    }
    assert errors == {
        1000: "column 'features' is null",
        1001: "column 'features' has 63 elements, the model expects 64",
        1002: "column 'features' element 0 is NaN",
        1003: "column 'features' element 0 is inf",
    }


def test_fail_policy_names_the_row_and_writes_nothing(spark, digits, artifact, tmp_path):
    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    _with_bad_rows(spark, digits, src)
    with pytest.raises(Exception, match=r"row with key 'row_id=100\d'"):
        run_score(spark, _config(artifact, src, out), "2026-02-01")
    from delta.tables import DeltaTable

    assert not DeltaTable.isDeltaTable(spark, out)


def test_missing_input_names_the_path(spark, artifact, tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=f"input {missing} is not a Delta table"):
        run_score(spark, _config(artifact, missing, str(tmp_path / "o")), "2026-02-01")


def test_many_numeric_columns_give_the_array_results(spark, digits, artifact, columns_artifact):
    from leanscore.bench.demo.datagen import feature_column_names
    from leanscore.udfs import score_dataframe

    df = held_out_frame(spark, digits, n=64)
    names = feature_column_names()
    wide = df.select("row_id", *[F.col("features")[i].alias(n) for i, n in enumerate(names)])
    a = score_dataframe(df, artifact).orderBy("row_id").toPandas()
    b = score_dataframe(wide, columns_artifact).orderBy("row_id").toPandas()
    np.testing.assert_array_equal(a["prediction"], b["prediction"])
    np.testing.assert_allclose(a["probability"], b["probability"], rtol=1e-6)


def test_missing_feature_column_is_named(spark, digits, columns_artifact):
    from leanscore.udfs import score_dataframe

    df = held_out_frame(spark, digits, n=4)
    with pytest.raises(ValueError, match="feature column 'pixel_0' is missing from the input"):
        score_dataframe(df, columns_artifact)


def test_parquet_output_session_options_and_failed_summary(spark, digits, artifact, tmp_path):
    from leanscore.jobs.config import apply_overrides

    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    held_out_frame(spark, digits, n=30).write.parquet(src)
    data = _config(artifact, src, out).model_dump()
    data = apply_overrides(
        data,
        [
            "input.format=parquet",
            "output.format=parquet",
            "session.graph_optimization=basic",
            "session.memory_arena=false",
            "engine=pandas",
            f"summary_path={tmp_path / 's.json'}",
        ],
    )
    config = ScoreConfig.model_validate(data)
    run_score(spark, config, "2026-03-01")
    summary = run_score(spark, config, "2026-03-02")
    assert summary["rows_out"] == 30 and summary["engine"] == "pandas"
    assert summary["peak_driver_python_rss_mb"] > 0 and summary["peak_driver_jvm_rss_mb"] > 0
    days = spark.read.parquet(out).groupBy("run_date").count().orderBy("run_date").collect()
    assert [(str(r["run_date"]), r["count"]) for r in days] == [
        ("2026-03-01", 30),
        ("2026-03-02", 30),
    ]

    broken = ScoreConfig.model_validate({**data, "key_columns": ["no_such_key"]})
    with pytest.raises(ValueError, match="column 'no_such_key'"):
        run_score(spark, broken, "2026-03-03")
    failed = json.loads((tmp_path / "s.json").read_text())
    assert failed["status"] == "failed" and "no_such_key" in failed["error"]
    assert spark.read.parquet(out).where("run_date = '2026-03-03'").count() == 0


def test_scan_and_spark_reader_write_the_same_rows(spark, digits, artifact, tmp_path):
    src = str(tmp_path / "in")
    _with_bad_rows(spark, digits, src)
    outputs = {}
    for engine, extra in (("scan", {}), ("arrow", {"input": {"path": src, "filter": "true"}})):
        out = str(tmp_path / engine)
        config = _config(artifact, src, out, bad_rows="flag", engine="auto", **extra)
        assert run_score(spark, config, "2026-02-01")["engine"] == engine
        outputs[engine] = (
            spark.read.format("delta").load(out).drop("scored_at").orderBy("row_id").toPandas()
        )
    pd.testing.assert_frame_equal(outputs["scan"], outputs["arrow"])


def test_scan_engine_refuses_a_filtered_input(artifact):
    with pytest.raises(ValueError, match="engine 'scan' reads a whole Parquet/Delta path"):
        _config(artifact, "in", "out", engine="scan", input={"path": "in", "filter": "x > 1"})


def _history(spark, path):
    return spark.sql(f"DESCRIBE HISTORY delta.`{path}`").orderBy("version").collect()


def _appending_after(count_input, spark, digits, src: str):
    """``count_input``, after which another writer appends rows 60 to 69 to the input at
    ``src`` (a concurrent upstream writer)."""

    def count_then_append(df, cfg, **kwargs):
        rows = count_input(df, cfg, **kwargs)
        more = held_out_frame(spark, digits, n=70).where("row_id >= 60")
        more.write.format("delta").mode("append").save(src)
        return rows

    return count_then_append


def test_input_changing_during_the_run_leaves_the_previous_version_current(
    spark, digits, artifact, tmp_path, monkeypatch
):
    """Another writer appends to the input between the count and the write, and Spark's
    writer writes: it reads the table as it is then, so the run fails naming both counts and
    the output's previous version, which Spark's writer had replaced, is restored (RESTORE)."""
    import leanscore.jobs.score as score_job

    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    held_out_frame(spark, digits, n=60).write.format("delta").save(src)
    summary_path = str(tmp_path / "summary.json")
    config = _config(artifact, src, out, summary_path=summary_path, writer="spark")
    run_score(spark, config, "2026-01-01")
    good_version = _history(spark, out)[-1]["version"]
    before = spark.read.format("delta").load(out).orderBy("row_id").toPandas()

    counted = score_job.count_input
    monkeypatch.setattr(score_job, "count_input", _appending_after(counted, spark, digits, src))
    with pytest.raises(OutputCheckError, match=r"wrote 70 rows .* counted 60") as err:
        run_score(spark, config, "2026-01-01")
    history = _history(spark, out)
    assert f"restored the output to version {good_version}" in str(err.value)
    assert [h["operation"] for h in history[-2:]] == ["WRITE", "RESTORE"]
    after = spark.read.format("delta").load(out).orderBy("row_id").toPandas()
    pd.testing.assert_frame_equal(before, after)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and "counted 60" in summary["error"]


def test_the_tasks_score_the_snapshot_the_run_counted(
    spark, digits, artifact, tmp_path, monkeypatch
):
    """Where the scoring tasks write, they read the files of the input's version the run
    counted: rows another writer appends meanwhile wait for the next run. A count the written
    rows do not match still fails before the commit, and nothing is committed."""
    import leanscore.jobs.score as score_job

    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    held_out_frame(spark, digits, n=60).write.format("delta").save(src)
    summary_path = str(tmp_path / "summary.json")
    config = _config(artifact, src, out, summary_path=summary_path)
    counted = score_job.count_input
    monkeypatch.setattr(score_job, "count_input", _appending_after(counted, spark, digits, src))
    summary = run_score(spark, config, "2026-01-01")
    assert summary["rows_in"] == summary["rows_out"] == 60
    assert spark.read.format("delta").load(out).count() == 60
    assert spark.read.format("delta").load(src).count() == 70
    good_version = _history(spark, out)[-1]["version"]

    monkeypatch.setattr(score_job, "count_input", lambda df, cfg, **kw: counted(df, cfg, **kw) + 5)
    with pytest.raises(OutputCheckError, match=r"wrote 70 rows .* counted 75") as err:
        run_score(spark, config, "2026-01-01")
    assert "nothing was committed" in str(err.value)
    assert _history(spark, out)[-1]["version"] == good_version
    assert spark.read.format("delta").load(out).count() == 60


@pytest.mark.parametrize("writer", ["auto", "spark"])
def test_too_many_flagged_rows_fail_and_a_new_table_keeps_no_rows(
    spark, digits, artifact, tmp_path, writer
):
    """Spark's writer committed the rows, so the table it created is emptied; the scoring
    tasks' write is checked before anything is committed, so no table is left at all."""
    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    held_out_frame(spark, digits, n=40).union(
        spark.createDataFrame(
            [(1000 + i, 0, None) for i in range(10)],
            "row_id long, label int, features array<float>",
        )
    ).write.format("delta").save(src)
    config = _config(artifact, src, out, bad_rows="flag", max_flagged_fraction=0.1, writer=writer)
    undone = "deleted the rows" if writer == "spark" else "nothing was committed"
    with pytest.raises(OutputCheckError, match=rf"10 of 50 rows were flagged .* {undone}"):
        run_score(spark, config, "2026-01-01")
    if writer == "spark":
        assert spark.read.format("delta").load(out).count() == 0
    else:
        assert not (tmp_path / "out").exists()
    summary = run_score(
        spark, config.model_copy(update={"max_flagged_fraction": 0.2}), "2026-01-01"
    )
    assert summary["flagged_rows"] == 10 and summary["rows_out"] == 50


def test_the_output_version_is_read_from_deltas_log_and_sees_another_writers_commit(
    spark, tmp_path
):
    """The version before the write comes from the driver's Delta log object, refreshed from
    the log's listing: a commit another process made is seen, as the restore needs."""
    import shutil

    from leanscore.jobs.output import TableRef, _log_version, delta_version

    path, elsewhere = tmp_path / "table", tmp_path / "copy"
    spark.range(5).write.format("delta").save(str(path))
    ref = TableRef(path=str(path), format="delta")
    assert _log_version(spark, str(path), refresh=True) == delta_version(spark, ref) == 0
    # Another writer: commit 1 made on a copy, its log entry and files copied in on disk, out of
    # this JVM's sight.
    shutil.copytree(path, elsewhere)
    spark.range(5, 8).write.format("delta").mode("append").save(str(elsewhere))
    for item in elsewhere.iterdir():
        if item.suffix == ".parquet" and not (path / item.name).exists():
            shutil.copy(item, path / item.name)
    shutil.copy(elsewhere / "_delta_log" / f"{1:020d}.json", path / "_delta_log")
    assert delta_version(spark, ref) == 1
    history = spark.sql(f"DESCRIBE HISTORY delta.`{path}` LIMIT 1").first()["version"]
    assert history == 1 and spark.read.format("delta").load(str(path)).count() == 8
    assert delta_version(spark, TableRef(path=str(tmp_path / "none"), format="delta")) is None


def test_the_time_before_the_job_is_at_most_the_process_lifetime_seen_from_outside():
    child = (
        "import time; time.sleep(0.3); "
        "from leanscore.jobs.score import process_age_s; print(process_age_s())"
    )
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True)
    lifetime = time.monotonic() - started
    age = float(out.stdout)
    assert 0.3 <= age <= lifetime + 0.02  # one clock tick; a whole-second boot time overstates
