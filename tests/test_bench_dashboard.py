"""The bundle's dashboard over the bench history: the file the bundle names exists, every
widget reads a dataset it defines, every column it charts is one the bench writes, and it
reads the table the weekly bench appends to."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from leanscore.bench.report import HISTORY_COLUMNS

ROOT = Path(__file__).resolve().parents[1]


def test_bundle_dashboard_reads_the_bench_history_table():
    bundle = yaml.safe_load((ROOT / "databricks.yml").read_text())
    dashboard = bundle["resources"]["dashboards"]["leanscore_bench_history"]
    spec = json.loads((ROOT / dashboard["file_path"]).read_text())
    datasets = {d["name"]: "".join(d["queryLines"]) for d in spec["datasets"]}
    datasets.pop("shadow")  # the nightly shadow's page: test_shadow.py checks it
    table = bundle["variables"]["bench_history_table"]["default"]
    for query in datasets.values():
        assert re.search(rf"FROM {re.escape(table)}\b", query), query
        selected = re.search(r"SELECT(.*)FROM", query, re.S).group(1)
        columns = {c.strip() for c in selected.split(",")}
        assert columns <= set(HISTORY_COLUMNS), columns - set(HISTORY_COLUMNS)
    widgets = [
        item["widget"]
        for page in spec["pages"]
        if page["name"] != "shadow_fidelity"
        for item in page["layout"]
    ]
    assert {w["name"] for w in widgets} >= {"rows_per_s", "usd_per_million_rows"}
    for w in widgets:
        for q in w["queries"]:
            assert q["query"]["datasetName"] in datasets
            for f in q["query"]["fields"]:
                used = re.findall(r"`(\w+)`", f["expression"])
                assert used and set(used) <= set(HISTORY_COLUMNS), f
        names = {f["name"] for q in w["queries"] for f in q["query"]["fields"]}
        assert {e["fieldName"] for e in w["spec"]["encodings"].values()} <= names
    # the weekly bench appends to that table, and the cost report reads it
    tasks = bundle["resources"]["jobs"]["leanscore_weekly_bench"]["tasks"]
    params = tasks[0]["python_wheel_task"]["parameters"]
    assert "history=${var.bench_history_table}" in params
    assert tasks[1]["notebook_task"]["base_parameters"]["history"] == "${var.bench_history_table}"
