"""A small real bench run (real Spark, Delta, ONNX Runtime, torch): every output, its rows,
its money against a hand computation, and the history table growing per run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from leanscore.bench.compare import BenchConfig
from leanscore.jobs.config import load_config

PRICING = {
    "instance": {
        "name": "test-node",
        "usd_per_hour": 0.72,
        "cores": 4,
        "dbu_per_hour": 2.0,
        "usd_per_dbu": 0.18,
    },
    "workers": 3,
    "nightly_rows": 50_000_000,
    "nights_per_month": 20,
}
ROWS = 4_000
REQUIRED = (
    "name",
    "rows",
    "wall_s",
    "rows_per_s",
    "usd_per_million_rows",
    "model_bytes",
    "accuracy",
    "fidelity",
    "time_breakdown",
    "accuracy_interval",
)


def bench_config(tmp: Path, **changes) -> Path:
    inputs = tmp / "inputs"
    data = {
        "input": {"path": str(inputs / "table"), "format": "delta"},
        "torch_model": {"state_dict": str(inputs / "digits-mlp.pt")},
        "artifacts": [str(inputs / "fp32"), str(inputs / "pruned-int8")],
        "prepare": {
            "rows": ROWS,
            "recipes": ["digits-mlp-fp32.yaml", "digits-mlp-demo.yaml"],
            "epochs": 2,
            "augmented_rows": 1_000,
        },
        "label_column": "label",
        "pricing": str(tmp / "pricing.yaml"),
        "repeats": 1,
        "bound_rows": 2_000,
        "history": str(tmp / "history"),
        # PyTorch's batch differs from leanscore's 4096: the ONNX model runs in
        # predict_batch_udf at both, one for each pair
        "torch_batch_sizes": [256],
        **changes,
    }
    (tmp / "pricing.yaml").write_text(yaml.safe_dump(PRICING))
    path = tmp / f"bench-{len(list(tmp.glob('bench-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("bench")


@pytest.fixture(scope="module")
def first_run(spark, bench_dir):
    from leanscore.bench.run import run_bench

    path = bench_config(bench_dir)
    config = load_config(BenchConfig, path)
    return run_bench(spark, config, bench_dir / "out1", config_dir=path.parent)


def test_small_bench_writes_every_output(spark, bench_dir, first_run):
    out = bench_dir / "out1"
    report = json.loads((out / "report.json").read_text())
    names = [v["name"] for v in report["variants"]]
    assert names == [
        "torch-fp32/predict_batch_udf",
        "onnx-fp32/predict_batch_udf",
        "onnx-fp32/predict_batch_udf@4096",
        "onnx-fp32/leanscore-spark-reader",
        "onnx-fp32/leanscore",
        "digits-mlp-pruned-int8/leanscore",
    ]
    assert [v["batch_size"] for v in report["variants"]] == [256, 256, 4096, 4096, 4096, 4096]
    effects = report["decomposition"]["effects"]
    assert (effects["runtime"]["variant"], effects["runtime"]["reference"]) == (
        "onnx-fp32/predict_batch_udf",
        "torch-fp32/predict_batch_udf",
    )
    assert (effects["engine"]["variant"], effects["engine"]["reference"]) == (
        "onnx-fp32/leanscore-spark-reader",
        "onnx-fp32/predict_batch_udf@4096",
    )
    for v in report["variants"]:
        assert all(k in v for k in REQUIRED), v.keys()
        assert v["rows_per_s"] > 0 and len(v["wall_s_all"]) == 1
        assert 0.0 <= v["accuracy"] <= 1.0
        assert v["fidelity"]["reference"] == "torch-fp32"
        low, high = v["accuracy_interval"]
        assert low <= v["accuracy"] <= high
        assert v["process_cpu_s"] > 0 and v["executor_cpu_s"] > 0
    torch_fid = report["variants"][0]["fidelity"]
    assert torch_fid["agreement"] == 1.0 and torch_fid["max_abs_diff"] == 0.0
    onnx_fid = report["variants"][4]["fidelity"]
    assert onnx_fid["agreement"] > 0.999 and onnx_fid["max_abs_diff"] < 1e-4
    # the compressed model is smaller than the fp32 export it came from
    assert report["variants"][5]["model_bytes"] < report["variants"][4]["model_bytes"] / 3
    assert report["bound"]["read_only"]["rows_per_s"] > 0
    assert set(report["bound"]["models"]) == {"torch-fp32", "onnx-fp32", names[5].split("/")[0]}
    env = report["environment"]
    assert env["spark_master"].startswith("local") and env["spark_cores"] == report["cores"]
    assert {"avx512_vnni", "amx", "cpu_model"} <= set(env)
    assert all(env["versions"][p] for p in ("pyspark", "onnxruntime", "torch"))
    effects = report["decomposition"]["effects"]
    assert effects["compression"]["variant"] == names[5]
    assert effects["compression"]["reference"] == "onnx-fp32/leanscore"
    assert effects["reader"]["reference"] == "onnx-fp32/leanscore-spark-reader"
    for chart in report["charts"].values():
        assert (out / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    for needle in (
        *names,
        "## Environment",
        "## Cost model",
        "## What each part buys",
        "## Where the time goes",
    ):
        assert needle in md
    assert report["history"]["path"] == str(bench_dir / "history")


def test_bench_rows_equal_the_input(spark, bench_dir, first_run):
    rows = spark.read.format("delta").load(str(bench_dir / "inputs" / "table")).count()
    assert rows == ROWS
    for v in first_run["variants"]:
        assert v["rows"] == rows
        assert v["rows_scored"] == rows  # counted after every model scored every row
        assert v["rows_out"] == rows  # what the timed path itself produced
        assert v["rows_predicted"] == rows  # with its prediction computed, not pruned away
        if v["engine"] == "spark":
            # task metrics of each timed round: every row was read (Delta's log adds a few)
            assert len(v["rows_read"]) == 1 and v["rows_read"][0] >= rows
    engines = {v["name"]: v["engine"] for v in first_run["variants"]}
    assert {e for n, e in engines.items() if n.endswith("/leanscore")} == {"scan"}
    assert {e for n, e in engines.items() if n.endswith("/predict_batch_udf")} == {"spark"}
    passes = first_run["bound"]["read_only_passes"]
    assert set(passes) == {"spark", "spark-to-python", "pyarrow"}
    assert first_run["bound"]["read_only"]["wall_s"] == min(p["wall_s"] for p in passes.values())


def test_dollar_figures_match_a_hand_computation(first_run):
    # (0.72 $/h + 2 DBU/h * 0.18 $/DBU) / 3600 s / 4 cores = 0.000075 $ per core-second
    usd_per_core_second = (0.72 + 2.0 * 0.18) / 3600 / 4
    cores = first_run["cores"]
    base = first_run["variants"][0]
    for v in first_run["variants"]:
        core_s_per_m = cores * v["wall_s"] / ROWS * 1e6
        usd_per_m = core_s_per_m * usd_per_core_second
        monthly = usd_per_m * 50 * 20  # 50 M rows a night, 20 nights
        assert v["core_seconds_per_million_rows"] == pytest.approx(core_s_per_m, rel=1e-3)
        assert v["usd_per_million_rows"] == pytest.approx(usd_per_m, rel=1e-3)
        assert v["nightly_usd"] == pytest.approx(usd_per_m * 50, rel=1e-3)
        assert v["monthly_usd"] == pytest.approx(monthly, rel=1e-3)
        base_monthly = cores * base["wall_s"] / ROWS * 1e6 * usd_per_core_second * 50 * 20
        saved = base_monthly - monthly
        assert v["monthly_savings_usd"] == pytest.approx(saved, abs=1e-3 * base_monthly)
        assert v["savings_pct"] == pytest.approx(100 * (1 - monthly / base_monthly), abs=0.05)
    assert "$0.72/hour plus 2 DBU/hour at $0.18/DBU" in first_run["cost_model"]


def test_history_grows_by_one_row_per_variant_per_run(spark, bench_dir, first_run):
    from leanscore.bench.run import run_bench

    history = str(bench_dir / "history")
    before = spark.read.format("delta").load(history)
    assert before.count() == len(first_run["variants"])
    # a second, cheaper run: no ONNX-in-predict_batch_udf variant
    path = bench_config(bench_dir, onnx_predict_batch_udf=False)
    second = run_bench(
        spark, load_config(BenchConfig, path), bench_dir / "out2", config_dir=path.parent
    )
    assert len(second["variants"]) == 4
    after = spark.read.format("delta").load(history)
    assert after.count() == len(first_run["variants"]) + 4
    per_run = {
        r["run_id"]: r["n"] for r in after.groupBy("run_id").count().toDF("run_id", "n").collect()
    }
    assert per_run == {first_run["run_id"]: 6, second["run_id"]: 4}
    names = {r["name"] for r in after.where(f"run_id = '{second['run_id']}'").collect()}
    assert names == {v["name"] for v in second["variants"]}


def test_time_shares_add_up_to_the_wall(first_run):
    """Every variant's parts, measured inside its tasks, add up to its core-seconds (cores x
    wall of the round) within 5%, and each share lies between 0 and 100%."""
    for v in first_run["variants"]:
        t = v["time_breakdown"]
        assert t is not None, v["name"]
        parts = [t[k] for k in ("read_s", "model_s", "convert_s", "spark_s")]
        assert sum(parts) == pytest.approx(t["core_s"], rel=0.05), (v["name"], t)
        # the report keeps walls to the millisecond, core_s from the unrounded wall
        wall = min(v["wall_s_all"], key=lambda w: abs(w - v["wall_s"]))
        assert t["core_s"] == pytest.approx(
            first_run["cores"] * wall, abs=first_run["cores"] * 1e-3
        )
        assert all(0.0 <= share <= 1.0 for share in t["shares"].values()), (v["name"], t)
        # the clocks may not claim more than 5% beyond what the cores had
        assert t["over_measured_s"] <= 0.05 * t["core_s"], (v["name"], t)
        assert t["model_s"] > 0 and t["read_s"] > 0, (v["name"], t)


def test_html_report_is_self_contained_and_its_charts_render(bench_dir, first_run, tmp_path):
    """report.html holds every chart inline and refers to no file; rendered offline in headless
    Chromium, the screenshot shows the charts' colours. The same page without its images
    shows none of them (the check can fail)."""
    from browser import color_pixels, screenshot
    from leanscore.bench.report import SHARE_COLORS

    page = (bench_dir / "out1" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(first_run["charts"])
    for chart in first_run["charts"].values():
        assert f"({chart})" not in page and f'"{chart}"' not in page
    alone = tmp_path / "report.html"  # away from the PNG files: nothing to load but itself
    alone.write_text(page)
    shot = screenshot(alone, tmp_path / "shot.png")
    counts = {c: color_pixels(shot, c) for c in SHARE_COLORS[:3]}
    assert all(n > 500 for n in counts.values()), counts
    stripped = tmp_path / "no-charts.html"
    stripped.write_text(re.sub(r"<img [^>]*>", "", page))
    blank = screenshot(stripped, tmp_path / "blank.png")
    assert all(color_pixels(blank, c) < 50 for c in SHARE_COLORS[:3])
