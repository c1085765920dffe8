"""Recipes: an ordered list of compression steps and the accuracy budget they must keep.

``run_recipe`` applies the steps in order, evaluates the model after every step against the
uncompressed baseline on held-out data, and refuses (``AccuracyGateError``) a result that loses
more than the recipe allows.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from compression.evaluate import evaluate_onnx
from compression.export import check_parity, export_onnx
from compression.models import WithSoftmax, count_nonzero_params, count_params, train_classifier
from compression.prune import MagnitudeMask, structured_prune, weight_sparsity
from compression.quantize import dynamic_int8

log = logging.getLogger(__name__)


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PruneStep(_Step):
    step: Literal["prune"]
    kind: Literal["structured", "unstructured"]
    ratio: float = Field(gt=0.0, lt=1.0, description="fraction of neurons (structured) or weights")
    scope: Literal["global", "layer"] = "global"
    finetune_epochs: int = Field(default=5, ge=0)
    lr: float = Field(default=1e-3, gt=0)


class ExportStep(_Step):
    step: Literal["export"]
    opset: int = Field(default=20, ge=13)
    parity_atol: float = Field(default=1e-4, gt=0)


class QuantizeStep(_Step):
    step: Literal["quantize"]
    mode: Literal["dynamic_int8"] = "dynamic_int8"
    per_channel: bool = True
    exclude_nodes: list[str] = Field(default_factory=list)


Step = Annotated[PruneStep | ExportStep | QuantizeStep, Field(discriminator="step")]


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    max_accuracy_drop: float = Field(
        ge=0.0, description="largest accuracy loss accepted, in points (1.0 = one percent)"
    )
    steps: list[Step] = Field(min_length=1)


class AccuracyGateError(RuntimeError):
    """A compressed model lost more accuracy than its recipe accepts."""


@dataclass
class LabelledData:
    features: np.ndarray
    labels: np.ndarray | None
    source: dict = field(default_factory=dict)


@dataclass
class CompressionResult:
    onnx_bytes: bytes
    baseline_onnx_bytes: bytes
    metrics: dict
    recipe: Recipe


@dataclass
class _State:
    model: nn.Module | None
    onnx_bytes: bytes | None = None
    unstructured: bool = False


def run_recipe(
    recipe: Recipe,
    model: nn.Module,
    *,
    example_input: torch.Tensor,
    train: LabelledData,
    evaluation: LabelledData,
    progress: Callable[[str], None] | None = None,
) -> CompressionResult:
    """Apply ``recipe`` to a trained logits ``model``; the baseline is ``model`` as given."""
    say = progress or (lambda msg: log.info(msg))
    baseline_bytes = export_onnx(WithSoftmax(model), example_input)
    baseline, baseline_probs = evaluate_onnx(
        baseline_bytes, evaluation.features, evaluation.labels, None, params=count_params(model)
    )
    baseline["fidelity"] = {"agreement": 1.0, "max_abs_diff": 0.0}
    say(f"baseline: {_describe(baseline)}")

    state = _State(model=copy.deepcopy(model))
    steps: list[dict] = []
    for index, step in enumerate(recipe.steps):
        detail = _apply(step, state, example_input, train, evaluation)
        onnx_now = state.onnx_bytes or export_onnx(WithSoftmax(state.model), example_input)
        params = (
            count_params(state.model) if state.model is not None and not state.onnx_bytes else None
        )
        metrics, _ = evaluate_onnx(
            onnx_now, evaluation.features, evaluation.labels, baseline_probs, params=params
        )
        if state.model is not None:
            metrics["nonzero_params"] = count_nonzero_params(state.model)
        entry = {"index": index, "step": step.step, **detail, **metrics}
        steps.append(entry)
        say(f"step {index} {step.step}: {_describe(metrics)}")

    if state.onnx_bytes is None:
        state.onnx_bytes = export_onnx(WithSoftmax(state.model), example_input)
    final, _ = evaluate_onnx(
        state.onnx_bytes,
        evaluation.features,
        evaluation.labels,
        baseline_probs,
        params=steps[-1]["params"],
    )
    metrics = {
        "baseline": baseline,
        "steps": steps,
        "final": final,
        "unstructured_sparsity_note": (
            "unstructured zeros shrink the zipped file but do not speed up dense CPU kernels"
            if state.unstructured
            else None
        ),
    }
    _gate(recipe, baseline, final)
    return CompressionResult(state.onnx_bytes, baseline_bytes, metrics, recipe)


def _apply(step, state: _State, example_input, train: LabelledData, evaluation) -> dict:
    if isinstance(step, PruneStep):
        if state.model is None:
            raise ValueError("step 'prune' needs a torch model; put it before 'export'")
        before = count_params(state.model)
        mask = None
        if step.kind == "structured":
            structured_prune(state.model, example_input, ratio=step.ratio)
        else:
            mask = MagnitudeMask(state.model, sparsity=step.ratio, scope=step.scope)
            state.unstructured = True
        if step.finetune_epochs and train.labels is not None:
            train_classifier(
                state.model,
                train.features,
                train.labels,
                epochs=step.finetune_epochs,
                lr=step.lr,
                after_step=mask.apply if mask else None,
            )
        return {
            "kind": step.kind,
            "ratio": step.ratio,
            "params_before": before,
            "weight_sparsity": round(weight_sparsity(state.model), 4),
        }
    if isinstance(step, ExportStep):
        if state.model is None:
            raise ValueError("step 'export' appears twice; the model is already ONNX")
        served = WithSoftmax(state.model)
        state.onnx_bytes = export_onnx(served, example_input, opset=step.opset)
        diff = check_parity(
            served, state.onnx_bytes, evaluation.features[:512], atol=step.parity_atol
        )
        state.model = None
        return {"parity_max_abs_diff": diff}
    if isinstance(step, QuantizeStep):
        if state.onnx_bytes is None:
            raise ValueError("step 'quantize' needs an ONNX model; put 'export' before it")
        state.onnx_bytes = dynamic_int8(
            state.onnx_bytes, per_channel=step.per_channel, nodes_to_exclude=step.exclude_nodes
        )
        return {"mode": step.mode, "per_channel": step.per_channel}
    raise TypeError(f"unknown step {step!r}")  # pragma: no cover - pydantic rejects these


def _gate(recipe: Recipe, baseline: dict, final: dict) -> None:
    if baseline["accuracy"] is None or final["accuracy"] is None:
        return
    drop = 100.0 * (baseline["accuracy"] - final["accuracy"])
    final["accuracy_drop_points"] = round(drop, 3)
    if drop > recipe.max_accuracy_drop:
        raise AccuracyGateError(
            f"recipe {recipe.name!r} loses {drop:.2f} accuracy points "
            f"({100 * baseline['accuracy']:.2f}% -> {100 * final['accuracy']:.2f}%), over its "
            f"budget max_accuracy_drop={recipe.max_accuracy_drop}; no artifact was written. "
            "Prune less, fine-tune longer, or raise the budget."
        )


def _describe(m: dict) -> str:
    acc = "n/a" if m.get("accuracy") is None else f"{100 * m['accuracy']:.2f}%"
    return (
        f"params={m['params']:,} bytes={m['onnx_bytes']:,} zipped={m['zipped_bytes']:,} "
        f"rows/s(1 thread)={m['rows_per_s_1thread']:,.0f} accuracy={acc}"
    )
