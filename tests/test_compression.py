"""The compression stage on tiny real models: every step does what it claims, measured."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from leanscore.compression.artifact import Artifact, ModelIntegrityError
from leanscore.compression.build import compress_to_artifact
from leanscore.compression.evaluate import evaluate_onnx
from leanscore.compression.factorization import (
    depthwise_separable,
    factorize_linears,
    separable_convs,
)
from leanscore.compression.models import (
    MLP,
    DigitsCNN,
    WithSoftmax,
    conv_params,
    count_params,
    predict_proba,
    shrink,
    train_classifier,
)
from leanscore.compression.quantization import (
    ArrayCalibrationReader,
    dynamic_int8,
    float16,
    static_int8,
)
from leanscore.compression.recipe import (
    AccuracyGateError,
    LabelledData,
    Recipe,
    RecipeError,
    run_recipe,
)
from leanscore.compression.torch_export import ExportParityError, check_parity, export_onnx
from leanscore.jobs.config import ConfigError, validate
from torch import nn


def _data(digits):
    train, held_out = digits
    return (
        LabelledData(train.features, train.labels, {"dataset": "digits", "split": "train"}),
        LabelledData(held_out.features, held_out.labels, {"dataset": "digits", "split": "held"}),
    )


def _recipe(steps, **budget):
    return Recipe.model_validate(
        {"name": "t", "max_accuracy_drop": 100.0, **budget, "steps": steps}
    )


def _ops(onnx_bytes: bytes) -> list[str]:
    return [n.op_type for n in onnx.load_model_from_string(onnx_bytes).graph.node]


@pytest.fixture(scope="module")
def tiny_cnn(digits):
    train, _ = digits
    torch.manual_seed(0)
    model = DigitsCNN([4, 8, 8])
    return train_classifier(model, train.features, train.labels, epochs=3, lr=3e-3)


# --- recipe validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "extra", "message"),
    [
        ([{"step": "shrink"}], {}, "steps.0: Input tag 'shrink' found using 'step'"),
        ([{"step": "prune", "ratio": 0.5}], {}, "steps.0.prune.kind: Field required"),
        ([{"step": "prune", "kind": "structured", "ratio": 1.5}], {}, "steps.0.prune.ratio"),
        ([{"step": "distill", "width": 2}], {}, "steps.0.distill.width"),
        ([{"step": "distill", "schedule": "cosine"}], {}, "steps.0.distill.schedule"),
        ([{"step": "quantize", "calibration": "median"}], {}, "steps.0.quantize.calibration"),
        (
            [{"step": "factorize", "method": "low_rank"}],
            {},
            "steps.0.factorize: Value error, method 'low_rank' needs exactly one of 'rank'",
        ),
        (
            [{"step": "export"}, {"step": "sparsify", "strength": 1}],
            {},
            "steps.1: 'sparsify' works on the PyTorch model and must come before 'export'",
        ),
        ([{"step": "export"}], {"max_accuracy_drop": None}, "max_accuracy_drop: a recipe must"),
        ([{"step": "export"}], {"min_fidelity": 1.5}, "min_fidelity: Input should be less"),
    ],
)
def test_bad_recipes_name_the_field(steps, extra, message):
    data = {"name": "r", "max_accuracy_drop": 1, "steps": steps, **extra}
    data = {k: v for k, v in data.items() if v is not None}
    with pytest.raises(ConfigError, match=message):
        validate(Recipe, data, source="r.yaml")


# --- torch-side steps --------------------------------------------------------------------


def test_low_rank_factorization_is_exact_at_full_rank_and_shrinks_below_it(small_model):
    full = MLP(64, [64, 32], 10)
    full.load_state_dict(small_model.state_dict())
    factorize_linears(full, rank=64, skip_last=True)
    # rank 64 of a 64x64 layer stores more weights than the layer: nothing is replaced
    assert count_params(full) == count_params(small_model)

    low = MLP(64, [64, 32], 10)
    low.load_state_dict(small_model.state_dict())
    report = factorize_linears(low, rank=4)
    assert [r["replaced"] for r in report] == [True, True]
    first = low.body[0]
    assert isinstance(first, nn.Sequential) and first[0].weight.shape == (4, 64)
    assert first[1].weight.shape == (64, 4)
    assert count_params(low) < count_params(small_model) / 2

    from leanscore.compression.factorization import low_rank_linear

    layer = small_model.body[2]  # 64 -> 32, full rank 32 reproduces it
    pair = low_rank_linear(layer, 32)
    with torch.no_grad():
        h = torch.rand(8, 64)
        np.testing.assert_allclose(pair(h).numpy(), layer(h).numpy(), atol=1e-5)


def test_energy_picks_the_fewest_singular_values():
    from leanscore.compression.factorization import svd_rank

    weight = torch.diag(torch.tensor([10.0, 1.0, 0.1, 0.01]))
    assert svd_rank(weight, rank=None, energy=0.98) == 1
    assert svd_rank(weight, rank=None, energy=0.99995) == 3
    assert svd_rank(weight, rank=7, energy=None) == 4


def test_depthwise_separable_is_exact_for_separable_filters_and_5x_smaller():
    conv = nn.Conv2d(16, 32, 3, padding=1)
    with torch.no_grad():  # W[o, c] = P[o, c] * D[c]: exactly what a separable pair expresses
        conv.weight.copy_(torch.randn(32, 16, 1, 1) * torch.randn(1, 16, 3, 3))
    pair = depthwise_separable(conv)
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        np.testing.assert_allclose(pair(x).numpy(), conv(x).numpy(), atol=1e-4)
    assert pair[0].groups == 16 and pair[1].kernel_size == (1, 1)

    cnn = DigitsCNN()
    before = conv_params(cnn)
    report = separable_convs(cnn)
    assert [r["replaced"] for r in report] == [False, True, True]  # 1-channel input stays
    assert before / conv_params(cnn) >= 5.0
    assert cnn(torch.rand(3, 64)).shape == (3, 10)


def test_shrink_makes_a_quarter_width_student():
    teacher = MLP(64, [512, 256], 10)
    student = shrink(teacher, width=0.25)
    assert [m.out_features for m in student.body if isinstance(m, nn.Linear)] == [128, 64]
    assert count_params(student) <= count_params(teacher) / 4
    assert shrink(teacher, width=0.5, depth=1).body[0].out_features == 256
    assert len([m for m in shrink(teacher, depth=1).body if isinstance(m, nn.Linear)]) == 1
    with pytest.raises(ValueError, match="student_factory"):
        shrink(nn.Sequential(nn.Linear(4, 2)), width=0.5)


@pytest.mark.slow
def test_distill_step_reports_distilled_and_hard_label_students(small_model, digits):
    train, evaluation = _data(digits)
    recipe = _recipe([{"step": "distill", "width": 0.25, "epochs": 30, "lr": 1e-2}])
    result = run_recipe(
        recipe,
        small_model,
        example_input=torch.from_numpy(evaluation.features[:4]),
        train=train,
        evaluation=evaluation,
    )
    step = result.metrics["steps"][0]
    assert step["student_params"] <= step["teacher_params"] / 4
    assert step["params"] == step["student_params"] < result.metrics["baseline"]["params"]
    distilled = step["distilled_student_accuracy"]["evaluation"]
    hard = step["hard_label_student_accuracy"]["evaluation"]
    assert distilled > 0.5 and hard > 0.1  # both trained and measured, both reported
    assert step["distillation_gain_points"]["evaluation"] == pytest.approx(
        100 * (distilled - hard), abs=1e-3
    )


@pytest.mark.parametrize(("schedule", "settles"), [("one_cycle", True), ("constant", False)])
def test_one_cycle_schedule_anneals_the_last_steps(digits, schedule, settles):
    """one_cycle ends the run with near-zero steps (the weights settle); a constant rate keeps
    taking full steps to the end, which is the case the schedule exists for."""
    train, _ = _data(digits)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(train.features.shape[1], 10))
    moves: list[float] = []
    last = [p.detach().clone() for p in model.parameters()]

    def record(m: nn.Module) -> None:
        now = [p.detach().clone() for p in m.parameters()]
        moves.append(sum(float((a - b).abs().sum()) for a, b in zip(now, last, strict=True)))
        last[:] = now

    train_classifier(
        model,
        train.features,
        train.labels,
        epochs=2,
        lr=1e-2,
        batch_size=32,
        after_step=record,
        schedule=schedule,
    )
    assert len(moves) == 2 * -(-len(train.features) // 32)
    assert (moves[-1] < 0.05 * max(moves)) is settles


def test_sparsify_drives_weights_to_zero(small_model, digits):
    from leanscore.compression.sparsification import l1_finetune, near_zero_fraction

    train, _ = digits
    model = MLP(64, [64, 32], 10)
    model.load_state_dict(small_model.state_dict())
    before = near_zero_fraction(model, 1e-2)
    l1_finetune(
        model, train.features, train.labels, strength=5.0, epochs=6, lr=1e-2, zero_below=1e-2
    )
    after = near_zero_fraction(model, 1e-2)
    assert after > before + 0.2
    zeros = sum(int((m.weight == 0).sum()) for m in (model.body[0], model.body[2], model.head))
    assert zeros / sum(m.weight.numel() for m in (model.body[0], model.body[2], model.head)) == (
        pytest.approx(after)
    )


@pytest.mark.slow
def test_structured_prune_removes_neurons_and_unstructured_only_zeros(small_model, digits):
    train, evaluation = _data(digits)
    recipe = _recipe(
        [
            {"step": "prune", "kind": "structured", "ratio": 0.5, "finetune_epochs": 1},
            {"step": "prune", "kind": "unstructured", "ratio": 0.9, "finetune_epochs": 1},
            {"step": "export"},
        ]
    )
    result = run_recipe(
        recipe,
        small_model,
        example_input=torch.from_numpy(evaluation.features[:4]),
        train=train,
        evaluation=evaluation,
    )
    structured, unstructured, _ = result.metrics["steps"]
    base = result.metrics["baseline"]
    assert structured["params"] < base["params"] * 0.6  # neurons physically gone
    assert structured["onnx_bytes"] < base["onnx_bytes"] * 0.6
    assert unstructured["params"] == structured["params"]  # shapes unchanged
    assert unstructured["nonzero_params"] < 0.2 * unstructured["params"]
    assert unstructured["zipped_bytes"] < structured["zipped_bytes"] / 2
    assert "no" not in structured["effect"] and "same speed" in unstructured["effect"]
    assert result.metrics["unstructured_sparsity_note"].startswith("unstructured")


# --- export and quantization -------------------------------------------------------------


def test_export_parity_holds_and_a_mismatch_is_caught(small_model, digits):
    _, held_out = digits
    served = WithSoftmax(small_model)
    data = export_onnx(served, torch.from_numpy(held_out.features[:4]))
    onnx.checker.check_model(onnx.load_model_from_string(data), full_check=True)
    assert check_parity(served, data, held_out.features[:256]) < 1e-5
    other = WithSoftmax(MLP(64, [64, 32], 10))
    with pytest.raises(ExportParityError, match="exported ONNX differs from torch by"):
        check_parity(other, data, held_out.features[:256])


@pytest.fixture(scope="module")
def fp32_bytes(small_model, digits):
    return export_onnx(WithSoftmax(small_model), torch.from_numpy(digits[1].features[:4]))


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_static_int8_qdq_calibrated_from_an_array(fp32_bytes, digits, method):
    train, held_out = digits
    reader = ArrayCalibrationReader(train.features[:256], input_name="features", batch_size=64)
    data = static_int8(fp32_bytes, reader, per_channel=True, method=method, nodes_to_exclude=[])
    ops = _ops(data)
    assert ops.count("QuantizeLinear") >= 2 and "DequantizeLinear" in ops
    graph = onnx.load_model_from_string(data).graph
    int8_weights = [i for i in graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert any(len(i.dims) == 2 for i in int8_weights)
    # per channel: one scale per output neuron of the first layer
    assert any(
        len(i.dims) == 1 and i.dims[0] == 64
        for i in graph.initializer
        if i.data_type == onnx.TensorProto.FLOAT and "scale" in i.name
    )
    base, base_probs = evaluate_onnx(fp32_bytes, held_out.features, held_out.labels, None)
    m, _ = evaluate_onnx(data, held_out.features, held_out.labels, base_probs)
    assert m["fidelity"]["agreement"] > 0.95
    assert abs(m["accuracy"] - base["accuracy"]) < 0.03


def widest_int8_weight(onnx_bytes: bytes) -> int:
    from onnx import numpy_helper

    graph = onnx.load_model_from_string(onnx_bytes).graph
    weights = [
        numpy_helper.to_array(i)
        for i in graph.initializer
        if i.data_type == onnx.TensorProto.INT8 and len(i.dims) >= 2
    ]
    assert weights, "no int8 weight matrix in the graph"
    return max(int(np.abs(w.astype(np.int32)).max()) for w in weights)


def test_int8_weights_keep_to_seven_bits_so_no_cpu_saturates(fp32_bytes, digits):
    """On CPUs without VNNI, ONNX Runtime adds pairs of uint8 x int8 products in 16 bits:
    255 * 127 * 2 overflows, 255 * 64 * 2 does not. Both int8 modes keep weights in 7 bits."""
    static = static_int8(fp32_bytes, digits[0].features[:128])
    for data in (dynamic_int8(fp32_bytes), static):
        assert widest_int8_weight(data) <= 64
    # the check can fail: ONNX Runtime's full 8-bit range reaches past 64
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "in.onnx"), Path(tmp, "out.onnx")
        src.write_bytes(fp32_bytes)
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True)
        assert widest_int8_weight(dst.read_bytes()) > 64


def _optimized_ops(onnx_bytes: bytes, tmp: Path) -> list[str]:
    """The op types of the graph ONNX Runtime runs, after its basic (constant folding) pass."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(tmp / "optimized.onnx")
    ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    return _ops((tmp / "optimized.onnx").read_bytes())


@pytest.mark.parametrize("per_channel", [True, False])
def test_weight_only_int8_stores_int8_and_runs_the_float_graph(
    fp32_bytes, tiny_cnn, digits, tmp_path, per_channel
):
    """Conv and Gemm weights are stored in int8 (the file about 4x smaller) and folded back to
    float when the session is built: ONNX Runtime runs the same graph as for the float model,
    so the float kernels' speed stays; the outputs stay within 8-bit rounding of float."""
    import onnxruntime as ort
    from leanscore.compression.quantization import weight_only_int8

    features = digits[1].features[:256]
    cnn_bytes = export_onnx(WithSoftmax(tiny_cnn), torch.from_numpy(features[:4]))
    for data in (fp32_bytes, cnn_bytes):
        stored = weight_only_int8(data, per_channel=per_channel)
        sizes = dict.fromkeys(onnx.TensorProto.DataType.values(), 0)
        for t in onnx.load_model_from_string(stored).graph.initializer:
            sizes[t.data_type] += int(np.prod(t.dims))
        # what stays float is biases and scales
        assert sizes[onnx.TensorProto.FLOAT] < 0.1 * sizes[onnx.TensorProto.INT8]
        if data is fp32_bytes:  # the tiny CNN's file is mostly graph, not weights
            assert len(stored) < 0.4 * len(data)
        assert _optimized_ops(stored, tmp_path) == _optimized_ops(data, tmp_path)
        name = ort.InferenceSession(data).get_inputs()[0].name
        before = ort.InferenceSession(data).run(None, {name: features})[0]
        after = ort.InferenceSession(stored).run(None, {name: features})[0]
        assert np.abs(after - before).max() < 0.05
        assert (after.argmax(1) == before.argmax(1)).mean() > 0.95  # near ties may flip
    weightless = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Relu", ["x"], ["y"])],
            "relu",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 4])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 4])],
        )
    )
    with pytest.raises(ValueError, match="no float Conv, Gemm or MatMul weight"):
        weight_only_int8(weightless.SerializeToString())


def test_per_tensor_dynamic_fp16_and_exclusion(fp32_bytes, digits):
    from leanscore.compression.quantization import nodes_to_exclude

    per_tensor = dynamic_int8(fp32_bytes, per_channel=False)
    per_channel = dynamic_int8(fp32_bytes, per_channel=True)
    assert "MatMulInteger" in _ops(per_tensor) or "DynamicQuantizeMatMul" in _ops(per_tensor)
    assert len(per_tensor) < len(per_channel) < len(fp32_bytes)

    half = float16(fp32_bytes, nodes_to_exclude=[], op_types=None)
    graph = onnx.load_model_from_string(half).graph
    assert {i.data_type for i in graph.initializer if len(i.dims) == 2} == {
        onnx.TensorProto.FLOAT16
    }
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert len(half) < 0.6 * len(fp32_bytes)

    names = nodes_to_exclude(fp32_bytes, names=[], op_types=["Gemm"])
    kept = static_int8(fp32_bytes, digits[0].features[:128], nodes_to_exclude=names)
    assert "Gemm" in _ops(kept)
    with pytest.raises(ValueError, match=r"exclude_nodes names \['nope'\] that are not in"):
        nodes_to_exclude(fp32_bytes, names=["nope"], op_types=[])


def test_onnx_file_source_takes_quantize_steps_only(fp32_bytes, digits):
    train, evaluation = _data(digits)
    recipe = _recipe(
        [{"step": "quantize", "mode": "static_int8", "exclude_op_types": ["Softmax"]}],
        min_fidelity=0.9,
    )
    result = run_recipe(recipe, fp32_bytes, train=train, evaluation=evaluation)
    assert "QuantizeLinear" in _ops(result.onnx_bytes)
    assert result.metrics["final"]["onnx_bytes"] < result.metrics["baseline"]["onnx_bytes"]
    assert result.metrics["gate"]["passed"] and result.metrics["gate"]["fidelity"] >= 0.9
    bad = _recipe([{"step": "prune", "kind": "structured", "ratio": 0.5}])
    with pytest.raises(RecipeError, match=r"steps.0 \('prune'\) needs a PyTorch model, but the"):
        run_recipe(bad, fp32_bytes, train=train, evaluation=evaluation)


# --- gate, artifact, autotune ------------------------------------------------------------


def test_gate_on_fidelity_refuses_with_the_numbers(small_model, digits):
    train, evaluation = _data(digits)
    recipe = Recipe.model_validate(
        {
            "name": "faithless",
            "min_fidelity": 0.999,
            "steps": [
                {"step": "prune", "kind": "unstructured", "ratio": 0.95, "finetune_epochs": 0}
            ],
        }
    )
    with pytest.raises(AccuracyGateError) as err:
        run_recipe(
            recipe,
            small_model,
            example_input=torch.from_numpy(evaluation.features[:4]),
            train=train,
            evaluation=evaluation,
        )
    text = str(err.value)
    assert "recipe 'faithless' keeps agreement with the baseline 0." in text
    assert "under its budget min_fidelity=0.999" in text and "no artifact was written" in text
    assert "params=" in text and "rows/s(1 thread)=" in text
    assert err.value.metrics["gate"]["passed"] is False


def test_gate_names_its_distinct_examples_and_the_interval(small_model, digits):
    """Each held-out image three times: the gate counts 450 distinct examples, not 1,350 rows,
    and says a 1-point drop on them is within the noise of the measurement."""
    from leanscore.compression.recipe import distinct_examples

    train, held = _data(digits)
    tripled = LabelledData(np.tile(held.features, (3, 1)), np.tile(held.labels, 3), {})
    assert distinct_examples(tripled) == 450
    assert distinct_examples(LabelledData(held.features, None, {"distinct_examples": 90})) == 90
    recipe = Recipe.model_validate(
        {
            "name": "lossy",
            "max_accuracy_drop": 0.0,
            "steps": [
                {"step": "prune", "kind": "unstructured", "ratio": 0.95, "finetune_epochs": 0}
            ],
        }
    )
    with pytest.raises(AccuracyGateError) as err:
        run_recipe(
            recipe,
            small_model,
            example_input=torch.from_numpy(held.features[:4]),
            train=train,
            evaluation=tripled,
        )
    text, gate = str(err.value), err.value.metrics["gate"]
    assert "on 1350 held-out rows (450 distinct examples)" in text
    assert "Accuracy measured on 450 distinct held-out examples (one example = 0.22 points)" in text
    assert gate["distinct_examples"] == 450
    low, high = gate["accuracy_interval"]
    final = err.value.metrics["final"]["accuracy"]
    assert low < final < high and 0.02 < high - low < 0.2  # about +-1.5 points on 450
    assert f"[{100 * low:.1f}, {100 * high:.1f}]" in text and "95% intervals" in text
    b_low, b_high = gate["baseline_accuracy_interval"]
    assert b_low < err.value.metrics["baseline"]["accuracy"] < b_high


def test_manifest_round_trips_and_a_tampered_model_fails(small_model, digits, tmp_path):
    train, evaluation = _data(digits)
    recipe = _recipe(
        [
            {"step": "prune", "kind": "structured", "ratio": 0.25, "finetune_epochs": 1},
            {"step": "export"},
            {"step": "quantize", "mode": "dynamic_int8"},
        ]
    )
    out = tmp_path / "art"
    also = {"augmented": LabelledData(evaluation.features[:100] * 0.9, evaluation.labels[:100])}
    artifact = compress_to_artifact(
        recipe,
        small_model,
        out,
        example_input=torch.from_numpy(evaluation.features[:4]),
        train=train,
        evaluation=evaluation,
        features={"array_column": "features", "size": 64},
        also_evaluate=also,
    )
    loaded = Artifact.load(out)
    assert loaded.manifest == artifact.manifest
    metrics = loaded.manifest.metrics
    assert [s["step"] for s in metrics["steps"]] == ["prune", "export", "quantize"]
    for entry in [metrics["baseline"], metrics["final"], *metrics["steps"]]:
        for key in (
            "params",
            "onnx_bytes",
            "zipped_bytes",
            "rows_per_s_1thread",
            "accuracy",
            "fidelity",
        ):
            assert key in entry, key
    assert metrics["final"]["also"]["augmented"]["rows"] == 100
    assert loaded.manifest.data["evaluation"]["split"] == "held"
    assert loaded.manifest.recipe["steps"][0]["kind"] == "structured"
    assert json.loads((out / "manifest.json").read_text())["sha256"] == loaded.sha256

    data = bytearray((out / "model.onnx").read_bytes())
    data[-1] ^= 0xFF
    (out / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="sha256 is .* but the manifest says"):
        Artifact.load(out)


@pytest.mark.slow
def test_autotune_keeps_the_fastest_passing_candidate(small_model, digits, tmp_path):
    from leanscore.compression.autotune import autotune, write_table

    train, evaluation = _data(digits)
    candidates = [
        _recipe([{"step": "export"}]).model_copy(update={"name": "fp32"}),
        _recipe(
            [
                {"step": "prune", "kind": "structured", "ratio": 0.5, "finetune_epochs": 2},
                {"step": "export"},
            ]
        ).model_copy(update={"name": "structured"}),
        Recipe.model_validate(
            {
                "name": "over-budget",
                "max_accuracy_drop": 0.0,
                "steps": [
                    {"step": "prune", "kind": "structured", "ratio": 0.9, "finetune_epochs": 0}
                ],
            }
        ),
    ]
    result = autotune(
        candidates,
        small_model,
        example_input=torch.from_numpy(evaluation.features[:4]),
        train=train,
        evaluation=evaluation,
    )
    by_name = {r["recipe"]: r for r in result.table}
    assert not by_name["over-budget"]["passed"] and not by_name["over-budget"]["chosen"]
    assert "over its budget max_accuracy_drop=0.0" in by_name["over-budget"]["reason"]
    passing = [r for r in result.table if r["passed"]]
    chosen = [r for r in result.table if r["chosen"]]
    assert len(chosen) == 1
    assert chosen[0]["rows_per_s_per_core"] == max(r["rows_per_s_per_core"] for r in passing)
    assert result.best.recipe.name == chosen[0]["recipe"]
    assert [r["rank"] for r in result.table] == [1, 2, 3]
    json_path, csv_path = write_table(result.table, tmp_path / "auto")
    assert json.loads(json_path.read_text())[0]["chosen"] is True
    assert csv_path.read_text().splitlines()[0].startswith("rank,recipe,passed,chosen")


@pytest.mark.slow
def test_cnn_recipe_factorizes_and_distills(tiny_cnn, digits):
    train, evaluation = _data(digits)
    recipe = _recipe(
        [
            {"step": "factorize", "method": "depthwise_separable", "distill_epochs": 1},
            {"step": "export"},
        ]
    )
    result = run_recipe(
        recipe,
        tiny_cnn,
        example_input=torch.from_numpy(evaluation.features[:4]),
        train=train,
        evaluation=evaluation,
    )
    step = result.metrics["steps"][0]
    assert step["conv_params"] < step["conv_params_before"] / 2
    assert "accuracy_after_distillation" in step
    assert _ops(result.onnx_bytes).count("Conv") == 5  # conv1 + two depthwise/pointwise pairs
    probs = predict_proba(tiny_cnn, evaluation.features[:8])
    assert probs.shape == (8, 10)


# --- data from a Delta table, and the CLI ------------------------------------------------


def test_delta_sample_feeds_calibration_with_lineage(spark, fp32_bytes, digits, tmp_path):
    from leanscore.bench.demo.datagen import write_digits_table
    from leanscore.compression.sources.table import TableSample, read_table_sample

    path = str(tmp_path / "calib")
    version = write_digits_table(spark, path, 600, partitions=2)
    spec = TableSample(path=path, feature_column="features", label_column="label", limit=300)
    sample = read_table_sample(spec, spark=spark)
    assert sample.features.shape == (300, 64) and sample.labels.shape == (300,)
    assert sample.source["delta_version"] == version and sample.source["format"] == "delta"
    _, evaluation = _data(digits)
    recipe = _recipe([{"step": "quantize", "mode": "static_int8", "calibration": "percentile"}])
    result = run_recipe(recipe, fp32_bytes, evaluation=evaluation, calibration=sample)
    assert result.metrics["steps"][0]["calibration_rows"] == 300
    with pytest.raises(ValueError, match=r"has no column\(s\) \['pixels'\]"):
        read_table_sample(spec.model_copy(update={"feature_column": "pixels"}), spark=spark)


def _write_config(tmp_path, text: str):
    path = tmp_path / "compress.yaml"
    path.write_text(text)
    return path


TINY_DATA = """
data:
  train: {kind: digits, split: train}
  evaluation: {kind: digits, split: held_out}
"""


@pytest.mark.slow
def test_cli_compresses_a_checkpoint_and_refuses_over_budget(small_model, tmp_path):
    from leanscore.jobs.cli import app
    from typer.testing import CliRunner

    torch.save(small_model.state_dict(), tmp_path / "model.pt")
    model = """
model:
  kind: torch
  factory: leanscore.compression.models:MLP
  kwargs: {in_features: 64, hidden: [64, 32], num_classes: 10}
  checkpoint: model.pt
  input_shape: [64]
"""
    ok = _write_config(
        tmp_path,
        "recipe: {name: ok, max_accuracy_drop: 2.0, steps: [{step: export}, "
        "{step: quantize, mode: dynamic_int8}]}" + model + TINY_DATA,
    )
    result = CliRunner().invoke(
        app, ["compress", "--config", str(ok), "--out", str(tmp_path / "a")]
    )
    assert result.exit_code == 0, result.output
    artifact = Artifact.load(tmp_path / "a")
    assert artifact.manifest.data["model_source"]["checkpoint"].endswith("model.pt")
    assert (
        artifact.manifest.metrics["final"]["onnx_bytes"]
        < artifact.manifest.metrics["baseline"]["onnx_bytes"]
    )

    over = _write_config(
        tmp_path,
        "recipe: {name: over, max_accuracy_drop: 0.1, steps: [{step: prune, kind: structured, "
        "ratio: 0.95, finetune_epochs: 0}]}" + model + TINY_DATA,
    )
    result = CliRunner().invoke(app, ["compress", "-c", str(over), "--out", str(tmp_path / "b")])
    assert result.exit_code == 1
    assert "recipe 'over' loses" in result.output and "no artifact was written" in result.output
    assert not (tmp_path / "b").exists()


def test_cli_onnx_source_and_clear_errors(fp32_bytes, tmp_path):
    from leanscore.jobs.cli import app
    from typer.testing import CliRunner

    (tmp_path / "m.onnx").write_bytes(fp32_bytes)
    source = "\nmodel: {kind: onnx, path: m.onnx}\n" + TINY_DATA
    good = _write_config(
        tmp_path, "recipe: {name: q, min_fidelity: 0.9, steps: [{step: quantize}]}" + source
    )
    result = CliRunner().invoke(app, ["compress", "-c", str(good), "--out", str(tmp_path / "q")])
    assert result.exit_code == 0, result.output
    assert Artifact.load(tmp_path / "q").manifest.recipe["steps"][0]["mode"] == "static_int8"

    torch_step = _write_config(
        tmp_path,
        "recipe: {name: d, min_fidelity: 0.9, steps: [{step: distill}, {step: export}]}" + source,
    )
    result = CliRunner().invoke(app, ["compress", "-c", str(torch_step), "-o", str(tmp_path / "d")])
    assert result.exit_code == 1
    assert "steps.0 ('distill') needs a PyTorch model, but the model source is an ONNX file" in (
        " ".join(result.output.split())
    )

    unsafe = tmp_path / "unsafe.pt"
    torch.save({"weights": object()}, unsafe)
    bad = _write_config(
        tmp_path,
        "recipe: {name: u, max_accuracy_drop: 1, steps: [{step: export}]}\nmodel: {kind: torch, "
        "factory: 'leanscore.compression.models:digits_mlp', checkpoint: unsafe.pt, "
        "input_shape: [64]}\n" + TINY_DATA,
    )
    result = CliRunner().invoke(app, ["compress", "-c", str(bad), "-o", str(tmp_path / "u")])
    assert result.exit_code == 1
    assert "weights_only=True" in " ".join(result.output.split())


def test_distinct_rows_counts_repeated_rows_once_for_numbers_and_texts():
    """The gate's interval rests on distinct examples: texts (an object array) count too."""
    import numpy as np
    from leanscore.compression.evaluate import distinct_rows

    assert distinct_rows(np.array([[1, 2], [1, 2], [3, 4]], dtype=np.float32)) == 2
    assert distinct_rows(np.array(["a", "b", "a"], dtype=object)) == 2
    assert distinct_rows(np.zeros((0, 3), dtype=np.float32)) == 0


@pytest.mark.parametrize(("budget_seconds", "timed_passes"), [(0.0, 3), (float("inf"), 7)])
def test_speed_passes_stop_at_their_budget_after_three(
    fp32_bytes, digits, budget_seconds, timed_passes
):
    """Held-out rows given as calls (texts) are all timed: a transformer's pass takes seconds,
    so the passes stop after three once they took the budget, and run all seven within it."""
    from leanscore.compression.evaluate import rows_per_second, single_thread_session

    session = single_thread_session(fp32_bytes)
    name = session.get_inputs()[0].name
    features = digits[1].features[:200]
    passes = []

    def calls(rows, batch_rows):
        passes.append(len(rows))
        yield np.arange(len(rows)), {name: rows}

    rate = rows_per_second(
        session, features, repeats=7, budget_seconds=budget_seconds, batches=calls
    )
    assert passes == [200] * (1 + timed_passes)  # the warm-up covered every row: no second
    assert rate > 0
