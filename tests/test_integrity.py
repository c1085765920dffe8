"""Integrity and safety: executors verify the model's sha256 before use, models are
never unpickled, configs load with safe YAML, and the job's logs hold no secrets."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest
import torch
from conftest import held_out_frame, make_artifact
from leanscore.compression.artifact import Artifact
from leanscore.udfs.distribution import ModelSource
from reliability_support import ROOT, run_cli, write_yaml

SOURCE_DIRS = ("compression", "udfs", "jobs")


@pytest.fixture(scope="module")
def fresh_artifact(tmp_path_factory):
    """An artifact no Python worker has cached yet (its own weights, so its own sha256)."""
    from leanscore.compression.models import MLP

    torch.manual_seed(1234)
    return make_artifact(
        MLP(64, [16], 10), tmp_path_factory.mktemp("fresh") / "art", name="integrity-fresh"
    )


def test_executor_refuses_a_model_changed_after_the_driver_checked_it(
    spark, digits, fresh_artifact
):
    """The driver loads and verifies the artifact; then model.onnx is replaced on disk. With
    path distribution the executors read the file themselves and must refuse it."""
    from leanscore.udfs import score_dataframe

    artifact = Artifact.load(fresh_artifact.path)  # verified on the driver
    model = artifact.model_path
    original = model.read_bytes()
    try:
        tampered = bytearray(original)
        tampered[-64] ^= 0x01
        model.write_bytes(bytes(tampered))
        df = held_out_frame(spark, digits, n=16)
        scored = score_dataframe(df, artifact, path_threshold_bytes=1)
        with pytest.raises(Exception) as info:
            scored.collect()
    finally:
        model.write_bytes(original)
    text = str(info.value)
    assert "ModelIntegrityError" in text
    assert "model 'integrity-fresh' (path): sha256 is" in text
    assert f"but the manifest says {artifact.sha256}" in text


@pytest.mark.parametrize("how", ["broadcast", "closure"])
def test_model_source_checks_bytes_on_the_executor(spark, fresh_artifact, how):
    good = fresh_artifact.model_path.read_bytes()
    bad = good[:-10]
    source = (
        ModelSource(
            "m", fresh_artifact.sha256, "broadcast", broadcast=spark.sparkContext.broadcast(bad)
        )
        if how == "broadcast"
        else ModelSource("m", fresh_artifact.sha256, "closure", data=bad)
    )

    def load_on_executor(batches):
        import pandas as pd

        for batch in batches:
            source.load()
            yield pd.DataFrame({"n": [len(batch)]})

    with pytest.raises(Exception) as info:
        spark.range(4, numPartitions=1).mapInPandas(load_on_executor, "n long").collect()
    assert f"model 'm' ({how}): sha256 is" in str(info.value)

    good_source = ModelSource("m", fresh_artifact.sha256, "closure", data=good)

    def load_good(batches):
        import pandas as pd

        for _batch in batches:
            yield pd.DataFrame({"n": [len(good_source.load())]})

    got = spark.range(4, numPartitions=1).mapInPandas(load_good, "n long").collect()
    assert got[0]["n"] == len(good)


# ---- never unpickle ------------------------------------------------------------------------------


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = (
                f"{getattr(func.value, 'id', '?')}.{func.attr}"
                if isinstance(func, ast.Attribute)
                else getattr(func, "id", "?")
            )
            yield name, node


def _keyword(node, name):
    for kw in node.keywords:
        if kw.arg == name:
            return kw.value
    return None


def test_no_code_path_unpickles_a_model_or_loads_unsafe_yaml():
    problems = []
    for folder in SOURCE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            rel = path.relative_to(ROOT)
            for name, node in _calls(tree):
                if name == "torch.load":
                    flag = _keyword(node, "weights_only")
                    if not (isinstance(flag, ast.Constant) and flag.value is True):
                        problems.append(f"{rel}:{node.lineno} torch.load without weights_only=True")
                elif name in {"pickle.load", "pickle.loads", "cloudpickle.loads", "joblib.load"}:
                    problems.append(f"{rel}:{node.lineno} {name}")
                elif name in {"yaml.load", "yaml.unsafe_load", "yaml.full_load"}:
                    problems.append(f"{rel}:{node.lineno} {name} (use yaml.safe_load)")
                elif name in {"np.load", "numpy.load"}:
                    flag = _keyword(node, "allow_pickle")
                    if isinstance(flag, ast.Constant) and flag.value is True:
                        problems.append(f"{rel}:{node.lineno} np.load(allow_pickle=True)")
    assert not problems, "unsafe deserialisation:\n" + "\n".join(problems)


class _Payload:
    """Unpickling this runs code: exactly what a weights-only load must refuse."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_compress_refuses_a_checkpoint_that_holds_code(tmp_path):
    marker = tmp_path / "code-ran"
    checkpoint = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(2), "evil": _Payload(str(marker))}, checkpoint)
    config = write_yaml(
        tmp_path / "compress.yaml",
        {
            "recipe": {"name": "r", "max_accuracy_drop": 1.0, "steps": [{"step": "export"}]},
            "model": {
                "kind": "torch",
                "factory": "leanscore.compression.models:MLP",
                "kwargs": {"in_features": 64, "hidden": [8], "num_classes": 10},
                "checkpoint": str(checkpoint),
                "input_shape": [64],
            },
        },
    )
    out = tmp_path / "artifact"
    res = run_cli("compress", "--config", config, "--out", out)
    assert res.exit_code == 1, res.output
    assert "is not a plain state_dict loadable with weights_only=True" in res.stderr
    assert not marker.exists(), "unpickling the checkpoint ran code"
    assert not out.exists()


# ---- safe YAML everywhere a config is read -------------------------------------------------------


@pytest.mark.parametrize("command", ["score", "compress", "bench"])
def test_every_command_refuses_python_yaml_tags(tmp_path, command):
    marker = tmp_path / "code-ran"
    config = tmp_path / "c.yaml"
    config.write_text(
        "x: !!python/object/apply:pathlib.Path.touch "
        f"[!!python/object/apply:pathlib.Path ['{marker}']]\n"
    )
    args = ["--run-date", "2026-01-01"] if command == "score" else ["--out", str(tmp_path / "o")]
    res = run_cli(command, "--config", config, *args)
    assert res.exit_code == 1, res.output
    assert "is not valid YAML" in res.stderr
    assert not marker.exists()


# ---- nothing secret in the logs ------------------------------------------------------------------

SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY",
    "DATABRICKS_TOKEN": "dapi0123456789abcdef0123456789abcdef",
}


def test_job_logs_hold_no_secrets(spark, digits, artifact, tmp_path, monkeypatch, caplog):
    """Secrets in the environment (cloud keys, a Databricks token) reach neither the log lines
    (the resolved config included), the console, nor the summary JSON."""
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("LEANSCORE_LOG_LEVEL", "DEBUG")  # everything the job can log
    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    held_out_frame(spark, digits, n=20).write.format("delta").save(src)
    summary = tmp_path / "summary.json"
    config = write_yaml(
        tmp_path / "nightly.yaml",
        {
            "artifact": str(artifact.path),
            "input": {"path": src, "format": "delta"},
            "output": {"path": out, "format": "delta"},
            "key_columns": ["row_id"],
            "summary_path": str(summary),
        },
    )
    with caplog.at_level(logging.DEBUG):
        res = run_cli("score", "--config", config, "--run-date", "2026-01-01")
    assert res.exit_code == 0, res.output
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "resolved config:" in logged  # the check below looked at the real log
    everything = logged + res.output + res.stderr + summary.read_text()
    for name, value in SECRETS.items():
        assert value not in everything, f"{name} leaked into the job's output"
