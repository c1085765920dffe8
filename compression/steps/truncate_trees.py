"""``truncate_trees``: keep the first k boosting stages of a tree ensemble, the fewest within
the recipe's budget (``leanscore.compression.tree_step``)."""

from __future__ import annotations

from typing import ClassVar, Literal

from leanscore.compression.steps.base import RecipeError, Step, StepContext, StepState
from pydantic import Field


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
        from leanscore.compression.tree_step import truncate_within_budget
        from leanscore.compression.trees import TreeEnsembleError

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
        except TreeEnsembleError as err:
            raise RecipeError(f"truncate_trees: {err}") from None
        return detail
