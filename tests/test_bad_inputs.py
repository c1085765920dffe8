"""Bad-input matrix: every case through the real CLI, checked for a non-zero exit, a
message that names the problem (and where possible the fix), and no output written: the
nightly table keeps the good run's Delta version and content for the same run date.

A module fixture writes one good run first; each bad run then targets the same table and date.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import held_out_frame
from pyspark.sql import functions as F
from reliability_support import (
    LEANSCORE,
    ROOT,
    checksum,
    copy_artifact,
    delta_version,
    run_cli,
    write_yaml,
)

DATE = "2026-03-01"
ROWS = 60


@pytest.fixture(scope="module")
def good(spark, digits, artifact, columns_artifact, tmp_path_factory):
    """A good input table, private artifact copies and one good run of the nightly job."""
    root = tmp_path_factory.mktemp("bad-inputs")
    src, out = str(root / "input"), str(root / "predictions")
    held_out_frame(spark, digits, n=ROWS).repartition(2).write.format("delta").save(src)
    art = copy_artifact(artifact, root / "artifact")
    base = {
        "artifact": str(art),
        "input": {"path": src, "format": "delta"},
        "output": {"path": out, "format": "delta"},
        "key_columns": ["row_id"],
        "passthrough_columns": ["label"],
        "bad_rows": "fail",
        "batch_size": 16,
        "arrow_batch_rows": 32,
    }
    res = run_cli("score", "--config", write_yaml(root / "good.yaml", base), "--run-date", DATE)
    assert res.exit_code == 0, res.output
    return {
        "root": root,
        "src": src,
        "out": out,
        "artifact": art,
        "columns_artifact": columns_artifact,
        "base": base,
        "version": delta_version(spark, out),
        "checksum": checksum(spark, out, DATE),
    }


class Case:
    """One bad run against the good table; checks the exit, the message and the table."""

    def __init__(self, spark, good, tmp_path):
        self.spark, self.good, self.tmp = spark, good, tmp_path

    def config(self, **changes) -> dict:
        data = json.loads(json.dumps(self.good["base"]))
        for dotted, value in changes.items():
            node, keys = data, dotted.split("__")
            for k in keys[:-1]:
                node = node[k]
            if value is _DROP:
                node.pop(keys[-1])
            else:
                node[keys[-1]] = value
        return data

    def table(self, df) -> str:
        path = str(self.tmp / f"input-{len(list(self.tmp.glob('input-*')))}")
        df.write.format("delta").save(path)
        return path

    def score(self, data: dict | str, *extra: str, run_date: str = DATE):
        path = self.tmp / "bad.yaml"
        if isinstance(data, str):
            path.write_text(data)
        else:
            write_yaml(path, data)
        before = delta_version(self.spark, self.good["out"])
        res = run_cli("score", "--config", path, "--run-date", run_date, *extra)
        try:
            self.assert_failed(res)
            assert delta_version(self.spark, self.good["out"]) == before, (
                f"the bad run wrote output: {res.output}"
            )
            assert checksum(self.spark, self.good["out"], DATE) == self.good["checksum"]
        finally:
            self.restore(before)
        return res

    def restore(self, version) -> None:
        """Put the good run back if a (defective) bad run replaced it, so one defect does not
        fail every later case."""
        from delta.tables import DeltaTable

        if delta_version(self.spark, self.good["out"]) != version:
            DeltaTable.forPath(self.spark, self.good["out"]).restoreToVersion(self.good["version"])

    @staticmethod
    def assert_failed(res) -> None:
        assert res.exit_code == 1, f"exit {res.exit_code}, want 1:\n{res.output}"
        lines = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
        assert len(lines) == 1, f"want one 'error: ...' line on stderr:\n{res.stderr[-3000:]}"


_DROP = object()


@pytest.fixture
def case(spark, good, tmp_path):
    return Case(spark, good, tmp_path)


def _error(res) -> str:
    return next(line for line in res.stderr.splitlines() if line.startswith("error: "))


def _rows(spark, digits, bad_rows, schema="row_id long, label int, features array<float>"):
    good = held_out_frame(spark, digits, n=20)
    return good.unionByName(spark.createDataFrame(bad_rows, schema))


# ---- input data ---------------------------------------------------------------------------


def test_missing_feature_column(case, spark, digits):
    src = case.table(held_out_frame(spark, digits, n=10))
    res = case.score(case.config(artifact=str(case.good["columns_artifact"].path), input__path=src))
    assert "feature column 'pixel_0' is missing from the input" in _error(res)


def test_wrong_dtype_strings(case, spark, digits):
    df = held_out_frame(spark, digits, n=10).withColumn(
        "features", F.col("features").cast("array<string>")
    )
    res = case.score(case.config(input__path=case.table(df)))
    err = _error(res)
    assert "feature column 'features' has type array<string>" in err
    assert "cast it before scoring" in err


def test_wrong_length_array_names_the_row(case, spark, digits):
    src = case.table(_rows(spark, digits, [(5000, 1, [0.5] * 63)]))
    err = _error(case.score(case.config(input__path=src)))
    assert "row_id=5000" in err and "has 63 elements, the model expects 64" in err


def test_null_features_name_the_row(case, spark, digits):
    src = case.table(_rows(spark, digits, [(5001, 1, None)]))
    err = _error(case.score(case.config(input__path=src)))
    assert "row_id=5001" in err and "is null" in err


def test_null_element_inside_the_array(case, spark, digits):
    src = case.table(_rows(spark, digits, [(5002, 1, [None] + [0.0] * 63)]))
    err = _error(case.score(case.config(input__path=src)))
    assert "row_id=5002" in err and "null" in err


def test_nan_names_the_row(case, spark, digits):
    src = case.table(_rows(spark, digits, [(5003, 1, [0.0] * 10 + [float("nan")] + [0.0] * 53)]))
    err = _error(case.score(case.config(input__path=src)))
    assert "row_id=5003" in err and "element 10 is NaN" in err


def test_infinity_names_the_row(case, spark, digits):
    src = case.table(_rows(spark, digits, [(5004, 1, [0.0] * 63 + [float("-inf")])]))
    err = _error(case.score(case.config(input__path=src)))
    assert "row_id=5004" in err and "element 63 is -inf" in err


def test_null_key_column_value_is_refused(case, spark, digits):
    """A null key cannot be written and then found again: refuse it, naming the key column."""
    df = held_out_frame(spark, digits, n=10).withColumn(
        "row_id", F.when(F.col("row_id") == 3, F.lit(None)).otherwise(F.col("row_id"))
    )
    err = _error(case.score(case.config(input__path=case.table(df))))
    assert "row_id" in err and "null" in err


def test_empty_input_table_fails_loudly(case, spark, digits):
    """An empty nightly input almost always means an upstream failure: stop, do not write an
    empty partition."""
    src = case.table(held_out_frame(spark, digits, n=10).limit(0))
    err = _error(case.score(case.config(input__path=src)))
    assert "no rows" in err or "empty" in err, err


def test_input_path_does_not_exist(case):
    missing = str(case.tmp / "no-such-table")
    err = _error(case.score(case.config(input__path=missing)))
    assert f"input {missing} is not a Delta table" in err and "check the path" in err


def test_input_table_does_not_exist(case):
    cfg = case.config()
    cfg["input"] = {"table": "nightly_features_that_do_not_exist"}
    err = _error(case.score(cfg))
    assert "nightly_features_that_do_not_exist" in err
    assert "not found" in err.lower() or "cannot be found" in err.lower()


def test_missing_key_column(case):
    err = _error(case.score(case.config(key_columns=["customer_id"])))
    assert "'customer_id'" in err and "key_columns" in err


def test_filter_that_is_not_valid_sql(case):
    err = _error(case.score(case.config(input__filter="label >>> 3 AND")))
    assert "input.filter" in err, f"the message should name input.filter: {err}"


def test_partition_on_a_column_the_input_lacks(case):
    err = _error(case.score(case.config(input__partition={"day": "2026-01-01"})))
    assert "input.partition names column 'day'" in err


# ---- artifact -------------------------------------------------------------------------------


def _artifact_copy(case, name="art") -> Path:
    return Path(shutil.copytree(case.good["artifact"], case.tmp / name))


def test_truncated_model_onnx(case):
    art = _artifact_copy(case)
    model = art / "model.onnx"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    err = _error(case.score(case.config(artifact=str(art))))
    assert "sha256 is" in err and "the manifest says" in err and "leanscore compress" in err


def test_modified_model_sha256_mismatch(case):
    art = _artifact_copy(case)
    model = art / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-100] ^= 0xFF  # one flipped byte inside a weight
    model.write_bytes(bytes(data))
    err = _error(case.score(case.config(artifact=str(art))))
    assert "model.onnx: sha256 is" in err and "modified or truncated" in err


def test_corrupt_model_with_a_matching_manifest(case):
    """Garbage bytes whose sha256 the manifest records: the hash passes, ONNX Runtime cannot
    load it. The message must say the model is not a valid ONNX model, not a Spark trace."""
    import hashlib

    art = _artifact_copy(case)
    junk = b"this is not an onnx protobuf" * 50
    (art / "model.onnx").write_bytes(junk)
    manifest = json.loads((art / "manifest.json").read_text())
    manifest.update(sha256=hashlib.sha256(junk).hexdigest(), model_bytes=len(junk))
    (art / "manifest.json").write_text(json.dumps(manifest))
    err = _error(case.score(case.config(artifact=str(art))))
    assert "model.onnx" in err and "ONNX" in err, err


def test_missing_manifest(case):
    art = _artifact_copy(case)
    (art / "manifest.json").unlink()
    err = _error(case.score(case.config(artifact=str(art))))
    assert "manifest.json is missing; the artifact is incomplete" in err


def test_manifest_that_is_not_json(case):
    art = _artifact_copy(case)
    (art / "manifest.json").write_text('{"name": "x", ')
    err = _error(case.score(case.config(artifact=str(art))))
    assert "manifest.json is not valid JSON" in err


def test_manifest_missing_fields(case):
    art = _artifact_copy(case)
    manifest = json.loads((art / "manifest.json").read_text())
    del manifest["sha256"], manifest["features"]
    (art / "manifest.json").write_text(json.dumps(manifest))
    res = case.score(case.config(artifact=str(art)))
    assert "is not a valid manifest" in _error(res)
    assert "sha256" in res.stderr and "features" in res.stderr


def test_model_inputs_do_not_match_the_manifest_features(case):
    """A manifest claiming 32 features for a model whose input is 64 wide: refuse the artifact
    up front, naming both sizes, rather than failing (or flagging) every row."""
    art = _artifact_copy(case)
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["features"]["size"] = 32
    (art / "manifest.json").write_text(json.dumps(manifest))
    err = _error(case.score(case.config(artifact=str(art))))
    assert "32" in err and "64" in err and "input" in err, err
    assert "row_id=" not in err, f"a manifest/model mismatch is not a bad row: {err}"


def test_artifact_path_is_a_file(case):
    art = case.tmp / "model.onnx"
    art.write_bytes(b"x")
    err = _error(case.score(case.config(artifact=str(art))))
    assert f"artifact directory {art} does not exist" in err


def test_relative_artifact_path_is_resolved_in_the_message(case, monkeypatch):
    monkeypatch.chdir(case.tmp)
    err = _error(case.score(case.config(artifact="artifacts/nope")))
    assert f"artifact directory {case.tmp / 'artifacts' / 'nope'} does not exist" in err


# ---- config and command line ------------------------------------------------------------------


def test_invalid_yaml(case):
    err = _error(case.score("artifact: [unclosed\ninput: {path: x\n"))
    assert "is not valid YAML" in err


def test_python_object_yaml_tag_is_refused(case):
    marker = case.tmp / "pwned"
    text = f"artifact: !!python/object/apply:os.system ['touch {marker}']\n"
    err = _error(case.score(text))
    assert "is not valid YAML" in err
    assert not marker.exists(), "a YAML tag ran code"


def test_unknown_config_key(case):
    cfg = case.config()
    cfg["batchsize"] = 10
    err = _error(case.score(cfg))
    assert "batchsize: Extra inputs are not permitted" in err


def test_unknown_nested_key(case):
    err = _error(case.score(case.config(output__fromat="delta")))
    assert "output.fromat" in err


def test_non_positive_batch_size(case):
    err = _error(case.score(case.config(), "--set", "batch_size=0"))
    assert "batch_size: Input should be greater than 0 (got 0)" in err


def test_unknown_bad_row_policy(case):
    err = _error(case.score(case.config(bad_rows="skip")))
    assert "bad_rows" in err and "'fail'" in err and "'flag'" in err


def test_malformed_run_date(case):
    err = _error(case.score(case.config(), run_date="2026-13-45"))
    assert "run date '2026-13-45' is not a date in YYYY-MM-DD form" in err


def test_override_without_equals(case):
    err = _error(case.score(case.config(), "--set", "batch_size"))
    assert "must look like key=value" in err


def test_both_path_and_table_for_the_output(case):
    err = _error(case.score(case.config(output__table="somewhere")))
    assert "output" in err and "give exactly one of 'path' or 'table'" in err


def test_config_file_does_not_exist(case):
    before = delta_version(case.spark, case.good["out"])
    res = run_cli("score", "--config", case.tmp / "nope.yaml", "--run-date", DATE)
    case.assert_failed(res)
    assert f"config file {case.tmp / 'nope.yaml'} does not exist" in _error(res)
    assert delta_version(case.spark, case.good["out"]) == before


def test_output_location_cannot_be_written(case, spark):
    """The output path lies under a regular file: no directory can be made there."""
    blocker = case.tmp / "a-file"
    blocker.write_text("not a directory")
    out = str(blocker / "predictions")
    err = _error(case.score(case.config(output__path=out)))
    assert str(blocker) in err or "predictions" in err, err
    assert not os.path.isdir(out)


def test_output_that_is_parquet_not_delta(case, spark, digits):
    """An existing Parquet directory named as a Delta output: refuse, do not mix formats."""
    out = str(case.tmp / "parquet-out")
    held_out_frame(spark, digits, n=5).write.parquet(out)
    before = sorted(os.listdir(out))
    err = _error(case.score(case.config(output__path=out)))
    assert out in err or "Delta" in err or "delta" in err, err
    assert sorted(os.listdir(out)) == before


# ---- other commands ---------------------------------------------------------------------------


def test_pricing_file_with_missing_fields(case, spark):
    pricing = write_yaml(case.tmp / "pricing.yaml", {"instance": {"name": "m5.xlarge"}})
    cfg = write_yaml(
        case.tmp / "bench.yaml",
        {
            "input": {"path": case.good["src"], "format": "delta"},
            "artifacts": [str(case.good["artifact"])],
            "pricing": str(pricing),
            "repeats": 1,
        },
    )
    out = case.tmp / "bench-out"
    res = run_cli("bench", "--config", cfg, "--out", out)
    case.assert_failed(res)
    err = _error(res)
    for field in ("instance.usd_per_hour", "instance.cores", "workers", "nightly_rows"):
        assert field in err, f"{field} not named: {err}"
    assert not out.exists()


def test_unknown_recipe_step(case):
    cfg = write_yaml(
        case.tmp / "compress.yaml",
        {
            "recipe": {"name": "r", "max_accuracy_drop": 1.0, "steps": [{"step": "shrink"}]},
            "model": {"kind": "builtin-digits-mlp", "epochs": 1},
        },
    )
    out = case.tmp / "artifact-out"
    res = run_cli("compress", "--config", cfg, "--out", out)
    case.assert_failed(res)
    err = _error(res)
    assert "'shrink'" in err and "does not match any of the expected tags" in err
    assert "'quantize'" in err  # the valid steps are listed
    assert not out.exists()


# ---- the installed console script, as a scheduler runs it ----------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--run-date", "28/11/2026"], "run date '28/11/2026' is not a date in YYYY-MM-DD form"),
        (["--run-date", "2026-11-28", "--set", "batch_size=-5"], "batch_size: Input should be"),
    ],
)
def test_console_script_exits_non_zero(good, tmp_path, args, message):
    config = write_yaml(tmp_path / "c.yaml", good["base"])
    proc = subprocess.run(
        [str(LEANSCORE), "score", "--config", str(config), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_good_run_was_recorded(good, spark):
    """The baseline the bad runs are checked against is itself right."""
    assert good["checksum"]["rows"] == good["checksum"]["keys"] == ROWS
    table = spark.read.format("delta").load(good["out"]).toPandas()
    assert sorted(table["row_id"]) == list(range(ROWS))
    assert np.isfinite(table["probability"]).all()
