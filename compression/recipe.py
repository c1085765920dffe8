"""Recipes: an ordered list of compression steps and the accuracy budget they must keep.

``run_recipe`` applies the steps in the order the recipe lists them, evaluates the model after
every step against the uncompressed baseline on held-out data, and refuses
(``AccuracyGateError``) a result that loses more than the recipe allows. Every accuracy carries
its Wilson 95% interval over the distinct held-out examples it was measured on, and the gate
says how many there are: on the digits' 450 held-out images one example is 0.22 points and the
interval spans about +-1.5 points, so a 1-point drop is within the noise of the measurement.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import get_args

import numpy as np
import torch
from leanscore.compression.data import LabelledData
from leanscore.compression.errors import LeanscoreError
from leanscore.compression.evaluate import (
    accuracy_interval,
    distinct_rows,
    evaluate_onnx,
    fidelity,
    run_onnx,
    single_thread_session,
)
from leanscore.compression.export import check_parity, export_onnx
from leanscore.compression.models import (
    WithSoftmax,
    conv_params,
    count_nonzero_params,
    count_params,
    predict_proba,
    train_classifier,
)
from leanscore.compression.steps import (
    DistillStep,
    ExportStep,
    FactorizeStep,
    PruneStep,
    QuantizeStep,
    SparsifyStep,
    Step,
    TruncateTreesStep,
)
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

log = logging.getLogger(__name__)

__all__ = [
    "AccuracyGateError",
    "Baseline",
    "CompressionResult",
    "DistillStep",
    "ExportStep",
    "FactorizeStep",
    "LabelledData",
    "PruneStep",
    "QuantizeStep",
    "Recipe",
    "RecipeError",
    "SparsifyStep",
    "TruncateTreesStep",
    "measure_baseline",
    "run_recipe",
]

STRUCTURED_NOTE = "structured: neurons/channels removed, dense kernels do less work (faster)"
# Rows per calibration call for models fed by ``LabelledData.batches`` (texts).
CALIBRATION_CALL_ROWS = 32
UNSTRUCTURED_NOTE = (
    "unstructured: weights zeroed, shapes unchanged; the zipped file shrinks but dense CPU "
    "kernels run at the same speed (onnxruntime #2121, #5578)"
)


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    max_accuracy_drop: float | None = Field(
        default=None, ge=0.0, description="largest accuracy loss accepted, in points (1.0 = 1%)"
    )
    min_fidelity: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="smallest agreement with the baseline (classification) or mean cosine "
        "(embedding) accepted",
    )
    steps: list[Step] = Field(min_length=1)

    @model_validator(mode="after")
    def _budget_and_order(self) -> Recipe:
        if self.max_accuracy_drop is None and self.min_fidelity is None:
            raise ValueError(
                "max_accuracy_drop: a recipe must state its budget: give max_accuracy_drop "
                "(points) or min_fidelity (0..1)"
            )
        exported_at = None
        for i, step in enumerate(self.steps):
            if step.side == "export":
                if exported_at is not None:
                    raise ValueError(
                        f"steps.{i}: 'export' appears twice (first at steps.{exported_at})"
                    )
                exported_at = i
            elif step.side == "torch" and exported_at is not None:
                raise ValueError(
                    f"steps.{i}: '{step.step}' works on the PyTorch model and must come before "
                    f"'export' (steps.{exported_at})"
                )
        return self


class RecipeError(LeanscoreError, ValueError):
    """A recipe cannot run on this model (a torch step on an ONNX file, missing data, ...)."""


class AccuracyGateError(LeanscoreError, RuntimeError):
    """A compressed model lost more accuracy than its recipe accepts."""

    def __init__(self, message: str, *, metrics: dict | None = None):
        super().__init__(message)
        self.metrics = metrics or {}


@dataclass
class CompressionResult:
    onnx_bytes: bytes
    baseline_onnx_bytes: bytes
    metrics: dict
    recipe: Recipe


@dataclass
class Baseline:
    """The uncompressed model, exported and measured once (shared by autotune's candidates)."""

    onnx_bytes: bytes
    metrics: dict
    outputs: np.ndarray
    also_outputs: dict[str, np.ndarray]


@dataclass
class _State:
    model: nn.Module | None
    original: nn.Module | None
    onnx_bytes: bytes | None = None
    notes: list[str] = field(default_factory=list)
    measured: bytes | None = None  # the last export of the torch model, as evaluated


def _served(model: nn.Module, task: str) -> nn.Module:
    return WithSoftmax(model) if task == "classification" else model


def measure_baseline(
    model: nn.Module | bytes,
    *,
    example_input: torch.Tensor | None,
    evaluation: LabelledData,
    task: str = "classification",
    also_evaluate: dict[str, LabelledData] | None = None,
    result_output: str | None = None,
) -> Baseline:
    """Export (a torch model) and measure the model as given; ``result_output`` names the ONNX
    output that holds the result (default: the first)."""
    if isinstance(model, bytes | bytearray):
        onnx_bytes, params = bytes(model), None
    else:
        if example_input is None:
            raise RecipeError("a PyTorch model needs an example_input to be exported")
        onnx_bytes, params = export_onnx(_served(model, task), example_input), count_params(model)
    metrics, outputs = evaluate_onnx(
        onnx_bytes,
        evaluation.features,
        evaluation.labels,
        None,
        params=params,
        task=task,
        output=result_output,
        batches=evaluation.batches,
    )
    metrics["distinct_examples"] = distinct_examples(evaluation)
    _add_interval(metrics, metrics["distinct_examples"])
    metrics["fidelity"] = fidelity(outputs, outputs, task=task)
    if not isinstance(model, bytes | bytearray):
        metrics["conv_params"] = conv_params(model)
    also_outputs = {}
    if also_evaluate:
        session = single_thread_session(onnx_bytes)
        metrics["also"] = {}
        for name, data in also_evaluate.items():
            also_outputs[name] = run_onnx(
                session, data.features, output=result_output, batches=data.batches
            )
            metrics["also"][name] = _also_metrics(also_outputs[name], None, data, task)
    return Baseline(onnx_bytes, metrics, outputs, also_outputs)


def distinct_examples(data: LabelledData) -> int:
    """The independent examples behind an accuracy on ``data``: what its source states
    (``distinct_examples``: augmented copies of a few originals are not independent), else its
    distinct feature rows."""
    stated = (data.source or {}).get("distinct_examples")
    return int(stated) if stated else distinct_rows(data.features)


def _add_interval(metrics: dict, n: int) -> None:
    if metrics.get("accuracy") is not None:
        metrics["accuracy_interval"] = accuracy_interval(metrics["accuracy"], n)


def _also_metrics(outputs, baseline_outputs, data: LabelledData, task: str) -> dict:
    from leanscore.compression.evaluate import accuracy

    out = {"rows": len(data.features), "accuracy": accuracy(outputs, data.labels, task=task)}
    if baseline_outputs is not None:
        out["fidelity"] = fidelity(outputs, baseline_outputs, task=task)
    return out


def check_plan(
    recipe: Recipe, *, onnx_source: bool, train: LabelledData | None, task: str, labels: bool
) -> None:
    """Refuse, before any work, a recipe this model or this data cannot run."""
    for i, step in enumerate(recipe.steps):
        where = f"recipe {recipe.name!r} steps.{i} ('{step.step}')"
        if onnx_source and step.side != "onnx":
            raise RecipeError(
                f"{where} needs a PyTorch model, but the model source is an ONNX file (a "
                "Hugging Face model is one too: it is exported before the recipe runs); only "
                f"ONNX-side steps ({', '.join(ONNX_STEPS)}) apply to ONNX sources"
            )
        if step.side == "torch" and task != "classification" and step.step != "prune":
            raise RecipeError(f"{where} trains on class logits; the task here is {task!r}")
        needs_train = isinstance(step, DistillStep | FactorizeStep | SparsifyStep) or (
            isinstance(step, PruneStep) and step.finetune_epochs
        )
        if needs_train and train is None:
            raise RecipeError(f"{where} needs training data; give the config a data.train")
        if isinstance(step, SparsifyStep) and (train is None or train.labels is None):
            raise RecipeError(f"{where} fine-tunes on labels; the training data has none")
    exported = onnx_source
    for i, step in enumerate(recipe.steps):
        exported = exported or step.side == "export"
        if step.side == "onnx" and not exported:
            raise RecipeError(
                f"recipe {recipe.name!r} steps.{i} ('{step.step}') needs an ONNX model; put an "
                "'export' step before it"
            )
    if recipe.max_accuracy_drop is not None and recipe.min_fidelity is None and not labels:
        raise RecipeError(
            f"recipe {recipe.name!r} gates on max_accuracy_drop but the evaluation data has no "
            "labels (or the task has no classes); give a label column or set min_fidelity"
        )
    if recipe.min_fidelity is not None and task == "regression":
        raise RecipeError(
            f"recipe {recipe.name!r}: min_fidelity is defined for classification (agreement) "
            "and embedding (mean cosine), not regression; use max_accuracy_drop"
        )


# learnt weights ONNX Runtime's quantizers work on; a graph without them has nothing to quantize
_QUANTIZABLE_OPS = frozenset(
    {"MatMul", "Gemm", "Conv", "ConvTranspose", "Attention", "LSTM", "GRU"}
)


def check_graph(recipe: Recipe, onnx_bytes: bytes) -> None:
    """Refuse, before any work, ONNX-side steps that cannot act on this graph: truncate_trees
    without a tree ensemble, quantize on a tree ensemble with no weights it could quantize."""
    import onnx
    from leanscore.compression import trees

    graph = onnx.load_model_from_string(onnx_bytes).graph
    ops = sorted({n.op_type for n in graph.node})
    tree_ops = [op for op in ops if op in trees.TREE_OPS]
    for i, step in enumerate(recipe.steps):
        where = f"recipe {recipe.name!r} steps.{i} ('{step.step}')"
        if isinstance(step, TruncateTreesStep) and not tree_ops:
            raise RecipeError(
                f"{where} cuts a tree ensemble, but the graph holds none (its ops: {ops}); "
                "remove the step"
            )
        if isinstance(step, QuantizeStep) and tree_ops and not _QUANTIZABLE_OPS & set(ops):
            raise RecipeError(
                f"{where}: the graph is a tree ensemble ({', '.join(tree_ops)}) whose thresholds "
                "and leaf weights are node attributes ONNX Runtime's quantizers leave as they "
                "are (int8 and fp16 would only rewrite the file around them); compress trees "
                "with 'truncate_trees' and remove the quantize step"
            )


def run_recipe(
    recipe: Recipe,
    model: nn.Module | bytes,
    *,
    example_input: torch.Tensor | None = None,
    train: LabelledData | None = None,
    evaluation: LabelledData,
    progress: Callable[[str], None] | None = None,
    calibration: LabelledData | None = None,
    task: str = "classification",
    also_evaluate: dict[str, LabelledData] | None = None,
    baseline: Baseline | None = None,
    result_output: str | None = None,
) -> CompressionResult:
    """Apply ``recipe`` to a trained logits ``model`` (or to ONNX bytes: then only ONNX-side
    steps apply); the baseline is ``model`` as given. ``result_output`` names the ONNX output
    that holds the result (a converted classifier's probabilities); default: the first."""
    say = progress or (lambda msg: log.info(msg))
    onnx_source = isinstance(model, bytes | bytearray)
    has_labels = evaluation.labels is not None and task == "classification"
    check_plan(recipe, onnx_source=onnx_source, train=train, task=task, labels=has_labels)
    if onnx_source:
        check_graph(recipe, bytes(model))
    if baseline is None:
        baseline = measure_baseline(
            model,
            example_input=example_input,
            evaluation=evaluation,
            task=task,
            also_evaluate=also_evaluate,
            result_output=result_output,
        )
        say(f"baseline: {_describe(baseline.metrics)}")

    if onnx_source:
        state = _State(model=None, original=None, onnx_bytes=bytes(model))
    else:
        state = _State(model=copy.deepcopy(model), original=model)
    ctx = _Context(
        example_input,
        train,
        evaluation,
        calibration or train,
        task,
        say,
        baseline,
        also_evaluate,
        recipe=recipe,
        result_output=result_output,
    )
    steps: list[dict] = []
    for index, step in enumerate(recipe.steps):
        say(f"step {index} {step.step} ...")
        detail = _APPLY[type(step)](step, state, ctx)
        metrics = _measure(state, ctx)
        steps.append({"index": index, "step": step.step, **detail, **metrics})
        say(f"step {index} {step.step}: {_describe(metrics)}")

    if state.onnx_bytes is None:
        state.onnx_bytes = state.measured
    final = {k: v for k, v in steps[-1].items() if k in _METRIC_KEYS}
    gate = _gate(recipe, baseline.metrics, final, task, evaluation)
    metrics = {
        "baseline": baseline.metrics,
        "steps": steps,
        "final": final,
        "gate": gate,
        "notes": state.notes,
        "unstructured_sparsity_note": UNSTRUCTURED_NOTE
        if UNSTRUCTURED_NOTE in state.notes
        else None,
    }
    if not gate["passed"]:
        raise AccuracyGateError(gate["message"], metrics=metrics)
    if gate.get("uncertainty"):
        say(f"gate passed: {gate['uncertainty']}")
    return CompressionResult(state.onnx_bytes, baseline.onnx_bytes, metrics, recipe)


_METRIC_KEYS = (
    "params",
    "conv_params",
    "nonzero_params",
    "onnx_bytes",
    "zipped_bytes",
    "rows_per_s_1thread",
    "accuracy",
    "accuracy_interval",
    "fidelity",
    "vs_baseline",
    "also",
)


@dataclass
class _Context:
    example_input: torch.Tensor | None
    train: LabelledData | None
    evaluation: LabelledData
    calibration: LabelledData | None
    task: str
    say: Callable[[str], None]
    baseline: Baseline
    also_evaluate: dict[str, LabelledData] | None
    recipe: Recipe | None = None
    result_output: str | None = None

    def epochs(self, label: str, total: int):
        def report(epoch: int, loss: float) -> None:
            self.say(f"  {label} epoch {epoch + 1}/{total} loss {loss:.4f}")

        return report


def _measure(state: _State, ctx: _Context) -> dict:
    """Export (torch side) and evaluate the model as it stands against the baseline."""
    onnx_now = state.onnx_bytes or export_onnx(_served(state.model, ctx.task), ctx.example_input)
    state.measured = onnx_now
    params = count_params(state.model) if state.model is not None else None
    metrics, outputs = evaluate_onnx(
        onnx_now,
        ctx.evaluation.features,
        ctx.evaluation.labels,
        ctx.baseline.outputs,
        params=params,
        task=ctx.task,
        output=ctx.result_output,
        batches=ctx.evaluation.batches,
    )
    _add_interval(metrics, ctx.baseline.metrics["distinct_examples"])
    if state.model is not None:
        metrics["nonzero_params"] = count_nonzero_params(state.model)
        metrics["conv_params"] = conv_params(state.model)
    base = ctx.baseline.metrics
    metrics["vs_baseline"] = {
        "onnx_bytes_smaller": round(base["onnx_bytes"] / metrics["onnx_bytes"], 2),
        "zipped_bytes_smaller": round(base["zipped_bytes"] / metrics["zipped_bytes"], 2),
        "speedup_1thread": round(metrics["rows_per_s_1thread"] / base["rows_per_s_1thread"], 2),
        "params_fewer": round(base["params"] / metrics["params"], 2) if metrics["params"] else None,
    }
    if base.get("accuracy") is not None and metrics["accuracy"] is not None:
        metrics["vs_baseline"]["accuracy_drop_points"] = round(
            100.0 * (base["accuracy"] - metrics["accuracy"]), 3
        )
    if ctx.also_evaluate:
        session = single_thread_session(onnx_now)
        metrics["also"] = {
            name: _also_metrics(
                run_onnx(session, data.features, output=ctx.result_output, batches=data.batches),
                ctx.baseline.also_outputs[name],
                data,
                ctx.task,
            )
            for name, data in ctx.also_evaluate.items()
        }
    return metrics


def _torch_accuracy(model: nn.Module, ctx: _Context) -> dict:
    """Accuracy of a torch model on the evaluation data and each extra held-out set."""
    out = {}
    sets = {"evaluation": ctx.evaluation, **(ctx.also_evaluate or {})}
    for name, data in sets.items():
        if data.labels is not None:
            probs = predict_proba(model, data.features)
            out[name] = round(float(np.mean(probs.argmax(1) == data.labels)), 5)
    return out


def _apply_distill(step: DistillStep, state: _State, ctx: _Context) -> dict:
    from leanscore.compression.distill import distill
    from leanscore.compression.models import shrink

    teacher = state.model
    torch.manual_seed(step.seed)
    if step.student_factory:
        from leanscore.compression.sources import import_factory

        student = import_factory(step.student_factory)(**step.student_kwargs)
    else:
        student = shrink(teacher, width=step.width, depth=step.depth)
    untrained = copy.deepcopy(student)
    train = ctx.train
    distill(
        student,
        teacher,
        train.features,
        train.labels,
        epochs=step.epochs,
        temperature=step.temperature,
        alpha=step.alpha,
        lr=step.lr,
        seed=step.seed,
        progress=ctx.epochs("distill", step.epochs),
    )
    detail = {
        "teacher_params": count_params(teacher),
        "student_params": count_params(student),
        "student_fraction_of_teacher": round(count_params(student) / count_params(teacher), 4),
        "temperature": step.temperature,
        "alpha": step.alpha,
        "epochs": step.epochs,
        "teacher_accuracy": _torch_accuracy(teacher, ctx),
        "distilled_student_accuracy": _torch_accuracy(student, ctx),
    }
    if step.compare_hard_labels and train.labels is not None:
        ctx.say("  the same student on hard labels alone, for comparison")
        train_classifier(
            untrained,
            train.features,
            train.labels,
            epochs=step.epochs,
            lr=step.lr,
            seed=step.seed,
            progress=ctx.epochs("hard-label student", step.epochs),
        )
        detail["hard_label_student_accuracy"] = _torch_accuracy(untrained, ctx)
        detail["distillation_gain_points"] = {
            name: round(100 * (acc - detail["hard_label_student_accuracy"][name]), 3)
            for name, acc in detail["distilled_student_accuracy"].items()
        }
    state.model = student
    return detail


def _apply_factorize(step: FactorizeStep, state: _State, ctx: _Context) -> dict:
    from leanscore.compression.distill import distill
    from leanscore.compression.factorize import factorize_linears, separable_convs

    teacher = copy.deepcopy(state.model)
    before = {"params": count_params(state.model), "conv_params": conv_params(state.model)}
    if step.method == "low_rank":
        layers = factorize_linears(
            state.model, rank=step.rank, energy=step.energy, skip_last=step.skip_last
        )
    else:
        layers = separable_convs(state.model, min_in_channels=step.min_in_channels)
    if not any(layer["replaced"] for layer in layers):
        raise RecipeError(
            f"factorize ({step.method}) found nothing to replace: no layer gets smaller "
            f"({layers}); lower 'rank'/'energy' or drop the step"
        )
    detail = {
        "method": step.method,
        "layers": layers,
        "params_before": before["params"],
        "conv_params_before": before["conv_params"],
        "accuracy_before_distillation": _torch_accuracy(state.model, ctx),
    }
    if step.distill_epochs:
        distill(
            state.model,
            teacher,
            ctx.train.features,
            ctx.train.labels,
            epochs=step.distill_epochs,
            temperature=step.temperature,
            alpha=step.alpha,
            lr=step.lr,
            progress=ctx.epochs("factorize distill", step.distill_epochs),
        )
        detail["accuracy_after_distillation"] = _torch_accuracy(state.model, ctx)
    return detail


def _apply_sparsify(step: SparsifyStep, state: _State, ctx: _Context) -> dict:
    from leanscore.compression.sparsify import l1_finetune, near_zero_fraction

    before = near_zero_fraction(state.model, step.near_zero)
    l1_finetune(
        state.model,
        ctx.train.features,
        ctx.train.labels,
        strength=step.strength,
        epochs=step.epochs,
        lr=step.lr,
        zero_below=step.zero_below,
        progress=ctx.epochs("sparsify", step.epochs),
    )
    from leanscore.compression.prune import weight_sparsity

    return {
        "strength": step.strength,
        "near_zero_threshold": step.near_zero,
        "near_zero_fraction_before": round(before, 4),
        "near_zero_fraction_after": round(near_zero_fraction(state.model, step.near_zero), 4),
        "weight_sparsity": round(weight_sparsity(state.model), 4),
    }


def _apply_prune(step: PruneStep, state: _State, ctx: _Context) -> dict:
    from leanscore.compression.prune import MagnitudeMask, structured_prune, weight_sparsity

    before = count_params(state.model)
    mask = None
    if step.kind == "structured":
        structured_prune(state.model, ctx.example_input, ratio=step.ratio)
        note = STRUCTURED_NOTE
    else:
        mask = MagnitudeMask(state.model, sparsity=step.ratio, scope=step.scope)
        note = UNSTRUCTURED_NOTE
    if note not in state.notes:
        state.notes.append(note)
    if step.finetune_epochs and ctx.train is not None and ctx.train.labels is not None:
        train_classifier(
            state.model,
            ctx.train.features,
            ctx.train.labels,
            epochs=step.finetune_epochs,
            lr=step.lr,
            after_step=mask.apply if mask else None,
            progress=ctx.epochs("prune fine-tune", step.finetune_epochs),
        )
    return {
        "kind": step.kind,
        "ratio": step.ratio,
        "scope": step.scope if step.kind == "unstructured" else "layer",
        "params_before": before,
        "weight_sparsity": round(weight_sparsity(state.model), 4),
        "effect": note,
    }


def _apply_export(step: ExportStep, state: _State, ctx: _Context) -> dict:
    served = _served(state.model, ctx.task)
    state.onnx_bytes = export_onnx(served, ctx.example_input, opset=step.opset)
    diff = check_parity(
        served, state.onnx_bytes, ctx.evaluation.features[:512], atol=step.parity_atol
    )
    state.model = None
    return {"opset": step.opset, "parity_max_abs_diff": diff, "parity_atol": step.parity_atol}


def quantize_bytes(
    onnx_bytes: bytes,
    *,
    mode: str,
    per_channel: bool,
    calibration: np.ndarray | None,
    method: str = "minmax",
    percentile: float = 99.999,
    exclude: list[str] | None = None,
    exclude_op_types: list[str] | None = None,
    pre_process: bool = True,
) -> bytes:
    from leanscore.compression import quantize as q

    if mode == "dynamic_int8":
        return q.dynamic_int8(
            onnx_bytes, per_channel=per_channel, nodes_to_exclude=exclude, pre_process=pre_process
        )
    if mode == "static_int8":
        if calibration is None:
            raise RecipeError("static_int8 needs calibration rows; give data.calibration or train")
        return q.static_int8(
            onnx_bytes,
            calibration,
            per_channel=per_channel,
            method=method,
            percentile=percentile,
            nodes_to_exclude=exclude,
            pre_process=pre_process,
        )
    return q.float16(onnx_bytes, nodes_to_exclude=exclude, op_types=exclude_op_types)


def _apply_quantize(step: QuantizeStep, state: _State, ctx: _Context) -> dict:
    from leanscore.compression.quantize import nodes_to_exclude

    excluded = nodes_to_exclude(
        state.onnx_bytes, names=step.exclude_nodes, op_types=step.exclude_op_types
    )
    calibration = None
    if ctx.calibration is not None:
        rows = ctx.calibration.features
        pick = np.random.default_rng(0).permutation(len(rows))[: step.calibration_rows]
        calibration = rows[np.sort(pick)]
        if ctx.calibration.batches is None:
            calibration = np.ascontiguousarray(calibration, dtype=np.float32)
        else:  # rows the model does not read as they are (texts): the calls scoring makes
            from leanscore.compression.quantize import FeedsCalibrationReader

            calls = ctx.calibration.batches(calibration, CALIBRATION_CALL_ROWS)
            calibration = FeedsCalibrationReader([feed for _, feed in calls], rows=len(calibration))
    options = dict(
        calibration=calibration,
        method=step.calibration,
        percentile=step.percentile,
        exclude=excluded,
        exclude_op_types=step.exclude_op_types,
        pre_process=step.pre_process,
    )
    float_bytes = state.onnx_bytes
    state.onnx_bytes = quantize_bytes(
        float_bytes, mode=step.mode, per_channel=step.per_channel, **options
    )
    detail = {
        "mode": step.mode,
        "per_channel": step.per_channel if step.mode != "fp16" else None,
        "calibration": step.calibration if step.mode == "static_int8" else None,
        "calibration_rows": None if calibration is None else len(calibration),
        "excluded_nodes": excluded,
    }
    if step.compare:
        detail["alternatives"] = _quantize_alternatives(step, float_bytes, options, ctx)
    return detail


def _quantize_alternatives(step: QuantizeStep, float_bytes: bytes, options: dict, ctx) -> list:
    """Every int8 variant (dynamic/static x per-channel/per-tensor) and fp16, measured side by
    side on the same data, so the report shows why the chosen one was chosen."""
    variants = [("dynamic_int8", True), ("dynamic_int8", False), ("static_int8", True)]
    variants += [("static_int8", False), ("fp16", None)]
    rows = []
    for mode, per_channel in variants:
        if mode == "static_int8" and options["calibration"] is None:
            continue
        data = quantize_bytes(float_bytes, mode=mode, per_channel=bool(per_channel), **options)
        m, _ = evaluate_onnx(
            data,
            ctx.evaluation.features,
            ctx.evaluation.labels,
            ctx.baseline.outputs,
            task=ctx.task,
            output=ctx.result_output,
            batches=ctx.evaluation.batches,
        )
        rows.append(
            {
                "mode": mode,
                "per_channel": per_channel,
                "chosen": mode == step.mode and (per_channel in (None, step.per_channel)),
                **{k: m[k] for k in ("onnx_bytes", "zipped_bytes", "rows_per_s_1thread")},
                "accuracy": m["accuracy"],
                "fidelity": m["fidelity"],
            }
        )
        ctx.say(f"  quantize alternative {mode} per_channel={per_channel}: {_describe(m)}")
    return rows


def _apply_truncate_trees(step: TruncateTreesStep, state: _State, ctx: _Context) -> dict:
    from leanscore.compression.tree_step import truncate_within_budget
    from leanscore.compression.trees import TreeEnsembleError

    budget = ctx.recipe
    try:
        state.onnx_bytes, detail = truncate_within_budget(
            state.onnx_bytes,
            ctx.evaluation,
            ctx.baseline.outputs,
            stages=step.stages,
            min_stages=step.min_stages,
            stride=step.stride,
            max_accuracy_drop=None if budget is None else budget.max_accuracy_drop,
            min_fidelity=None if budget is None else budget.min_fidelity,
            task=ctx.task,
            output=ctx.result_output,
            say=ctx.say,
        )
    except TreeEnsembleError as err:
        raise RecipeError(f"truncate_trees: {err}") from None
    return detail


_APPLY = {
    DistillStep: _apply_distill,
    FactorizeStep: _apply_factorize,
    SparsifyStep: _apply_sparsify,
    PruneStep: _apply_prune,
    ExportStep: _apply_export,
    QuantizeStep: _apply_quantize,
    TruncateTreesStep: _apply_truncate_trees,
}
# the steps that work on an ONNX graph, by name, for the errors that list them
ONNX_STEPS = tuple(
    sorted(get_args(s.model_fields["step"].annotation)[0] for s in _APPLY if s.side == "onnx")
)


def _fidelity_value(metrics: dict, task: str) -> float | None:
    fid = metrics.get("fidelity") or {}
    return fid.get("cosine_mean") if task == "embedding" else fid.get("agreement")


def _gate(recipe: Recipe, baseline: dict, final: dict, task: str, evaluation) -> dict:
    n = baseline.get("distinct_examples") or distinct_examples(evaluation)
    gate = {
        "evaluated_on": evaluation.source or {"rows": len(evaluation.features)},
        "rows": len(evaluation.features),
        "distinct_examples": n,
        "max_accuracy_drop": recipe.max_accuracy_drop,
        "min_fidelity": recipe.min_fidelity,
        "accuracy_drop_points": None,
        "fidelity": _fidelity_value(final, task),
    }
    problems = []
    if baseline.get("accuracy") is not None and final.get("accuracy") is not None:
        drop = 100.0 * (baseline["accuracy"] - final["accuracy"])
        gate["accuracy_drop_points"] = round(drop, 3)
        final["accuracy_drop_points"] = round(drop, 3)
        gate["accuracy_interval"] = accuracy_interval(final["accuracy"], n)
        gate["baseline_accuracy_interval"] = accuracy_interval(baseline["accuracy"], n)
        gate["uncertainty"] = uncertainty_text(
            baseline["accuracy"], final["accuracy"], n, budget_points=recipe.max_accuracy_drop
        )
        if recipe.max_accuracy_drop is not None and drop > recipe.max_accuracy_drop:
            problems.append(
                f"loses {drop:.2f} accuracy points ({100 * baseline['accuracy']:.2f}% -> "
                f"{100 * final['accuracy']:.2f}%), over its budget "
                f"max_accuracy_drop={recipe.max_accuracy_drop}"
            )
    if recipe.min_fidelity is not None and gate["fidelity"] < recipe.min_fidelity:
        what = "mean cosine" if task == "embedding" else "agreement with the baseline"
        problems.append(
            f"keeps {what} {gate['fidelity']:.4f}, under its budget "
            f"min_fidelity={recipe.min_fidelity}"
        )
    gate["passed"] = not problems
    if problems:
        gate["message"] = (
            f"recipe {recipe.name!r} " + " and ".join(problems) + f" on {gate['rows']} held-out "
            f"rows ({n} distinct examples); no artifact was written. "
            + (f"{gate['uncertainty']} " if gate.get("uncertainty") else "")
            + f"Final model: {_describe(final)}; baseline: {_describe(baseline)}. Compress "
            "less, fine-tune longer, or raise the budget."
        )
    return gate


def uncertainty_text(
    baseline_accuracy: float, accuracy: float, n: int, *, budget_points: float | None = None
) -> str:
    """How far an accuracy measured on ``n`` distinct examples can be trusted, in words."""
    low, high = accuracy_interval(accuracy, n)
    b_low, b_high = accuracy_interval(baseline_accuracy, n)
    half = 100 * (b_high - b_low) / 2
    text = (
        f"Accuracy measured on {n:,} distinct held-out examples (one example = "
        f"{100 / n:.2f} points): baseline {100 * baseline_accuracy:.2f}% "
        f"[{100 * b_low:.1f}, {100 * b_high:.1f}], this model {100 * accuracy:.2f}% "
        f"[{100 * low:.1f}, {100 * high:.1f}] (95% intervals, about +-{half:.1f} points)"
    )
    if budget_points:
        where = "within" if budget_points <= half else "beyond"
        text += f"; a {budget_points:g}-point drop is {where} that noise"
    return text + "."


def _describe(m: dict) -> str:
    acc = "n/a" if m.get("accuracy") is None else f"{100 * m['accuracy']:.2f}%"
    if m.get("accuracy_interval"):
        low, high = m["accuracy_interval"]
        acc += f" [{100 * low:.1f}, {100 * high:.1f}]"
    fid = m.get("fidelity") or {}
    agree = fid.get("agreement", fid.get("cosine_mean"))
    agree_text = "" if agree is None else f" fidelity={agree:.4f}"
    return (
        f"params={m['params']:,} bytes={m['onnx_bytes']:,} zipped={m['zipped_bytes']:,} "
        f"rows/s(1 thread)={m['rows_per_s_1thread']:,.0f} accuracy={acc}{agree_text}"
    )
