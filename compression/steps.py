"""The recipe's step schemas: what each step is, its options and their legal ranges.

Kept apart from the code that runs them so a recipe file can be validated without torch work.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: where the step runs: on the PyTorch module, or on the exported ONNX graph
    side: ClassVar[str] = "torch"


class DistillStep(_Step):
    """Teacher (the model as it stands) -> a smaller student, trained on temperature-softened
    teacher outputs plus hard labels."""

    step: Literal["distill"]
    width: float = Field(default=0.5, gt=0.0, le=1.0, description="student width / teacher's")
    depth: int | None = Field(default=None, ge=1, description="hidden layers the student keeps")
    student_factory: str | None = Field(default=None, pattern=r"^[\w.]+:\w+$")
    student_kwargs: dict[str, Any] = Field(default_factory=dict)
    epochs: int = Field(default=20, ge=1)
    temperature: float = Field(default=4.0, gt=0.0)
    alpha: float = Field(default=0.7, ge=0.0, le=1.0, description="weight of the soft term")
    lr: float = Field(default=2e-3, gt=0)
    seed: int = 0
    compare_hard_labels: bool = Field(
        default=True, description="also train the same student on hard labels alone and report"
    )


class FactorizeStep(_Step):
    """Low-rank SVD of Linear layers, or depthwise-separable convolutions; then a short
    distillation from the unfactorized model."""

    step: Literal["factorize"]
    method: Literal["low_rank", "depthwise_separable"]
    rank: int | None = Field(default=None, ge=1)
    energy: float | None = Field(default=None, gt=0.0, le=1.0)
    skip_last: bool = Field(default=True, description="leave the output layer whole")
    min_in_channels: int = Field(default=2, ge=1)
    distill_epochs: int = Field(default=5, ge=0)
    temperature: float = Field(default=4.0, gt=0.0)
    alpha: float = Field(default=0.7, ge=0.0, le=1.0)
    lr: float = Field(default=1e-3, gt=0)

    @model_validator(mode="after")
    def _rank_or_energy(self) -> FactorizeStep:
        given = (self.rank is not None) + (self.energy is not None)
        if self.method == "low_rank" and given != 1:
            raise ValueError("method 'low_rank' needs exactly one of 'rank' or 'energy'")
        if self.method == "depthwise_separable" and given:
            raise ValueError("'rank' and 'energy' apply to method 'low_rank' only")
        return self


class SparsifyStep(_Step):
    """L1-regularised fine-tuning: drives weights towards zero, feeding a magnitude prune."""

    step: Literal["sparsify"]
    strength: float = Field(gt=0.0, description="L1 weight on the mean absolute weight")
    epochs: int = Field(default=5, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    zero_below: float | None = Field(default=None, ge=0.0)
    near_zero: float = Field(default=1e-3, gt=0.0, description="threshold reported as near zero")


class PruneStep(_Step):
    step: Literal["prune"]
    kind: Literal["structured", "unstructured"]
    ratio: float = Field(gt=0.0, lt=1.0, description="fraction of neurons (structured) or weights")
    scope: Literal["global", "layer"] = Field(
        default="global", description="unstructured only: one threshold, or one per layer"
    )
    finetune_epochs: int = Field(default=5, ge=0)
    lr: float = Field(default=1e-3, gt=0)


class ExportStep(_Step):
    side: ClassVar[str] = "export"
    step: Literal["export"]
    opset: int = Field(default=20, ge=13)
    parity_atol: float = Field(default=1e-4, gt=0)


class QuantizeStep(_Step):
    """ONNX Runtime quantization. The defaults are the variant measured best on the example
    models (see the report's quantize alternatives)."""

    side: ClassVar[str] = "onnx"
    step: Literal["quantize"]
    mode: Literal["dynamic_int8", "static_int8", "fp16"] = "static_int8"
    per_channel: bool = True
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    percentile: float = Field(default=99.999, gt=90.0, le=100.0)
    calibration_rows: int = Field(default=1024, ge=1)
    exclude_nodes: list[str] = Field(default_factory=list)
    exclude_op_types: list[str] = Field(default_factory=list)
    pre_process: bool = True
    compare: bool = Field(
        default=False,
        description="also build and measure the other int8 variants and fp16, and report them",
    )


class TruncateTreesStep(_Step):
    """Keep the first k boosting stages of a tree ensemble (``ai.onnx.ml`` TreeEnsemble-
    Classifier/Regressor, as skl2onnx or onnxmltools convert scikit-learn, LightGBM and XGBoost
    models): the fewest whose held-out accuracy and agreement stay within the recipe's budget,
    or exactly ``stages``. Quantization does not apply to trees (their thresholds and leaf
    weights are node attributes ONNX Runtime's quantizers leave as they are)."""

    side: ClassVar[str] = "onnx"
    step: Literal["truncate_trees"]
    stages: int | None = Field(
        default=None, ge=1, description="keep exactly this many stages; default: search"
    )
    min_stages: int = Field(default=1, ge=1, description="the search starts here")
    stride: int = Field(default=1, ge=1, description="the search tries every stride-th count")


Step = Annotated[
    DistillStep
    | FactorizeStep
    | SparsifyStep
    | PruneStep
    | ExportStep
    | QuantizeStep
    | TruncateTreesStep,
    Field(discriminator="step"),
]
