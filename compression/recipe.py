"""Recipes: an ordered list of compression steps and the accuracy budget they must keep.

``run_recipe`` applies the steps in the order the recipe lists them, evaluates the model after
every step against the uncompressed baseline on held-out data, and refuses
(``AccuracyGateError``) a result that loses more than the recipe allows. Every accuracy carries
its Wilson 95% interval over the distinct held-out examples it was measured on, and the gate
says how many there are: on the digits' 450 held-out images one example is 0.22 points and the
interval spans about +-1.5 points, so a 1-point drop is within the noise of the measurement.

The steps themselves are registered step classes (``leanscore.compression.steps``: one module
per step, holding its options and its code); this module is the engine: it checks a recipe
against the model's family, task and data, runs the steps, measures after each, and gates.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Union

import numpy as np
import torch
from leanscore.compression.data import LabelledData
from leanscore.compression.errors import LeanscoreError, RecipeError
from leanscore.compression.evaluate import (
    accuracy_interval,
    describe_metrics,
    distinct_rows,
    evaluate_onnx,
    fidelity,
    headline_fidelity,
    run_onnx,
    single_thread_session,
)
from leanscore.compression.models import conv_params, count_nonzero_params, count_params
from leanscore.compression.steps import registered_steps
from leanscore.compression.steps.base import StepContext, StepState
from leanscore.compression.steps.prune import UNSTRUCTURED_NOTE
from leanscore.compression.torch_export import TorchExport, tabular_export
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

log = logging.getLogger(__name__)

__all__ = [
    "AccuracyGateError",
    "Baseline",
    "CompressionResult",
    "LabelledData",
    "Recipe",
    "RecipeError",
    "measure_baseline",
    "run_recipe",
]

# Every registered step, told apart by its ``step`` name: a recipe's steps validate against
# the registry, and an unknown name is refused listing the known ones.
AnyStep = Annotated[
    Union[tuple(registered_steps().values())],  # noqa: UP007 - a Union built from the registry
    Field(discriminator="step"),
]


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
    min_cosine_p1: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="embedding only: smallest 1st-percentile cosine to the baseline accepted",
    )
    steps: list[AnyStep] = Field(min_length=1)

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


def measure_baseline(
    model: nn.Module | bytes,
    *,
    example_input: torch.Tensor | None,
    evaluation: LabelledData,
    task: str = "classification",
    also_evaluate: dict[str, LabelledData] | None = None,
    result_output: str | None = None,
    exporter: TorchExport | None = None,
) -> Baseline:
    """Export (a torch model, as ``exporter`` says; default: one float tensor in) and measure
    the model as given; ``result_output`` names the ONNX output that holds the result (default:
    the first)."""
    if isinstance(model, bytes | bytearray):
        onnx_bytes, params = bytes(model), None
    else:
        exporter = exporter or tabular_export(task, example_input)
        onnx_bytes, params = exporter.export(model, exporter.opset), count_params(model)
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
    recipe: Recipe,
    *,
    onnx_source: bool,
    train: LabelledData | None,
    task: str,
    labels: bool,
    family: str = "tabular",
) -> None:
    """Refuse, before any work, a recipe this model or this data cannot run: each step's
    declared side, families, tasks and data needs against the model's."""
    for i, step in enumerate(recipe.steps):
        where = f"recipe {recipe.name!r} steps.{i} ('{step.step}')"
        if onnx_source and step.side != "onnx":
            raise RecipeError(
                f"{where} needs a PyTorch model, but the model source is an ONNX file (a "
                "Hugging Face classifier is one too: it is exported before the recipe runs); "
                f"only ONNX-side steps ({', '.join(onnx_steps())}) apply to ONNX sources"
            )
        if family not in step.families:
            fitting = [n for n, s in registered_steps().items() if family in s.families]
            raise RecipeError(
                f"{where} applies to {', '.join(sorted(step.families))} models; this model is "
                f"{family} (its steps: {', '.join(fitting)})"
            )
        if task not in step.tasks:
            raise RecipeError(
                f"{where} applies to task {' or '.join(sorted(step.tasks))}; the task here is "
                f"{task!r}"
            )
        needs = step.needs()
        if "train" in needs and train is None:
            raise RecipeError(f"{where} needs training data; give the config a data.train")
        if "labels" in needs and (train is None or train.labels is None):
            raise RecipeError(f"{where} fine-tunes on labels; the training data has none")
    exported = onnx_source
    for i, step in enumerate(recipe.steps):
        exported = exported or step.side == "export"
        if step.side == "onnx" and not exported:
            raise RecipeError(
                f"recipe {recipe.name!r} steps.{i} ('{step.step}') needs an ONNX model; put an "
                "'export' step before it"
            )
    if recipe.min_cosine_p1 is not None and task != "embedding":
        raise RecipeError(
            f"recipe {recipe.name!r}: min_cosine_p1 gates embeddings; the task here is {task!r} "
            "(use min_fidelity or max_accuracy_drop)"
        )
    if recipe.max_accuracy_drop is not None and recipe.min_fidelity is None and not labels:
        raise RecipeError(
            f"recipe {recipe.name!r} gates on max_accuracy_drop, but the evaluation data has no "
            "labels; give data.evaluation labels or set min_fidelity instead"
        )


def onnx_steps() -> tuple[str, ...]:
    """The registered steps that work on an ONNX graph, by name, for the errors that list them."""
    return tuple(n for n, s in registered_steps().items() if s.side == "onnx")


def check_graph(recipe: Recipe, onnx_bytes: bytes) -> None:
    """Refuse, before any work, ONNX-side steps that cannot act on this graph (each step's
    ``check_graph``: truncate_trees without a tree ensemble, quantize on a tree ensemble with
    no weights it could quantize)."""
    import onnx

    graph = onnx.load_model_from_string(onnx_bytes).graph
    ops = {n.op_type for n in graph.node}
    for i, step in enumerate(recipe.steps):
        step.check_graph(ops, f"recipe {recipe.name!r} steps.{i} ('{step.step}')")


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
    family: str = "tabular",
    exporter: TorchExport | None = None,
) -> CompressionResult:
    """Apply ``recipe`` to a trained ``model`` (or to ONNX bytes: then only ONNX-side steps
    apply); the baseline is ``model`` as given. ``result_output`` names the ONNX output that
    holds the result (a converted classifier's probabilities); default: the first. ``family``
    (see ``leanscore.compression.steps.base.FAMILIES``) decides which steps apply;
    ``exporter`` how a torch model becomes ONNX (default: one float tensor in)."""
    say = progress or (lambda msg: log.info(msg))
    onnx_source = isinstance(model, bytes | bytearray)
    has_labels = evaluation.labels is not None and task == "classification"
    check_plan(
        recipe, onnx_source=onnx_source, train=train, task=task, labels=has_labels, family=family
    )
    if onnx_source:
        check_graph(recipe, bytes(model))
    exporter = exporter or tabular_export(task, example_input)
    if baseline is None:
        baseline = measure_baseline(
            model,
            example_input=example_input,
            evaluation=evaluation,
            task=task,
            also_evaluate=also_evaluate,
            result_output=result_output,
            exporter=exporter,
        )
        say(f"baseline: {describe_metrics(baseline.metrics)}")

    state = _start_state(model)
    ctx = StepContext(
        example_input=example_input,
        train=train,
        evaluation=evaluation,
        calibration=calibration or train,
        task=task,
        say=say,
        baseline=baseline,
        also_evaluate=also_evaluate,
        exporter=exporter,
        recipe=recipe,
        result_output=result_output,
        family=family,
    )
    steps = _run_steps(recipe, state, ctx)
    if state.onnx_bytes is None:
        state.onnx_bytes = state.measured
    metrics = _gated_metrics(recipe, baseline, steps, state, ctx)
    return CompressionResult(state.onnx_bytes, baseline.onnx_bytes, metrics, recipe)


def _start_state(model: nn.Module | bytes) -> StepState:
    """ONNX bytes start on the ONNX side; a torch model is copied, so the caller's stays the
    baseline."""
    if isinstance(model, bytes | bytearray):
        return StepState(model=None, original=None, onnx_bytes=bytes(model))
    return StepState(model=copy.deepcopy(model), original=model)


def _gated_metrics(
    recipe: Recipe, baseline: Baseline, steps: list[dict], state: StepState, ctx: StepContext
) -> dict:
    """The run's metrics, once the final model has passed the recipe's accuracy gate
    (``AccuracyGateError`` carries them when it has not)."""
    final = {k: v for k, v in steps[-1].items() if k in _METRIC_KEYS}
    gate = _gate(recipe, baseline.metrics, final, ctx.task, ctx.evaluation)
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
        ctx.say(f"gate passed: {gate['uncertainty']}")
    return metrics


def _run_steps(recipe: Recipe, state: StepState, ctx: StepContext) -> list[dict]:
    """Each step applied in order and measured after it: what it did and the model's numbers."""
    steps: list[dict] = []
    for index, step in enumerate(recipe.steps):
        ctx.say(f"step {index} {step.step} ...")
        detail = step.apply(state, ctx)
        state.changed = state.changed or step.side == "torch"
        metrics = _measure(state, ctx)
        steps.append({"index": index, "step": step.step, **detail, **metrics})
        ctx.say(f"step {index} {step.step}: {describe_metrics(metrics)}")
    return steps


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


def _measure(state: StepState, ctx: StepContext) -> dict:
    """Export (torch side) and evaluate the model as it stands against the baseline."""
    onnx_now = state.onnx_bytes or ctx.exporter.export(state.model, ctx.exporter.opset)
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


def _fidelity_value(metrics: dict, task: str) -> float | None:
    return headline_fidelity(metrics.get("fidelity") or {}, task)


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
    if task == "embedding":
        gate["min_cosine_p1"] = recipe.min_cosine_p1
        gate["cosine_p1"] = (final.get("fidelity") or {}).get("cosine_p1")
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
    if recipe.min_cosine_p1 is not None and gate["cosine_p1"] < recipe.min_cosine_p1:
        problems.append(
            f"keeps 1st-percentile cosine {gate['cosine_p1']:.4f}, under its budget "
            f"min_cosine_p1={recipe.min_cosine_p1}"
        )
    gate["passed"] = not problems
    if problems:
        gate["message"] = (
            f"recipe {recipe.name!r} " + " and ".join(problems) + f" on {gate['rows']} held-out "
            f"rows ({n} distinct examples); no artifact was written. "
            + (f"{gate['uncertainty']} " if gate.get("uncertainty") else "")
            + f"Final model: {describe_metrics(final)}; baseline: "
            f"{describe_metrics(baseline)}. Compress less, fine-tune longer, or raise the budget."
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
