"""Scoring families: the registry picks the family a manifest names, refuses an unknown one by
name, and the kernel reads the ONNX output the manifest names as the result."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from leanscore.compression.artifact import Artifact, ArtifactError, write_artifact
from leanscore.udfs.distribution import ModelSource
from leanscore.udfs.families import FAMILY_MODULES, family_for, family_name
from leanscore.udfs.kernel import Scorer, output_fields
from leanscore.udfs.session_cache import SessionConfig
from onnx import TensorProto, helper


def _two_output_model() -> bytes:
    """x[N,3] -> ``label`` (int64 argmax) first, ``probabilities`` (softmax) second: the layout
    of a scikit-learn classifier converted by skl2onnx."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])
    label = helper.make_tensor_value_info("label", TensorProto.INT64, [None])
    probs = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 3])
    graph = helper.make_graph(
        [
            helper.make_node("Softmax", ["x"], ["probabilities"], axis=1),
            helper.make_node("ArgMax", ["x"], ["label"], axis=1, keepdims=0),
        ],
        "two_outputs",
        [x],
        [label, probs],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model.SerializeToString()


def _manifest_fields(**extra) -> dict:
    return {
        "name": "two-outputs",
        "inputs": [{"name": "x", "dtype": "float32", "shape": [None, 3]}],
        "outputs": [
            {"name": "label", "dtype": "int64", "shape": [None]},
            {"name": "probabilities", "dtype": "float32", "shape": [None, 3]},
        ],
        "features": {"columns": ["a", "b", "c"], "size": 3},
        "task": "classification",
        **extra,
    }


def test_result_output_names_the_onnx_output_the_kernel_reads(tmp_path):
    artifact = write_artifact(
        tmp_path / "m", _two_output_model(), _manifest_fields(result_output="probabilities")
    )
    manifest = Artifact.load(artifact.path).manifest
    assert family_name(manifest) == "tabular"
    source = ModelSource(
        manifest.name, manifest.sha256, "closure", data=artifact.read_model_bytes()
    )
    scorer = Scorer.build(
        manifest, source, SessionConfig(), batch_size=2, bad_rows="flag", probabilities=True
    )
    rows = np.array([[0, 1, 5], [4, 0, 0], [1, 3, 2]], dtype=np.float32)
    session, name = scorer.session()
    batch = scorer.family.from_arrow([pa.array(rows[:, j]) for j in range(3)])
    scored = scorer.score(session, name, batch, None)
    expected = np.exp(rows) / np.exp(rows).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(scored.out, expected, rtol=1e-6)
    columns = scorer.columns(scored)
    assert columns["label"].tolist() == [2, 0, 1]
    np.testing.assert_allclose(columns["probability"], expected.max(axis=1), rtol=1e-6)
    # the pandas path builds the same batch
    same = scorer.family.from_pandas([pd.Series(rows[:, j]) for j in range(3)])
    np.testing.assert_array_equal(same.matrix, batch.matrix)
    assert [n for n, _ in output_fields(manifest, probabilities=True)] == [
        "label",
        "probability",
        "probabilities",
        "error",
    ]


def test_without_result_output_the_first_output_is_read(tmp_path):
    """The control: the same model without ``result_output`` returns its first output (the
    int64 label), which is why a converted classifier must name its probabilities output."""
    artifact = write_artifact(tmp_path / "m", _two_output_model(), _manifest_fields())
    manifest = artifact.manifest
    source = ModelSource(
        manifest.name, manifest.sha256, "closure", data=artifact.read_model_bytes()
    )
    scorer = Scorer.build(
        manifest, source, SessionConfig(), batch_size=8, bad_rows="fail", probabilities=False
    )
    session, name = scorer.session()
    out = scorer.run(session, name, np.array([[0, 1, 5]], dtype=np.float32))
    assert out.dtype == np.int64 and out.tolist() == [2]


def test_result_output_must_be_an_output_of_the_model(tmp_path):
    with pytest.raises(Exception, match="result_output is 'scores' but the model's outputs"):
        write_artifact(
            tmp_path / "m", _two_output_model(), _manifest_fields(result_output="scores")
        )


def test_unknown_family_is_refused_by_name(tmp_path):
    artifact = write_artifact(tmp_path / "m", _two_output_model(), _manifest_fields(family="audio"))
    with pytest.raises(ValueError, match="family 'audio'.*families: "):
        family_for(artifact.manifest)
    assert "tabular" in FAMILY_MODULES
    with pytest.raises((ArtifactError, ValueError), match="family"):
        write_artifact(tmp_path / "n", _two_output_model(), _manifest_fields(family="Not Valid"))


def test_each_family_takes_its_own_options_and_refuses_the_others(tmp_path):
    """Rows per call default to the family's own (4,096 numeric rows); a text option on a model
    that reads no text is refused on the driver, naming the option."""
    artifact = write_artifact(tmp_path / "m", _two_output_model(), _manifest_fields())
    manifest = artifact.manifest
    source = ModelSource(
        manifest.name, manifest.sha256, "closure", data=artifact.read_model_bytes()
    )
    assert Scorer.build(manifest, source, SessionConfig()).batch_size == 4096
    assert Scorer.build(manifest, source, SessionConfig(), batch_size=64).batch_size == 64
    assert Scorer.build(manifest, source, SessionConfig()).config.disabled_optimizers is None
    with pytest.raises(ValueError, match="max_length is a text option, but model 'two-outputs'"):
        Scorer.build(manifest, source, SessionConfig(), max_length=32)
    with pytest.raises(ValueError, match="long_text is a text option"):
        Scorer.build(manifest, source, SessionConfig(), long_text="bad")
