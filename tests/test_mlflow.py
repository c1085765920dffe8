"""MLflow as the source and destination of models: register, resolve, score nightly from an alias,
spark_udf, compress from a logged model, and the bad inputs. Real MLflow with a SQLite backend
store and a local artifact root made here; the environment is set per test."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import held_out_frame, make_artifact
from reliability_support import run_cli, write_yaml

mlflow = pytest.importorskip("mlflow")

from leanscore.compression.artifact import Artifact  # noqa: E402
from leanscore.compression.mlflow_log import log_and_register  # noqa: E402
from leanscore.compression.mlflow_registry import (  # noqa: E402
    RegistryError,
    load_artifact,
    require_mlflow,
)


@pytest.fixture(scope="module")
def int8_artifact(small_model, tmp_path_factory):
    return make_artifact(
        small_model,
        tmp_path_factory.mktemp("artifacts") / "int8",
        name="digits-small-int8",
        recipe_steps=[{"step": "export"}, {"step": "quantize", "mode": "dynamic_int8"}],
    )


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def test_register_then_resolve_by_version_and_by_alias(registry, artifact):
    version = log_and_register(artifact, name="digits-resolve", alias="champion")
    assert (version.version, version.model_uri) == ("1", "models:/digits-resolve/1")
    by_version = load_artifact("models:/digits-resolve/1")
    by_alias = load_artifact("models:/digits-resolve@champion")
    for loaded in (by_version, by_alias):
        assert loaded.sha256 == artifact.sha256
        assert (loaded.manifest.name, loaded.manifest.version) == ("digits-resolve", "1")
        assert loaded.read_model_bytes() == artifact.read_model_bytes()
    assert by_alias.registered.alias == "champion"
    assert by_alias.registered.source == "models:/digits-resolve/1"

    mlmodel = yaml.safe_load((Path(by_alias.path) / "MLmodel").read_text())
    onnx_flavor = mlmodel["flavors"]["onnx"]
    assert onnx_flavor["providers"] == ["CPUExecutionProvider"]
    assert onnx_flavor["onnx_session_options"] == {"intra_op_num_threads": 1}
    assert not list(Path(by_alias.path).glob("*.data"))  # stored inline, no external data
    assert mlmodel["flavors"]["python_function"]["loader_module"] == "leanscore.udfs.mlflow_pyfunc"
    assert mlmodel["metadata"]["leanscore"]["sha256"] == artifact.sha256
    outputs = [c["name"] for c in json.loads(mlmodel["signature"]["outputs"])]
    inputs = [c["name"] for c in json.loads(mlmodel["signature"]["inputs"])]
    assert (inputs, outputs) == (["features"], ["prediction", "probability"])

    run = _client().get_run(version.run_id)
    final = artifact.manifest.metrics["final"]
    assert run.data.metrics["final.onnx_bytes"] == final["onnx_bytes"]
    assert run.data.metrics["baseline.params"] == artifact.manifest.metrics["baseline"]["params"]
    assert run.data.params["recipe.name"] == artifact.manifest.recipe["name"]
    assert run.data.params["recipe.steps.0.step"] == "export"
    assert run.data.tags["leanscore.sha256"] == artifact.sha256
    mv = _client().get_model_version("digits-resolve", "1")
    assert mv.tags["leanscore.sha256"] == artifact.sha256


def _score_config(tmp_path: Path, spark, digits, *, artifact: str, output: str) -> Path:
    table = tmp_path / "features"
    if not table.exists():
        held_out_frame(spark, digits, n=300).write.format("delta").save(str(table))
    return write_yaml(
        tmp_path / f"{output}.yaml",
        {
            "artifact": artifact,
            "input": {"path": str(table), "format": "delta"},
            "output": {"path": str(tmp_path / output), "format": "delta"},
            "key_columns": ["row_id"],
            "summary_path": str(tmp_path / f"{output}-summary.json"),
        },
    )


def _rows(spark, path: Path, day: str) -> list:
    return (
        spark.read.format("delta")
        .load(str(path))
        .where(f"run_date = DATE'{day}'")
        .orderBy("row_id")
        .select("row_id", "prediction", "probability", "model_name", "model_version")
        .collect()
    )


@pytest.mark.slow
def test_nightly_score_from_alias_equals_folder_and_follows_the_alias(
    registry, spark, digits, artifact, int8_artifact, tmp_path
):
    log_and_register(artifact, name="digits-nightly", alias="champion")
    from_folder = _score_config(tmp_path, spark, digits, artifact=str(artifact.path), output="a")
    nightly = _score_config(tmp_path, spark, digits, artifact="models:/x@y", output="b")
    assert run_cli("score", "-c", from_folder, "--run-date", "2026-11-28").exit_code == 0
    alias_uri = "models:/digits-nightly@champion"
    result = run_cli(
        "score", "-c", nightly, "--run-date", "2026-11-28", "--set", f"artifact={alias_uri}"
    )
    assert result.exit_code == 0, result.output

    folder_rows = _rows(spark, tmp_path / "a", "2026-11-28")
    alias_rows = _rows(spark, tmp_path / "b", "2026-11-28")
    assert len(alias_rows) == 300
    assert [(r.row_id, r.prediction, r.probability) for r in alias_rows] == [
        (r.row_id, r.prediction, r.probability) for r in folder_rows
    ]
    assert {(r.model_name, r.model_version) for r in alias_rows} == {("digits-nightly", "1")}
    summary = json.loads((tmp_path / "b-summary.json").read_text())
    assert summary["registered_version"] == "1"
    assert summary["model_sha256"] == artifact.sha256
    assert summary["model_uri"] == alias_uri

    # The alias moves to a new version: the next run resolves it again and records it.
    log_and_register(int8_artifact, name="digits-nightly", alias="champion")
    result = run_cli(
        "score", "-c", nightly, "--run-date", "2026-11-29", "--set", f"artifact={alias_uri}"
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "b-summary.json").read_text())
    assert (summary["registered_version"], summary["model_sha256"]) == (
        "2",
        int8_artifact.sha256,
    )
    assert {r.model_version for r in _rows(spark, tmp_path / "b", "2026-11-29")} == {"2"}
    assert {r.model_version for r in _rows(spark, tmp_path / "b", "2026-11-28")} == {"1"}


@pytest.mark.parametrize("which", ["fp32", "int8"])
def test_spark_udf_on_the_registered_model_equals_leanscore(
    registry, spark, digits, artifact, int8_artifact, which
):
    from leanscore.udfs import score_dataframe
    from pyspark.sql import functions as F

    chosen = artifact if which == "fp32" else int8_artifact
    name = f"digits-udf-{which}"
    log_and_register(chosen, name=name, alias="champion")
    df = held_out_frame(spark, digits, n=400).repartition(2, "row_id").cache()
    udf = mlflow.pyfunc.spark_udf(spark, f"models:/{name}@champion", env_manager="local")
    theirs = (
        df.withColumn("r", udf("features"))
        .select("row_id", F.col("r.prediction").alias("p"), F.col("r.probability").alias("q"))
        .orderBy("row_id")
        .collect()
    )
    ours = score_dataframe(df, chosen.path, keep_columns=["row_id"]).orderBy("row_id").collect()
    assert len(theirs) == 400
    assert [r.p for r in theirs] == [r.prediction for r in ours]
    assert np.array_equal([r.q for r in theirs], [r.probability for r in ours])


def _compress_config(tmp_path: Path, model: str | dict, steps: list[dict]) -> Path:
    model = {"kind": "mlflow", "uri": model} if isinstance(model, str) else model
    return write_yaml(
        tmp_path / "compress.yaml",
        {
            "recipe": {"name": "from-mlflow", "max_accuracy_drop": 5.0, "steps": steps},
            "model": model,
            "data": {
                "train": {"kind": "digits", "split": "train"},
                "evaluation": {"kind": "digits", "split": "held_out"},
            },
        },
    )


def test_pytorch_model_logged_with_mlflow_compresses_and_registers(
    registry, small_model, digits, tmp_path
):
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    _, held_out = digits
    example = held_out.features[:4]
    with torch.no_grad():
        outputs = small_model(torch.from_numpy(example)).numpy()
    with mlflow.start_run():
        mlflow.pytorch.log_model(
            small_model,
            name="model",
            registered_model_name="digits-torch",
            signature=infer_signature(example, outputs),
            input_example=example,  # MLflow's default pt2 format traces the model with it
            pip_requirements=["torch"],
        )
    config = _compress_config(
        tmp_path,
        "models:/digits-torch/1",
        [{"step": "export"}, {"step": "quantize", "mode": "dynamic_int8"}],
    )
    out = tmp_path / "artifact"
    result = run_cli(
        "compress", "-c", config, "--out", out, "--register", "digits-int8", "--alias", "champion"
    )
    assert result.exit_code == 0, result.output
    assert "registered models:/digits-int8/1" in result.output
    manifest = Artifact.load(out).manifest
    source = manifest.data["model_source"]
    assert (source["kind"], source["flavor"], source["version"]) == ("mlflow", "pytorch", "1")
    assert source["uri"] == "models:/digits-torch/1"
    final, baseline = manifest.metrics["final"], manifest.metrics["baseline"]
    assert final["onnx_bytes"] < baseline["onnx_bytes"]
    assert abs(final["accuracy"] - baseline["accuracy"]) < 0.02
    registered = load_artifact("models:/digits-int8@champion")
    assert registered.sha256 == manifest.sha256
    run = _client().get_run(registered.registered.run_id)
    assert json.loads(run.data.tags["leanscore.source_model"])["uri"] == "models:/digits-torch/1"


def test_onnx_model_logged_with_mlflow_compresses(registry, artifact, tmp_path):
    import mlflow.onnx
    import onnx

    with mlflow.start_run():
        info = mlflow.onnx.log_model(
            onnx.load(str(artifact.model_path)), name="model", pip_requirements=["onnx"]
        )
    uri = f"runs:/{info.run_id}/model"
    config = _compress_config(tmp_path, uri, [{"step": "quantize", "mode": "dynamic_int8"}])
    result = run_cli("compress", "-c", config, "--out", tmp_path / "q")
    assert result.exit_code == 0, result.output
    manifest = Artifact.load(tmp_path / "q").manifest
    assert manifest.data["model_source"]["flavor"] == "onnx"
    assert manifest.model_bytes < artifact.manifest.model_bytes


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def torch_only_model(registry, small_model):
    """A registered model that is not a leanscore model (a plain mlflow.pytorch model)."""
    import mlflow.pytorch

    if not any(m.name == "plain-torch" for m in _client().search_registered_models()):
        with mlflow.start_run():
            mlflow.pytorch.log_model(
                small_model,
                name="model",
                registered_model_name="plain-torch",
                serialization_format="pickle",
                pip_requirements=["torch"],
            )
    return "models:/plain-torch/1"


@pytest.mark.parametrize(
    ("uri", "phrase"),
    [
        ("models:/no-such-model@champion", "registered model 'no-such-model' not found"),
        ("models:/digits-bad/7", "version 7 of registered model 'digits-bad' not found"),
        ("models:/digits-bad@missing", "alias 'missing' of registered model 'digits-bad'"),
        ("models:/plain-torch/1", "not a leanscore model (no manifest.json; flavors"),
        ("models:/digits-bad", "give models:/NAME/VERSION, models:/NAME@ALIAS"),
    ],
)
def test_bad_model_uri_is_one_line_exit_1_nothing_written(
    registry, spark, digits, artifact, torch_only_model, tmp_path, uri, phrase
):
    if not any(m.name == "digits-bad" for m in _client().search_registered_models()):
        log_and_register(artifact, name="digits-bad")
    config = _score_config(tmp_path, spark, digits, artifact=uri, output="out")
    result = run_cli("score", "-c", config, "--run-date", "2026-11-28")
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.output
    assert uri in lines[0] and phrase in lines[0], lines[0]
    assert not (tmp_path / "out").exists()


def test_unreachable_tracking_uri_is_one_line_exit_1_nothing_written(
    monkeypatch, spark, digits, tmp_path, small_model
):
    server = f"http://127.0.0.1:{_closed_port()}"
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.setenv(var, server)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    config = _score_config(tmp_path, spark, digits, artifact="models:/m@prod", output="out")
    result = run_cli("score", "-c", config, "--run-date", "2026-11-28")
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert "models:/m@prod: cannot read the MLflow registry at " + server in line, line
    assert not (tmp_path / "out").exists()

    builtin = {"kind": "builtin-digits-mlp", "epochs": 1}
    compress = _compress_config(tmp_path, builtin, [{"step": "export"}])
    result = run_cli("compress", "-c", compress, "--out", tmp_path / "art", "--register", "m")
    assert result.exit_code == 1
    assert f"cannot read the MLflow registry at {server}" in result.stderr, result.output
    assert not (tmp_path / "art").exists()  # checked before any work

    compress = _compress_config(tmp_path, "models:/m/1", [{"step": "export"}])
    result = run_cli("compress", "-c", compress, "-o", tmp_path / "x")
    assert result.exit_code == 1
    assert "models:/m/1: cannot read the MLflow registry" in result.stderr, result.output


def test_missing_mlflow_names_the_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "mlflow", None)  # import mlflow now fails
    with pytest.raises(RegistryError, match=r"models:/m@prod: .*leanscore\[mlflow\]"):
        require_mlflow("models:/m@prod")


@pytest.mark.slow
def test_bench_times_spark_udf_next_to_leanscore(spark, digits, artifact, int8_artifact):
    from leanscore.bench.compare import compare_variants
    from leanscore.bench.pricing import load_pricing
    from leanscore.jobs.config import packaged_config

    df = held_out_frame(spark, digits, n=400).cache()
    report = compare_variants(
        spark,
        df,
        [artifact, int8_artifact],
        load_pricing(packaged_config("pricing.yaml")),
        label_column="label",
        repeats=1,
        mlflow_spark_udf=True,
        keep=["row_id"],
    )
    by_name = {v["name"]: v for v in report["variants"]}
    for model in ("onnx-fp32", "digits-small-int8"):
        ours, theirs = by_name[f"{model}/leanscore"], by_name[f"{model}/spark_udf"]
        assert theirs["rows_out"] == ours["rows_out"] == 400
        assert report["leanscore_vs_spark_udf"][model] == round(
            ours["rows_per_s"] / theirs["rows_per_s"], 3
        )


@pytest.mark.slow
def test_compress_notebook_registers_with_its_widgets(registry, tmp_path):
    from test_notebooks import run_notebook

    out = tmp_path / "artifact"
    args = ["--out", str(out), "--epochs", "1", "--recipe", "recipes/digits-mlp-fp32.yaml"]
    proc = run_notebook(
        "compress_model.py",
        [*args, "--register", "digits-notebook", "--alias", "champion"],
        tmp_path,
        MLFLOW_TRACKING_URI=registry,
        MLFLOW_REGISTRY_URI=registry,
        MLFLOW_EXPERIMENT_NAME="leanscore-tests",
    )
    assert "registered models:/digits-notebook/1" in proc.stdout, proc.stdout + proc.stderr
    assert load_artifact("models:/digits-notebook@champion").sha256 == Artifact.load(out).sha256
