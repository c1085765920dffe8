"""``truncate_trees``: keep the first k boosting stages of a tree ensemble, the fewest within
the recipe's budget (``leanscore.compression.trees`` reads and cuts the graph).

Every candidate is a real cut graph run by ONNX Runtime on the evaluation rows, so what is
chosen is what the gate then measures. The stages are tried from the fewest up and the first
within budget is kept: accuracy need not grow monotonically with the number of trees, so a
bisection could skip the smallest good count. The rows the count is chosen on are the rows the
gate decides on; report an unbiased figure with ``data.also_evaluate``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, Literal

from leanscore.compression.steps.base import RecipeError, Step, StepContext, StepState
from pydantic import Field

if TYPE_CHECKING:  # the step registry loads without onnx: it is imported where the work is
    import numpy as np
    from leanscore.compression.data import LabelledData


class TruncateTreesStep(Step):
    """Keep the first k boosting stages of a tree ensemble (``ai.onnx.ml`` TreeEnsemble-
    Classifier/Regressor, as skl2onnx or onnxmltools convert scikit-learn, LightGBM and XGBoost
    models): the fewest whose held-out accuracy and agreement stay within the recipe's budget,
    or exactly ``stages``. Quantization does not apply to trees (their thresholds and leaf
    weights are node attributes ONNX Runtime's quantizers leave as they are)."""

    side: ClassVar[str] = "onnx"
    families: ClassVar[frozenset[str]] = frozenset({"tabular", "onnx_model"})
    tasks: ClassVar[frozenset[str]] = frozenset({"classification", "regression"})

    step: Literal["truncate_trees"]
    stages: int | None = Field(
        default=None, ge=1, description="keep exactly this many stages; default: search"
    )
    min_stages: int = Field(default=1, ge=1, description="the search starts here")
    stride: int = Field(default=1, ge=1, description="the search tries every stride-th count")

    def check_graph(self, ops: set[str], where: str) -> None:
        from leanscore.compression import trees

        if not ops & set(trees.TREE_OPS):
            raise RecipeError(
                f"{where} cuts a tree ensemble, but the graph holds none (its ops: "
                f"{sorted(ops)}); remove the step"
            )

    def apply(self, state: StepState, ctx: StepContext) -> dict:
        from leanscore.compression import trees

        budget = ctx.recipe
        try:
            state.onnx_bytes, detail = truncate_within_budget(
                state.onnx_bytes,
                ctx.evaluation,
                ctx.baseline.outputs,
                stages=self.stages,
                min_stages=self.min_stages,
                stride=self.stride,
                max_accuracy_drop=None if budget is None else budget.max_accuracy_drop,
                min_fidelity=None if budget is None else budget.min_fidelity,
                task=ctx.task,
                output=ctx.result_output,
                say=ctx.say,
            )
        except trees.TreeEnsembleError as err:
            raise RecipeError(f"truncate_trees: {err}") from None
        return detail


def _within(acc, agreement, base_acc, *, max_accuracy_drop, min_fidelity) -> bool:
    measurable = max_accuracy_drop is not None and acc is not None and base_acc is not None
    if measurable and 100.0 * (base_acc - acc) > max_accuracy_drop + 1e-9:
        return False
    if min_fidelity is None:
        return True
    return agreement is not None and agreement >= min_fidelity


def truncate_within_budget(
    onnx_bytes: bytes,
    evaluation: LabelledData,
    baseline_outputs: np.ndarray,
    *,
    stages: int | None,
    min_stages: int = 1,
    stride: int = 1,
    max_accuracy_drop: float | None,
    min_fidelity: float | None,
    task: str,
    output: str | None,
    say: Callable[[str], None] = lambda msg: None,
) -> tuple[bytes, dict]:
    """(the cut graph, what the step reports): stages and trees before and after, bytes,
    accuracy with its Wilson 95% interval, agreement with the full model, and the curve of
    every count tried."""
    from leanscore.compression import trees
    from leanscore.compression.evaluate import accuracy, fidelity, run_onnx, single_thread_session

    before = trees.describe(onnx_bytes)
    labels = evaluation.labels if task == "classification" else None
    base_acc = accuracy(baseline_outputs, labels, task=task)

    def measure(k: int) -> tuple[bytes, float | None, float | None]:
        cut = trees.truncate(onnx_bytes, k)
        out = run_onnx(single_thread_session(cut), evaluation.features, output=output)
        # None where the task has no classes to agree on: never a made-up perfect 1.0
        agreement = fidelity(out, baseline_outputs, task=task).get("agreement")
        return cut, accuracy(out, labels, task=task), agreement

    if stages is not None:
        if stages > before.stages:
            raise trees.TreeEnsembleError(
                f"stages is {stages} but the ensemble has {before.stages} stages"
            )
        cut, acc, agreement = measure(stages)
        curve = [[stages, acc, agreement]]
    else:
        if task != "classification" or (labels is None and min_fidelity is None):
            raise trees.TreeEnsembleError(
                "searching for the fewest stages needs a budget it can measure: a classifier "
                "with labelled evaluation rows (max_accuracy_drop) or min_fidelity; for other "
                "models give 'stages'"
            )
        budget = {"max_accuracy_drop": max_accuracy_drop, "min_fidelity": min_fidelity}
        counts = [*range(min(min_stages, before.stages), before.stages, stride), before.stages]
        curve = []
        for k in counts:
            cut, acc, agreement = measure(k)
            curve.append([k, acc, agreement])
            if _within(acc, agreement, base_acc, **budget):
                break
        say(
            f"  truncate_trees: {curve[-1][0]} of {before.stages} stages is the fewest within "
            f"budget ({len(curve)} counts tried)"
        )
    detail = _report(before, trees.describe(cut), onnx_bytes, cut, evaluation, curve)
    detail["chosen_by"] = "given" if stages is not None else "fewest stages within budget"
    if acc is not None:
        detail.update(_accuracy_intervals(acc, base_acc, evaluation))
    return cut, detail


def _report(before, after, onnx_bytes: bytes, cut: bytes, evaluation, curve: list) -> dict:
    return {
        "op_type": before.op_type,
        "trees_per_stage": before.trees_per_stage,
        "stages_before": before.stages,
        "stages_after": after.stages,
        "trees_before": before.trees,
        "trees_after": after.trees,
        "nodes_before": before.nodes,
        "nodes_after": after.nodes,
        "bytes_before": len(onnx_bytes),
        "bytes_after": len(cut),
        "selected_on": {"rows": len(evaluation.features), **evaluation.source},
        "agreement_with_full_model": curve[-1][2],
        "curve": curve,
        "curve_columns": ["stages", "accuracy", "agreement_with_full_model"],
        "effect": f"{before.trees} -> {after.trees} trees",
    }


def _accuracy_intervals(acc: float, base_acc: float, evaluation: LabelledData) -> dict:
    """Wilson 95% intervals of the cut and the full model's accuracy; copies of one example
    are not independent draws, so the interval counts distinct ones."""
    from leanscore.compression.evaluate import accuracy_interval, distinct_rows

    n = int((evaluation.source or {}).get("distinct_examples") or 0) or distinct_rows(
        evaluation.features
    )
    low, high = accuracy_interval(acc, n)
    base_low, base_high = accuracy_interval(base_acc, n)
    return {
        "distinct_examples": n,
        "accuracy_interval_95": {"low": low, "high": high, "method": "wilson"},
        "full_model_accuracy": base_acc,
        "full_model_accuracy_interval_95": {"low": base_low, "high": base_high},
    }
