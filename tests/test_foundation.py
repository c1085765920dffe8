"""The foundation: Delta on local Spark, the UDF against raw ONNX Runtime, artifact integrity."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest
from conftest import held_out_frame
from leanscore.compression.artifact import Artifact, ArtifactError, ModelIntegrityError
from leanscore.udfs import model_udf, score_dataframe
from leanscore.udfs.distribution import ModelSource
from pyspark.testing import assertDataFrameEqual


def test_delta_round_trip(spark, tmp_path):
    path = str(tmp_path / "t")
    df = spark.createDataFrame([(1, "a", 0.5), (2, "b", 1.5)], "id long, name string, x double")
    df.write.format("delta").save(path)
    df.where("id = 2").write.format("delta").mode("append").save(path)

    back = spark.read.format("delta").load(path)
    expected = spark.createDataFrame(
        [(1, "a", 0.5), (2, "b", 1.5), (2, "b", 1.5)], "id long, name string, x double"
    )
    assertDataFrameEqual(back, expected)
    from delta.tables import DeltaTable

    assert DeltaTable.forPath(spark, path).history().count() == 2


def test_udf_equals_direct_onnx_runtime(spark, digits, artifact):
    df = held_out_frame(spark, digits, n=300)
    scored = score_dataframe(df, artifact, key_columns=["row_id"]).orderBy("row_id").toPandas()

    session = ort.InferenceSession(artifact.read_model_bytes())
    _, held_out = digits
    expected = session.run(None, {"features": held_out.features[:300]})[0]
    np.testing.assert_array_equal(scored["prediction"].to_numpy(), expected.argmax(1))
    np.testing.assert_allclose(scored["probability"].to_numpy(), expected.max(1), rtol=1e-6)
    assert scored["prediction_error"].isna().all()
    assert list(scored.columns) == [
        "row_id",
        "label",
        "features",
        "prediction",
        "probability",
        "prediction_error",
    ]


def test_udf_as_column_expression_with_probability_vector(spark, digits, artifact):
    df = held_out_frame(spark, digits, n=50)
    predict = model_udf(artifact, probabilities=True)
    rows = df.withColumn("p", predict("features")).orderBy("row_id").collect()
    _, held_out = digits
    expected = ort.InferenceSession(artifact.read_model_bytes()).run(
        None, {"features": held_out.features[:50]}
    )[0]
    got = np.array([r["p"]["probabilities"] for r in rows], dtype=np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert [r["p"]["label"] for r in rows] == list(expected.argmax(1))


def test_udf_rejects_wrong_number_of_columns(spark, artifact):
    predict = model_udf(artifact)
    with pytest.raises(ValueError, match=r"expected 1 input columns \(features\), but received 2"):
        predict("a", "b")


def test_modified_model_fails_its_sha256(artifact, tmp_path):
    copy = tmp_path / "tampered"
    shutil.copytree(artifact.path, copy)
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))

    with pytest.raises(ModelIntegrityError, match="sha256 is .* but the manifest says"):
        Artifact.load(copy)


def test_executor_side_check_refuses_other_bytes(artifact):
    source = ModelSource("m", artifact.sha256, "closure", data=b"not the model")
    with pytest.raises(ModelIntegrityError, match="model 'm' \\(closure\\)"):
        source.load()


def test_artifact_manifest_records_the_contract(artifact):
    manifest = json.loads((artifact.path / "manifest.json").read_text())
    assert manifest["sha256"] == artifact.sha256
    assert manifest["inputs"] == [{"name": "features", "dtype": "float32", "shape": ["batch", 64]}]
    assert manifest["outputs"][0]["shape"] == ["batch", 10]
    assert manifest["task"] == "classification"
    assert manifest["recipe"]["steps"] == [{"step": "export", "opset": 20, "parity_atol": 0.0001}]
    for key in ("baseline", "steps", "final"):
        assert key in manifest["metrics"]
    assert manifest["metrics"]["final"]["accuracy"] > 0.85
    assert set(manifest["versions"]) >= {"torch", "onnx", "onnxruntime"}
    assert Artifact.load(artifact.path).manifest.model_dump() == artifact.manifest.model_dump()


def test_missing_artifact_names_the_path(tmp_path):
    with pytest.raises(
        ArtifactError, match=f"artifact directory {tmp_path / 'nope'} does not exist"
    ):
        Artifact.load(tmp_path / "nope")
