"""A small run of the whole story: train, compress, write Delta, score, compare.

The run is the session's ``demo_run`` (conftest): the notebook and spark-submit tests score
its table with its artifacts, so the demo runs once per session."""

from __future__ import annotations

import json

from conftest import DEMO_ROWS, DEMO_RUN_DATE
from delta.tables import DeltaTable
from leanscore.compression.artifact import Artifact


def test_small_demo_writes_artifacts_tables_and_report(spark, demo_run):
    workdir, report = demo_run

    fp32 = Artifact.load(workdir / "artifacts" / "digits-mlp-fp32")
    small = Artifact.load(workdir / "artifacts" / "digits-mlp-pruned-int8")
    assert small.manifest.model_bytes * 5 < fp32.manifest.model_bytes
    steps = [s["step"] for s in small.manifest.metrics["steps"]]
    assert steps == ["prune", "export", "quantize"]
    assert small.manifest.metrics["final"]["params"] < fp32.manifest.metrics["final"]["params"] / 2

    table = str(workdir / "tables" / "digits_features")
    assert DeltaTable.isDeltaTable(spark, table)
    assert spark.read.format("delta").load(table).count() == DEMO_ROWS

    for variant in report["variants"]:
        preds = spark.read.format("delta").load(variant["predictions"])
        assert preds.count() == DEMO_ROWS
        run_dates = [r[0].isoformat() for r in preds.select("run_date").distinct().collect()]
        assert run_dates[0] == DEMO_RUN_DATE
        assert variant["rows"] == DEMO_ROWS
        assert variant["rows_per_s"] > 0
        assert variant["usd_per_million_rows"] > 0
        assert variant["accuracy"] > 0.85
    assert report["variants"][0]["fidelity"]["agreement"] == 1.0
    assert report["variants"][1]["fidelity"]["agreement"] > 0.9

    on_disk = json.loads((workdir / "report.json").read_text())
    assert [v["name"] for v in on_disk["variants"]] == [
        "onnx-fp32/leanscore",
        "digits-mlp-pruned-int8/leanscore",
    ]
