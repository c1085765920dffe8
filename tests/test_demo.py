"""A small run of the whole story, as a user runs it: train, compress, write Delta, score,
compare, for the headline workload (where compression pays) and the digits MLP.

The run is the session's ``demo_run`` (conftest): the notebook and spark-submit tests score
its digits table with its artifacts, so the demo runs once per session."""

from __future__ import annotations

import re

import pytest
from conftest import DEMO_ROWS, DEMO_RUN_DATE
from delta.tables import DeltaTable
from leanscore.bench.demo.job import rows_to_halve_bill
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
    assert list(report["workloads"]) == ["wide-mlp", "digits-mlp"]
    for name, (fp32, small), table in (
        ("wide-mlp", ("wide-mlp-fp32", "wide-mlp-distilled-tiny-int8"), "wide_features"),
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


def test_digits_accuracy_interval_counts_distinct_images_not_augmented_rows(demo_run):
    _, report, _ = demo_run
    digits, wide = report["workloads"]["digits-mlp"], report["workloads"]["wide-mlp"]
    assert digits["distinct_examples"] == 450  # held-out images, each copied many times
    low, high = digits["variants"][0]["accuracy_interval"]
    assert high - low > 0.02  # about +-1.5 points over 450 images, not +-0.3 over 4,000 rows
    assert wide["distinct_examples"] is None  # every wide row is an independent draw


def test_the_headline_compressed_model_runs_as_the_nightly_job(spark, demo_run):
    workdir, report, _ = demo_run
    job = report["workloads"]["wide-mlp"]["nightly_job"]
    preds = spark.read.format("delta").load(job["predictions"])
    assert preds.count() == job["rows_out"] == DEMO_ROWS
    assert [r[0].isoformat() for r in preds.select("run_date").distinct().collect()] == [
        DEMO_RUN_DATE
    ]
    assert (workdir / "runs" / f"wide-mlp-distilled-tiny-int8-{DEMO_RUN_DATE}.json").is_file()


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
    pricing = load_pricing(packaged_config(".") / "pricing.yaml")
    fixed = 0.5

    def result(per_row_usd: float) -> dict:
        return {
            "fixed_usd_per_night": fixed,
            "nightly_usd": fixed + per_row_usd * pricing.nightly_rows,
        }

    # a model 4x cheaper per row halves the bill once rows outweigh the fixed cost
    rows = rows_to_halve_bill(pricing, result(4e-9), result(1e-9))
    assert rows == int(fixed / 2 / (2e-9 - 1e-9)) + 1
    # one only 10% cheaper per row never does, however many rows
    assert rows_to_halve_bill(pricing, result(4e-9), result(3.6e-9)) is None


def test_workloads_are_chosen_by_name_in_the_order_given():
    from leanscore.bench.demo.job import WORKLOADS, chosen_workloads

    assert chosen_workloads(None) == chosen_workloads([]) == WORKLOADS
    picked = chosen_workloads(["digits-mlp", "wide-mlp", "digits-mlp"])
    assert [w.name for w in picked] == ["digits-mlp", "wide-mlp"]
    with pytest.raises(ValueError, match="unknown demo workload 'wide': choose from wide-mlp, "):
        chosen_workloads(["wide"])
