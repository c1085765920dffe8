"""A small run of the whole story: train, compress, write Delta, score, compare."""

from __future__ import annotations

import json

from delta.tables import DeltaTable
from leanscore.compression.artifact import Artifact
from leanscore.jobs.demo import run_demo


def test_small_demo_writes_artifacts_tables_and_report(spark, tmp_path):
    report = run_demo(spark, tmp_path, rows=4000, run_date="2026-01-15", epochs=3)

    fp32 = Artifact.load(tmp_path / "artifacts" / "digits-mlp-fp32")
    small = Artifact.load(tmp_path / "artifacts" / "digits-mlp-pruned-int8")
    assert small.manifest.model_bytes * 5 < fp32.manifest.model_bytes
    steps = [s["step"] for s in small.manifest.metrics["steps"]]
    assert steps == ["prune", "export", "quantize"]
    assert small.manifest.metrics["final"]["params"] < fp32.manifest.metrics["final"]["params"] / 2

    table = str(tmp_path / "tables" / "digits_features")
    assert DeltaTable.isDeltaTable(spark, table)
    assert spark.read.format("delta").load(table).count() == 4000

    for variant in report["variants"]:
        preds = spark.read.format("delta").load(variant["predictions"])
        assert preds.count() == 4000
        assert [r[0] for r in preds.select("run_date").distinct().collect()][0].isoformat() == (
            "2026-01-15"
        )
        assert variant["rows"] == 4000
        assert variant["rows_per_s"] > 0
        assert variant["usd_per_million_rows"] > 0
        assert variant["accuracy"] > 0.85
    assert report["variants"][0]["fidelity"]["agreement"] == 1.0
    assert report["variants"][1]["fidelity"]["agreement"] > 0.9

    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert [v["name"] for v in on_disk["variants"]] == [
        "onnx-fp32/leanscore",
        "digits-mlp-pruned-int8/leanscore",
    ]
