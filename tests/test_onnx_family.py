"""An ONNX model as given: a scikit-learn gradient-boosting classifier on the real breast-cancer
data, converted with skl2onnx, brought with a declared mapping of its columns and outputs,
truncated to the fewest trees within its accuracy budget by ``leanscore compress``, and scored by
``leanscore score`` (Delta in, Delta out) with label and probability columns.

The proof that truncation is right: the cut graph's probabilities equal scikit-learn's
``staged_predict_proba`` at the same number of trees, to float tolerance, on every row.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from leanscore.compression import trees
from leanscore.compression.artifact import Artifact, write_artifact
from leanscore.compression.build import tensor_specs
from leanscore.compression.data import LabelledData
from leanscore.compression.evaluate import single_thread_session
from leanscore.compression.recipe import (
    AccuracyGateError,
    Recipe,
    RecipeError,
    measure_baseline,
    run_recipe,
)
from leanscore.jobs.cli import app
from typer.testing import CliRunner

STAGES = 150
BUDGET_POINTS = 1.0


def _column_names(raw: list[str]) -> list[str]:
    return [name.replace(" ", "_") for name in raw]


@pytest.fixture(scope="module")
def cancer():
    """The real breast-cancer rows split once (stratified), a 150-stage booster of depth-2
    trees fitted on the training rows, and its skl2onnx conversion (no ZipMap)."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.model_selection import train_test_split

    data = load_breast_cancer()
    x = data.data.astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, data.target, test_size=0.4, random_state=0, stratify=data.target
    )
    model = GradientBoostingClassifier(
        n_estimators=STAGES, max_depth=2, learning_rate=0.1, random_state=0
    ).fit(x_train, y_train)
    onnx_bytes = to_onnx(model, x_train[:1], options={"zipmap": False}).SerializeToString()
    return {
        "model": model,
        "onnx": onnx_bytes,
        "columns": _column_names(list(data.feature_names)),
        "x_test": x_test,
        "y_test": y_test.astype(np.int64),
    }


def _ort(onnx_bytes: bytes, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    label, probabilities = single_thread_session(onnx_bytes).run(
        ["label", "probabilities"], {"X": x}
    )
    return label, probabilities


def test_truncated_graph_equals_staged_predict_proba(cancer):
    model, x = cancer["model"], cancer["x_test"]
    staged = list(model.staged_predict_proba(x))
    staged_labels = list(model.staged_predict(x))
    described = trees.describe(cancer["onnx"])
    assert (described.trees, described.trees_per_stage, described.stages) == (STAGES, 1, STAGES)
    sizes = []
    for k in (1, 2, 17, 60, STAGES):
        cut = trees.truncate(cancer["onnx"], k)
        assert trees.describe(cut).trees == k
        label, probabilities = _ort(cut, x)
        np.testing.assert_allclose(probabilities, staged[k - 1], atol=2e-6)
        np.testing.assert_array_equal(label, staged_labels[k - 1])
        sizes.append(len(cut))
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1] / 20
    with pytest.raises(trees.TreeEnsembleError, match=f"keep 1 to {STAGES}"):
        trees.truncate(cancer["onnx"], STAGES + 1)


def test_multiclass_booster_is_cut_at_whole_stages():
    """A K-class booster grows K trees per stage (tree i*K + c feeds class c): k stages are
    k*K trees, and the cut equals staged_predict_proba at k."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_wine
    from sklearn.ensemble import GradientBoostingClassifier

    x, y = load_wine(return_X_y=True)
    x = x.astype(np.float32)
    model = GradientBoostingClassifier(n_estimators=12, max_depth=2, random_state=0).fit(x, y)
    onnx_bytes = to_onnx(model, x[:1], options={"zipmap": False}).SerializeToString()
    assert trees.describe(onnx_bytes).trees_per_stage == 3
    staged = list(model.staged_predict_proba(x))
    cut = trees.truncate(onnx_bytes, 5)
    assert (trees.describe(cut).trees, trees.describe(cut).stages) == (15, 5)
    np.testing.assert_allclose(_ort(cut, x)[1], staged[4], atol=2e-6)


def _recipe(**fields) -> Recipe:
    return Recipe.model_validate({"name": "gbm", **fields})


def test_truncation_search_keeps_the_fewest_stages_within_budget_and_the_gate_refuses_more(
    cancer,
):
    evaluation = LabelledData(cancer["x_test"], cancer["y_test"], {"rows": "held out"})
    baseline = measure_baseline(  # measured once, shared by both recipes (as autotune does)
        cancer["onnx"], example_input=None, evaluation=evaluation, result_output="probabilities"
    )
    result = run_recipe(
        _recipe(max_accuracy_drop=BUDGET_POINTS, steps=[{"step": "truncate_trees"}]),
        cancer["onnx"],
        evaluation=evaluation,
        result_output="probabilities",
        baseline=baseline,
    )
    step = result.metrics["steps"][0]
    base = result.metrics["baseline"]["accuracy"]
    k = step["stages_after"]
    assert 1 <= k < STAGES and step["trees_after"] == k < step["trees_before"] == STAGES
    assert step["bytes_after"] == len(result.onnx_bytes) < step["bytes_before"]
    curve = {row[0]: row[1] for row in step["curve"]}
    assert 100 * (base - curve[k]) <= BUDGET_POINTS  # within budget ...
    assert all(100 * (base - acc) > BUDGET_POINTS for s, acc in curve.items() if s < k)  # fewest
    low, high = step["accuracy_interval_95"]["low"], step["accuracy_interval_95"]["high"]
    assert low < step["accuracy"] < high
    staged = list(cancer["model"].staged_predict_proba(cancer["x_test"]))
    np.testing.assert_allclose(_ort(result.onnx_bytes, cancer["x_test"])[1], staged[k - 1], 2e-6)
    assert result.metrics["gate"]["passed"]
    assert result.metrics["final"]["params"] < result.metrics["baseline"]["params"]

    # the failing case: one stage, kept as given, loses more than a zero budget
    with pytest.raises(AccuracyGateError, match="over its budget max_accuracy_drop=0.0"):
        run_recipe(
            _recipe(max_accuracy_drop=0.0, steps=[{"step": "truncate_trees", "stages": 1}]),
            cancer["onnx"],
            evaluation=evaluation,
            result_output="probabilities",
            baseline=baseline,
        )


def test_quantize_is_refused_on_trees_and_truncation_on_other_graphs(cancer, tmp_path):
    evaluation = LabelledData(cancer["x_test"], cancer["y_test"])
    with pytest.raises(RecipeError, match="tree ensemble .*TreeEnsembleClassifier.*truncate_trees"):
        run_recipe(
            _recipe(max_accuracy_drop=1.0, steps=[{"step": "quantize", "mode": "dynamic_int8"}]),
            cancer["onnx"],
            evaluation=evaluation,
            result_output="probabilities",
        )
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])
    graph = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"])], "g", [x], [y])
    softmax = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(RecipeError, match="cuts a tree ensemble, but the graph holds none"):
        run_recipe(
            _recipe(max_accuracy_drop=1.0, steps=[{"step": "truncate_trees"}]),
            softmax.SerializeToString(),
            evaluation=LabelledData(np.zeros((4, 2), np.float32), np.zeros(4, np.int64)),
        )


def test_classes_that_are_not_positions_are_written_as_the_model_labels_them(cancer, tmp_path):
    """A classifier trained on classes 3 and 8: the family writes 3 and 8 (what the graph's
    label output says), not the probability columns' positions 0 and 1."""
    from leanscore.udfs.distribution import ModelSource
    from leanscore.udfs.kernel import Scorer
    from leanscore.udfs.session_cache import SessionConfig
    from skl2onnx import to_onnx
    from sklearn.ensemble import GradientBoostingClassifier

    x, y = cancer["x_test"], np.where(cancer["y_test"] == 1, 8, 3)
    model = GradientBoostingClassifier(n_estimators=10, max_depth=2, random_state=0).fit(x, y)
    onnx_bytes = to_onnx(model, x[:1], options={"zipmap": False}).SerializeToString()
    inputs, outputs = tensor_specs(onnx_bytes)
    artifact = write_artifact(
        tmp_path / "a",
        onnx_bytes,
        {
            "name": "cancer-3-8",
            "inputs": inputs,
            "outputs": outputs,
            "features": {"columns": cancer["columns"], "size": 30},
            "task": "classification",
            "class_labels": ["3", "8"],
            "family": "onnx_model",
            "result_output": "probabilities",
        },
    )
    manifest = artifact.manifest
    source = ModelSource(manifest.name, manifest.sha256, "closure", data=onnx_bytes)
    scorer = Scorer.build(
        manifest, source, SessionConfig(), batch_size=64, bad_rows="fail", probabilities=True
    )
    session, name = scorer.session()
    batch = scorer.family.from_pandas([pd.Series(x[:, j]) for j in range(30)])
    columns = scorer.columns(scorer.score(session, name, batch, None))
    np.testing.assert_array_equal(columns["label"], model.predict(x))
    assert set(columns["label"].tolist()) == {3, 8}
    np.testing.assert_allclose(columns["probabilities"], model.predict_proba(x), atol=2e-6)


# --- end to end through the CLI -------------------------------------------------------------


def _write_table(spark, path, x, y, columns, *, null_at: int | None = None):
    frame = pd.DataFrame(x.astype(np.float64), columns=columns)
    if null_at is not None:
        frame.loc[null_at, columns[3]] = None
    frame.insert(0, "id", np.arange(len(x), dtype=np.int64))
    frame["label"] = y.astype(np.int64)
    spark.createDataFrame(frame).write.format("delta").mode("overwrite").save(str(path))


def _compress_config(tmp_path, cancer, table, *, outputs: str, columns=None, recipe=None) -> str:
    columns = cancer["columns"] if columns is None else columns
    recipe = recipe or (
        f"{{name: breast-cancer-gbm, max_accuracy_drop: {BUDGET_POINTS}, "
        "steps: [{step: truncate_trees}]}"
    )
    config = tmp_path / "compress.yaml"
    config.write_text(
        f"recipe: {recipe}\n"
        "model:\n"
        "  kind: onnx\n"
        "  path: gbm.onnx\n"
        f"  feature_columns: {json.dumps(columns)}\n"
        f"  outputs: {outputs}\n"
        "data:\n"
        f"  evaluation: {{kind: table, path: {table}, format: delta, label_column: label}}\n"
    )
    return str(config)


def _one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_a_bad_mapping_fails_up_front_naming_it(cancer, tmp_path):
    """Checked against the graph before Spark starts or data is read."""
    (tmp_path / "gbm.onnx").write_bytes(cancer["onnx"])
    table = tmp_path / "never-read"
    unknown = _compress_config(
        tmp_path, cancer, table, outputs="{label: label, probabilities: probs}"
    )
    line = _one_line_error(
        CliRunner().invoke(app, ["compress", "-c", unknown, "-o", str(tmp_path / "a")])
    )
    assert "model.outputs.probabilities: 'probs' is not an output of" in line
    assert "'label' (int64 [N])" in line and "'probabilities' (float32 [N, 2])" in line

    narrow = _compress_config(
        tmp_path,
        cancer,
        table,
        outputs="{label: label, probabilities: probabilities}",
        columns=cancer["columns"][:29],
    )
    line = _one_line_error(
        CliRunner().invoke(app, ["compress", "-c", narrow, "-o", str(tmp_path / "b")])
    )
    assert "model.feature_columns: 29 columns feed input 'X'" in line and "takes 30" in line

    swapped = _compress_config(
        tmp_path, cancer, table, outputs="{label: probabilities, probabilities: label}"
    )
    line = _one_line_error(
        CliRunner().invoke(app, ["compress", "-c", swapped, "-o", str(tmp_path / "c")])
    )
    assert "model.outputs.probabilities: output 'label' (int64 [N])" in line
    assert not any((tmp_path / d).exists() for d in ("a", "b", "c"))


@pytest.fixture(scope="module")
def compressed(spark, cancer, tmp_path_factory):
    """``leanscore compress`` on the held-out rows as a Delta table: the artifact and the
    command's output."""
    tmp_path = tmp_path_factory.mktemp("onnx-family")
    (tmp_path / "gbm.onnx").write_bytes(cancer["onnx"])
    table = tmp_path / "held_out"
    _write_table(spark, table, cancer["x_test"], cancer["y_test"], cancer["columns"])
    config = _compress_config(
        tmp_path, cancer, table, outputs="{label: label, probabilities: probabilities}"
    )
    result = CliRunner().invoke(app, ["compress", "-c", config, "-o", str(tmp_path / "artifact")])
    assert result.exit_code == 0, result.output
    return {"artifact": Artifact.load(tmp_path / "artifact"), "table": table, "dir": tmp_path}


@pytest.mark.slow
def test_compress_records_the_mapping_and_a_truncation_within_budget(compressed, cancer):
    manifest = compressed["artifact"].manifest
    assert manifest.family == "onnx_model" and manifest.result_output == "probabilities"
    assert manifest.features.columns == cancer["columns"]
    assert manifest.class_labels == ["0", "1"]
    assert manifest.data["evaluation"]["format"] == "delta"
    assert manifest.data["evaluation"]["rows"] == len(cancer["x_test"])
    step = manifest.metrics["steps"][0]
    assert step["step"] == "truncate_trees" and step["stages_after"] < STAGES
    assert manifest.metrics["gate"]["passed"]
    assert manifest.metrics["gate"]["accuracy_drop_points"] <= BUDGET_POINTS
    assert manifest.model_bytes < manifest.metrics["baseline"]["onnx_bytes"]


@pytest.mark.slow
def test_score_writes_the_labels_sklearn_predicts_at_the_kept_trees(
    spark, compressed, cancer, tmp_path
):
    artifact = compressed["artifact"]
    k = artifact.manifest.metrics["steps"][0]["stages_after"]
    out = tmp_path / "scored"
    config = tmp_path / "nightly.yaml"
    config.write_text(
        f"artifact: {artifact.path}\n"
        f"input: {{path: {compressed['table']}, format: delta}}\n"
        f"output: {{path: {out}, format: delta}}\n"
        "key_columns: [id]\npassthrough_columns: [label]\nprobabilities: true\n"
    )
    result = CliRunner().invoke(app, ["score", "-c", str(config), "--run-date", "2026-11-30"])
    assert result.exit_code == 0, result.output
    scored = spark.read.format("delta").load(str(out)).orderBy("id").toPandas()
    assert len(scored) == len(cancer["x_test"]) and scored["prediction_error"].isna().all()
    model, x = cancer["model"], cancer["x_test"]
    expected_label = list(model.staged_predict(x))[k - 1]
    expected_proba = list(model.staged_predict_proba(x))[k - 1]
    np.testing.assert_array_equal(scored["prediction"].to_numpy(), expected_label)
    np.testing.assert_allclose(np.stack(scored["probabilities"]), expected_proba, atol=2e-6)
    np.testing.assert_allclose(scored["probability"], expected_proba.max(axis=1), atol=2e-6)


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["flag", "fail"])
def test_a_null_feature_follows_bad_rows(spark, compressed, cancer, tmp_path, policy):
    src, out = tmp_path / "with_null", tmp_path / "scored"
    x, y = cancer["x_test"][:40], cancer["y_test"][:40]
    _write_table(spark, src, x, y, cancer["columns"], null_at=7)
    config = tmp_path / "nightly.yaml"
    config.write_text(
        f"artifact: {compressed['artifact'].path}\n"
        f"input: {{path: {src}, format: delta}}\n"
        f"output: {{path: {out}, format: delta}}\n"
        f"key_columns: [id]\nbad_rows: {policy}\n"
    )
    result = CliRunner().invoke(app, ["score", "-c", str(config), "--run-date", "2026-11-30"])
    null_column = cancer["columns"][3]
    if policy == "fail":
        line = _one_line_error(result)
        assert "id=7" in line and null_column in line
        return
    assert result.exit_code == 0, result.output
    scored = spark.read.format("delta").load(str(out)).orderBy("id").toPandas()
    assert len(scored) == 40
    flagged = scored[scored["prediction"].isna()]
    assert flagged["id"].tolist() == [7]
    assert null_column in flagged["prediction_error"].iloc[0]
    assert scored["prediction_error"].isna().sum() == 39


def test_a_label_output_that_is_not_the_most_probable_class_is_refused(cancer):
    from leanscore.compression.sources import OnnxModel
    from leanscore.compression.sources.onnx_model import (
        check_label_output,
        label_indices,
        resolve_io,
    )

    spec = OnnxModel.model_validate(
        {
            "kind": "onnx",
            "path": "gbm.onnx",
            "feature_columns": cancer["columns"],
            "outputs": {"label": "label", "probabilities": "probabilities"},
        }
    )
    io = resolve_io(cancer["onnx"], spec, task="classification", path="gbm.onnx")
    assert (io.input, io.width, io.result_output, io.class_labels) == (
        "X",
        30,
        "probabilities",
        ["0", "1"],
    )
    check_label_output(cancer["onnx"], io, cancer["x_test"], io.class_labels)  # consistent
    with pytest.raises(ValueError, match="model.outputs.label: output 'label' is not the most"):
        check_label_output(cancer["onnx"], io, cancer["x_test"], ["1", "0"])  # classes swapped
    assert label_indices(np.array([8, 3, 8]), ["3", "8"], where="data.evaluation").tolist() == [
        1,
        0,
        1,
    ]
    with pytest.raises(ValueError, match=r"data.evaluation: label value\(s\) \['5'\]"):
        label_indices(np.array([3, 5]), ["3", "8"], where="data.evaluation")


def test_truncation_records_no_agreement_it_did_not_measure_and_counts_distinct_rows():
    """A regressor has no classes to agree on: its agreement is None, not a perfect 1.0; a
    classifier's interval counts distinct evaluation rows, not copies of them."""
    from leanscore.compression.steps.truncate_trees import truncate_within_budget
    from skl2onnx import to_onnx
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import GradientBoostingRegressor

    x, y = load_diabetes(return_X_y=True)
    x = x.astype(np.float32)
    model = GradientBoostingRegressor(n_estimators=10, max_depth=2, random_state=0).fit(x, y)
    onnx_bytes = to_onnx(model, x[:1]).SerializeToString()
    from leanscore.compression.evaluate import run_onnx

    base = run_onnx(single_thread_session(onnx_bytes), x, output=None)
    data = LabelledData(x, y.astype(np.float32), {"rows": "all"})
    _, detail = truncate_within_budget(
        onnx_bytes,
        data,
        base,
        stages=4,
        max_accuracy_drop=None,
        min_fidelity=None,
        task="regression",
        output=None,
    )
    assert detail["agreement_with_full_model"] is None
    assert detail["curve"] == [[4, None, None]]


def test_truncation_interval_counts_distinct_examples(cancer):
    from leanscore.compression.evaluate import accuracy_interval, run_onnx
    from leanscore.compression.steps.truncate_trees import truncate_within_budget

    x = np.concatenate([cancer["x_test"]] * 10)  # ten copies of each held-out row
    y = np.concatenate([cancer["y_test"]] * 10)
    base = run_onnx(single_thread_session(cancer["onnx"]), x, output="probabilities")
    _, detail = truncate_within_budget(
        cancer["onnx"],
        LabelledData(x, y, {"rows": "copies"}),
        base,
        stages=20,
        max_accuracy_drop=None,
        min_fidelity=None,
        task="classification",
        output="probabilities",
    )
    n = len(np.unique(cancer["x_test"], axis=0))
    assert detail["distinct_examples"] == n
    acc = detail["curve"][0][1]
    low, high = accuracy_interval(acc, n)
    assert detail["accuracy_interval_95"]["low"] == low
    assert detail["agreement_with_full_model"] is not None
