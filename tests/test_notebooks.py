"""Every notebook in ``notebooks/`` runs locally, as ``python notebooks/NAME.py``, on small data.

The session's one small demo run (conftest's ``demo_run``) is shared: its artifacts and Delta
table are the notebooks' inputs. Each notebook runs in its own process (its own Spark, as a
user would run it) with widgets given on the command line.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import DEMO_ROWS

pytestmark = pytest.mark.spark

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))
HEADER = "# Databricks notebook source\n"
RUN_DATE = "2026-11-28"
# The function each notebook shares with the CLI command of the same job.
CLI_FUNCTIONS = {
    "compress_model.py": ("compress", "run_compress"),
    "score_table.py": ("score", "run_score"),
    "embed_table.py": ("embed", "score_text_table"),
    "cost_report.py": ("bench", "run_bench"),
}


def notebook_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("SPARK_REMOTE", "PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET"):
        env.pop(key, None)
    env.update(
        {
            "LEANSCORE_SPARK_MASTER": "local[2]",
            "LEANSCORE_SHUFFLE_PARTITIONS": "2",
            "LEANSCORE_DRIVER_MEMORY": "1g",
            "PYSPARK_PYTHON": sys.executable,
            "MPLBACKEND": "Agg",
        }
    )
    env.update(extra)
    return env


def run_notebook(name: str, args: list[str], cwd: Path, *, timeout: int = 600, **env: str):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "notebooks" / name), *args],
        cwd=cwd,
        env=notebook_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


@pytest.fixture(scope="session")
def demo_workdir(demo_run) -> Path:
    """The session's small demo workdir (conftest's ``demo_run``)."""
    return demo_run[0]


def imported_names(tree: ast.AST) -> set[tuple[str, str]]:
    return {
        (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names
    }


def test_every_notebook_keeps_its_header_and_calls_the_cli_function():
    assert {p.name for p in NOTEBOOKS} == set(CLI_FUNCTIONS)
    cli = ast.parse((ROOT / "jobs" / "cli.py").read_text())
    commands = {
        node.name: imported_names(node) for node in cli.body if isinstance(node, ast.FunctionDef)
    }
    for path in NOTEBOOKS:
        text = path.read_text()
        assert text.startswith(HEADER), f"{path.name} lost its '# Databricks notebook source' line"
        assert text.count("\n# COMMAND ----------\n") >= 2, path.name
        assert "# MAGIC %md" in text, path.name
        tree = ast.parse(text)
        assert ("leanscore.jobs.notebook_support", "widgets") in imported_names(tree)
        command, function = CLI_FUNCTIONS[path.name]
        (shared,) = [imp for imp in commands[command] if imp[1] == function]
        assert shared in imported_names(tree), f"{path.name} must call {shared} like the CLI"


def test_a_misspelt_widget_is_a_clear_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "notebooks" / "score_table.py"), "--run-dat", RUN_DATE],
        cwd=tmp_path,
        env=notebook_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "unknown widget --run_dat" in proc.stderr
    assert "--run_date" in proc.stderr


def test_compress_notebook_writes_an_artifact(tmp_path):
    out = tmp_path / "artifact"
    proc = run_notebook(
        "compress_model.py",
        ["--out", str(out), "--epochs", "1", "--recipe", "recipes/digits-mlp-fp32.yaml"],
        tmp_path,
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["name"] == "digits-mlp-fp32"
    assert manifest["sha256"] == hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
    assert manifest["recipe"]["name"] == "digits-mlp-fp32"
    assert f"wrote {out}" in proc.stdout


@pytest.fixture(scope="module")
def classic_scores(demo_workdir, tmp_path_factory) -> dict:
    """The score notebook, run as the nightly task on classic local Spark."""
    work = tmp_path_factory.mktemp("score-notebook")
    out = work / "predictions"
    artifact = demo_workdir / "artifacts" / "digits-mlp-pruned-int8"
    proc = run_notebook(
        "score_table.py",
        [
            "--run_date",
            RUN_DATE,
            "--artifact",
            str(artifact),
            "--input_path",
            str(demo_workdir / "tables" / "digits_features"),
            "--output_path",
            str(out),
            "--summary_path",
            str(work / "summary.json"),
        ],  # fmt: skip
        work,
    )
    return {"out": out, "work": work, "artifact": artifact, "stdout": proc.stdout}


def test_score_notebook_writes_the_run_date_partition(classic_scores, spark):
    summary = json.loads((classic_scores["work"] / "summary.json").read_text())
    assert summary["rows_in"] == summary["rows_out"] == DEMO_ROWS
    assert summary["run_date"] == RUN_DATE
    out = spark.read.format("delta").load(str(classic_scores["out"])).toPandas()
    assert len(out) == DEMO_ROWS and out["row_id"].is_unique
    assert {str(d) for d in out["run_date"]} == {RUN_DATE}
    manifest = json.loads((classic_scores["artifact"] / "manifest.json").read_text())
    assert set(out["model_sha256"]) == {manifest["sha256"]}
    assert out["prediction_error"].isna().all()
    # A real model on real digits: most predictions match the labels.
    assert (out["prediction"] == out["label"]).mean() > 0.7
    assert f"scored {DEMO_ROWS:,} rows" in classic_scores["stdout"]


def test_score_notebook_on_spark_connect(classic_scores, demo_workdir, spark, tmp_path):
    """The same notebook on a Spark Connect session (no SparkContext, as on serverless): the
    local Connect server has no Delta Connect plugin, so input and output are Parquet here."""
    parquet_in = tmp_path / "features.parquet"
    spark.read.format("delta").load(str(demo_workdir / "tables" / "digits_features")).write.parquet(
        str(parquet_in)
    )
    out = tmp_path / "predictions"
    proc = run_notebook(
        "score_table.py",
        [
            "--artifact",
            str(classic_scores["artifact"]),
            "--input_path",
            str(parquet_in),
            "--output_path",
            str(out),
            "--summary_path",
            "",
            "--set",
            "input.format=parquet; output.format=parquet",
        ],  # fmt: skip
        tmp_path,
        SPARK_REMOTE="local[2]",
        LEANSCORE_WIDGET_RUN_DATE=RUN_DATE,  # widgets also come from the environment
    )
    assert f"scored {DEMO_ROWS:,} rows" in proc.stdout
    connect = pd.read_parquet(out).sort_values("row_id").reset_index(drop=True)
    classic = (
        spark.read.format("delta")
        .load(str(classic_scores["out"]))
        .toPandas()
        .sort_values("row_id")
        .reset_index(drop=True)
    )
    assert len(connect) == DEMO_ROWS
    assert {str(d) for d in connect["run_date"]} == {RUN_DATE}
    assert connect["row_id"].tolist() == classic["row_id"].tolist()
    assert connect["prediction"].tolist() == classic["prediction"].tolist()
    assert connect["probability"].astype(float).tolist() == pytest.approx(
        classic["probability"].astype(float).tolist(), rel=1e-6
    )


def test_cost_report_notebook_benches_charts_and_queries_history(demo_workdir, tmp_path):
    out = tmp_path / "bench"
    artifacts = [
        demo_workdir / "artifacts" / n for n in ("digits-mlp-fp32", "digits-mlp-pruned-int8")
    ]
    run_notebook(
        "cost_report.py",
        [
            "--out",
            str(out),
            "--input_path",
            str(demo_workdir / "tables" / "digits_features"),
            "--artifacts",
            ",".join(str(a) for a in artifacts),
            "--repeats",
            "1",
            # The demo has no PyTorch state_dict and needs no preparing; keep the bound small.
            "--set",
            "torch_model=; prepare=; bound_rows=2000; onnx_predict_batch_udf=false; "
            "spark_reader_variant=false",
        ],  # fmt: skip
        tmp_path,
    )
    report = json.loads((out / "report.json").read_text())
    names = [v["name"] for v in report["variants"]]
    assert len(names) == 2 and all(v["rows"] == DEMO_ROWS for v in report["variants"])
    for chart in report["charts"].values():
        assert (out / chart).stat().st_size > 1000
    assert (out / "cost_report_notebook.png").stat().st_size > 1000
    history = pd.read_csv(out / "history_by_variant.csv")
    assert sorted(history["name"]) == sorted(names)
    assert (history["runs"] == 1).all()
    assert (history["best_usd_per_million_rows"] > 0).all()


def test_widget_defaults_environment_and_argv(monkeypatch):
    from leanscore.jobs.notebook_support import location_overrides, set_overrides, widgets

    defaults = {"run_date": "", "output_path": "out", "set": ""}
    monkeypatch.setenv("LEANSCORE_WIDGET_OUTPUT_PATH", "/env/out")
    values = widgets({}, defaults, argv=["--run_date=2026-01-02", "--set", "a=1; b.c=x"])
    assert values == {"run_date": "2026-01-02", "output_path": "/env/out", "set": "a=1; b.c=x"}
    assert widgets({}, defaults, argv=["--output-path", "/argv"])["output_path"] == "/argv"
    assert set_overrides(values["set"]) == ["a=1", "b.c=x"]
    assert location_overrides("input", "", "main.s.t") == ["input.path=", "input.table=main.s.t"]
    with pytest.raises(ValueError, match="input_path or input_table, not both"):
        location_overrides("input", "/p", "main.s.t")
    with pytest.raises(ValueError, match="widget --run_date needs a value"):
        widgets({}, defaults, argv=["--run_date"])


def test_embed_notebook_writes_the_run_date_partition(spark, minilm_onnx, tmp_path):
    """The embedding notebook as the nightly task: real sentences (one empty, flagged) in a
    Delta table, the fp32 MiniLM artifact, embeddings in the run date's partition."""
    import pandas as pd
    from leanscore.bench.text_data import text_table
    from leanscore.compression.build import write_text_artifact

    artifact = write_text_artifact(
        minilm_onnx, tmp_path / "minilm-fp32", name="minilm-fp32", max_length=64
    )
    docs = text_table(11, seed=5)
    docs = pd.concat([docs, pd.DataFrame({"doc_id": [11], "text": [""]})], ignore_index=True)
    spark.createDataFrame(docs).write.format("delta").save(str(tmp_path / "docs"))
    proc = run_notebook(
        "embed_table.py",
        [
            "--run_date",
            RUN_DATE,
            "--artifact",
            str(artifact.path),
            "--input_path",
            str(tmp_path / "docs"),
            "--output_path",
            str(tmp_path / "embeddings"),
            "--summary_path",
            str(tmp_path / "summary.json"),
            "--set",
            "path_threshold_bytes=0;max_length=64",
        ],  # fmt: skip
        ROOT,
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["rows_in"] == summary["rows_out"] == 12 and summary["flagged_rows"] == 1
    out = spark.read.format("delta").load(str(tmp_path / "embeddings")).toPandas()
    assert sorted(out["doc_id"]) == list(range(12))
    assert {str(d) for d in out["run_date"]} == {RUN_DATE}
    good = out[out["embedding_error"].isna()]
    assert len(good) == 11 and all(len(e) == 384 for e in good["embedding"])
    (error,) = out.loc[out["doc_id"] == 11, "embedding_error"]
    assert "empty string" in error
    assert "embedded 12 rows" in proc.stdout


@pytest.mark.slow
def test_embed_notebook_builds_its_default_artifact_and_table_when_missing(tmp_path):
    """After `make demo` alone nothing under demo-output/embed exists: the notebook's defaults
    (the shipped config) still run, building the table and the shipped int8 recipe's artifact."""
    run_notebook("embed_table.py", ["--run_date", RUN_DATE], tmp_path, timeout=900)
    embed = tmp_path / "demo-output" / "embed"
    manifest = json.loads(
        (embed / "artifacts" / "minilm-dynamic-int8" / "manifest.json").read_text()
    )
    assert manifest["name"] == "minilm-dynamic-int8"
    summary = json.loads((embed / "runs" / "nightly-embed-summary.json").read_text())
    assert summary["rows_out"] == summary["rows_in"] > 0
    assert (embed / "tables" / "nightly_embeddings" / "_delta_log").is_dir()
