"""A small run of the whole story, as a user runs it: train, compress, write Delta, score,
compare, for the headline workload (the CNN on Fashion-MNIST's photos, where compression
pays) and the digits MLP (where reading the table is the cost).

The run is the session's ``demo_run`` (conftest): the notebook and spark-submit tests score
its digits table with its artifacts, so the demo runs once per session."""

from __future__ import annotations

import re

import pytest
from conftest import DEMO_ROWS, DEMO_RUN_DATE
from delta.tables import DeltaTable
from leanscore.bench.demo.job import nightly_usd, rows_to_halve_bill
from leanscore.bench.pricing import load_pricing
from leanscore.compression.artifact import Artifact
from leanscore.jobs.config import packaged_config

pytestmark = pytest.mark.spark

ANSI = re.compile(r"\x1b\[[0-9;]*m")
# A line of Java's logger (log4j's default pattern) or of the JVM itself.
JAVA_LINE = re.compile(
    r"^\d\d/\d\d/\d\d \d\d:\d\d:\d\d (TRACE|DEBUG|INFO|WARN|ERROR)\b|log4j|^WARNING: "
)


def test_demo_builds_both_workloads_artifacts_and_tables(spark, demo_run):
    workdir, report, _ = demo_run
    assert list(report["workloads"]) == ["fashion-cnn", "digits-mlp"]
    for name, (fp32, small), table in (
        ("fashion-cnn", ("fashion-cnn-fp32", "fashion-cnn-tiny-student-w8"), "fashion_scoring"),
        ("digits-mlp", ("digits-mlp-fp32", "digits-mlp-pruned-int8"), "digits_features"),
    ):
        big = Artifact.load(workdir / "artifacts" / fp32)
        compressed = Artifact.load(workdir / "artifacts" / small)
        assert compressed.manifest.model_bytes * 5 < big.manifest.model_bytes, name
        path = str(workdir / "tables" / table)
        assert DeltaTable.isDeltaTable(spark, path)
        assert spark.read.format("delta").load(path).count() == DEMO_ROWS

        workload = report["workloads"][name]
        assert [v["name"] for v in workload["variants"]] == [
            "onnx-fp32/leanscore",
            f"{compressed.manifest.name}/leanscore",
        ]
        for variant in workload["variants"]:
            assert variant["rows"] == DEMO_ROWS
            assert variant["rows_per_s"] > 0
            assert variant["accuracy"] > 0.85
        assert workload["variants"][0]["fidelity"]["agreement"] == 1.0
        assert workload["variants"][1]["fidelity"]["agreement"] > 0.9


def test_accuracy_intervals_count_distinct_images_not_repeated_rows(demo_run):
    _, report, _ = demo_run
    digits, photos = report["workloads"]["digits-mlp"], report["workloads"]["fashion-cnn"]
    assert digits["distinct_examples"] == 450  # held-out images, each copied many times
    low, high = digits["variants"][0]["accuracy_interval"]
    assert high - low > 0.02  # about +-1.5 points over 450 images, not +-0.3 over 4,000 rows
    assert photos["distinct_examples"] == DEMO_ROWS  # the first 4,000 test photos, once each


def test_each_workload_is_priced_with_its_own_pricing_file(demo_run):
    _, report, _ = demo_run
    conf = packaged_config(".")
    for name, pricing_file in (
        ("fashion-cnn", "pricing-images.yaml"),
        ("digits-mlp", "pricing.yaml"),
    ):
        pricing = load_pricing(conf / pricing_file)
        assert report["workloads"][name]["pricing"] == pricing.model_dump(), name


def test_the_photo_table_repeats_the_test_split_to_the_rows_asked(spark, tmp_path):
    from leanscore.bench.demo.datagen import fashion_distinct_examples, write_fashion_table
    from pyspark.sql import functions as F

    path = str(tmp_path / "photos")
    assert write_fashion_table(spark, path, 12_500) == 0
    table = spark.read.format("delta").load(path)
    assert table.count() == 12_500 and fashion_distinct_examples(12_500) == 10_000
    assert table.select(F.countDistinct("row_id")).first()[0] == 12_500
    per_image = table.groupBy("example_id").count().groupBy("count").count().collect()
    # the first 2,500 photos twice, the other 7,500 once: no photo dropped, none a third time
    assert sorted((r[0], r[1]) for r in per_image) == [(1, 7_500), (2, 2_500)]


def test_the_headline_compressed_model_runs_as_the_nightly_job(spark, demo_run):
    workdir, report, _ = demo_run
    job = report["workloads"]["fashion-cnn"]["nightly_job"]
    preds = spark.read.format("delta").load(job["predictions"])
    assert preds.count() == job["rows_out"] == DEMO_ROWS
    assert [r[0].isoformat() for r in preds.select("run_date").distinct().collect()] == [
        DEMO_RUN_DATE
    ]
    assert (workdir / "runs" / f"fashion-cnn-tiny-student-w8-{DEMO_RUN_DATE}.json").is_file()


def test_demo_terminal_is_clean_and_fits_100_columns(demo_run):
    workdir, _, proc = demo_run
    printed = proc.stdout + proc.stderr
    assert "Traceback" not in printed
    assert not [line for line in printed.splitlines() if JAVA_LINE.search(line)]
    shown = ANSI.sub("", proc.stdout)  # what a 100-column terminal shows
    assert all(len(line) <= 100 for line in shown.splitlines()), shown
    assert "onnx-fp32/leanscore" in shown  # variant names whole, not cut
    assert str(workdir / "logs" / "spark.log") in proc.stdout
    # the JVM's own output went to the log the demo named
    assert (workdir / "logs" / "spark.log").stat().st_size > 0
    assert "s in all" in shown.splitlines()[-1]


def test_rows_to_halve_the_bill_follows_the_fixed_and_per_row_costs():
    fixed_cluster = load_pricing(packaged_config(".") / "pricing.yaml").model_copy(
        update={"window_hours": None}
    )
    slow, fast = {"core_seconds_per_million_rows": 40.0}, {"core_seconds_per_million_rows": 10.0}
    rows = rows_to_halve_bill(fixed_cluster, slow, fast)
    # on a cluster of fixed size the bill is a line: fixed + per-row x rows, the same fixed
    # part for both, so it halves where the per-row saving pays half the fixed part
    fixed = nightly_usd(fixed_cluster.model_copy(update={"nightly_rows": 1}), slow)
    billion = fixed_cluster.model_copy(update={"nightly_rows": 10**9})
    per_row = [(nightly_usd(billion, v) - fixed) / 1e9 for v in (slow, fast)]
    assert rows == pytest.approx(fixed / 2 / (per_row[0] / 2 - per_row[1]), abs=2)
    # one only 10% cheaper per row never does, however many rows
    assert rows_to_halve_bill(fixed_cluster, slow, {"core_seconds_per_million_rows": 36.0}) is None


def test_a_nightly_window_halves_the_bill_at_fewer_rows_and_exactly_from_that_row():
    windowed = load_pricing(packaged_config(".") / "pricing.yaml").model_copy(
        update={"window_hours": 1.0}
    )
    slow, fast = {"core_seconds_per_million_rows": 40.0}, {"core_seconds_per_million_rows": 10.0}
    rows = rows_to_halve_bill(windowed, slow, fast)
    fixed_rows = rows_to_halve_bill(windowed.model_copy(update={"window_hours": None}), slow, fast)
    # small nights run on one node instead of all of them: less start-up to outweigh
    assert rows is not None and fixed_rows is not None and rows < fixed_rows

    def ratio(n: int) -> float:
        night = windowed.model_copy(update={"nightly_rows": n})
        return nightly_usd(night, fast) / nightly_usd(night, slow)

    assert ratio(rows) <= 0.5 < ratio(rows - 1)


def test_workloads_are_chosen_by_name_in_the_order_given():
    from leanscore.bench.demo.job import WORKLOADS, chosen_workloads

    assert chosen_workloads(None) == chosen_workloads([]) == WORKLOADS
    picked = chosen_workloads(["digits-mlp", "wide-mlp", "digits-mlp"])
    assert [w.name for w in picked] == ["digits-mlp", "wide-mlp"]
    with pytest.raises(
        ValueError,
        match="unknown demo workload 'wide': choose from fashion-cnn, wide-mlp, digits-mlp",
    ):
        chosen_workloads(["wide"])
