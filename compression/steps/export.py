"""``export``: the torch model (as the recipe has left it) to ONNX, checked against PyTorch on
held-out rows; the steps after it work on the ONNX graph. How a model is exported is its
family's (``leanscore.compression.torch_export.TorchExport``): one float tensor for tabular
and image models, token ids and a mask for a text encoder (TorchScript exporter, opset 17
tested)."""

from __future__ import annotations

from typing import ClassVar, Literal

from leanscore.compression.steps.base import Step, StepContext, StepState
from pydantic import Field


class ExportStep(Step):
    side: ClassVar[str] = "export"
    families: ClassVar[frozenset[str]] = frozenset({"tabular", "image", "text_embedding"})

    step: Literal["export"]
    opset: int = Field(default=20, ge=13)
    parity_atol: float = Field(default=1e-4, gt=0)

    def apply(self, state: StepState, ctx: StepContext) -> dict:
        from leanscore.compression.torch_export import check_parity

        exporter = ctx.exporter
        if not state.changed and self.opset == exporter.opset and ctx.baseline is not None:
            state.onnx_bytes = ctx.baseline.onnx_bytes  # the model as given, exported just so
        else:
            state.onnx_bytes = exporter.export(state.model, self.opset)
        diff = check_parity(
            exporter.served(state.model),
            state.onnx_bytes,
            exporter.parity_feeds(ctx.evaluation),
            atol=self.parity_atol,
            what=exporter.parity_what,
        )
        state.model = None
        return {"opset": self.opset, "parity_max_abs_diff": diff, "parity_atol": self.parity_atol}
