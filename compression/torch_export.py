"""torch -> ONNX with a dynamic batch axis, checked by onnx.checker and by output parity."""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import torch
from leanscore.compression.errors import LeanscoreError, RecipeError
from leanscore.compression.text_inputs import TOKEN_INPUTS
from torch import nn

if TYPE_CHECKING:
    from leanscore.compression.data import LabelledData

log = logging.getLogger(__name__)

DEFAULT_OPSET = 20


class ExportParityError(LeanscoreError, RuntimeError):
    """The exported graph does not reproduce the torch model's outputs."""


def export_onnx(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    input_name: str = "features",
    output_name: str = "probabilities",
    opset: int = DEFAULT_OPSET,
) -> bytes:
    """Export ``model`` (already producing the served output) to ONNX bytes, batch axis dynamic."""
    model = model.eval()
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings(), _quiet_exporter():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example_input,),
            dynamo=True,
            input_names=[input_name],
            output_names=[output_name],
            dynamic_shapes=({0: batch},),
            opset_version=opset,
            verbose=False,
        )
    proto = program.model_proto
    strip_debug_info(proto)
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()


def export_token_model(model: nn.Module, *, output_name: str, opset: int) -> bytes:
    """Export a model of token ids and attention mask (a BERT-family encoder or classifier)
    to ONNX bytes, batch and sequence axes dynamic.

    Uses the TorchScript exporter (``dynamo=False`` with ``dynamic_axes``): the dynamo exporter
    specialises Hugging Face BERT's attention-mask arithmetic on the example's sequence length,
    and the TorchScript graph is the one ONNX Runtime's BERT fusions and quantizers are tuned
    for."""
    model = model.eval()
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 2023, 102, 0]], dtype=torch.int64)
    mask = (ids != 0).to(torch.int64)
    buffer = io.BytesIO()
    axes = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (ids, mask),
            buffer,
            dynamo=False,
            input_names=list(TOKEN_INPUTS),
            output_names=[output_name],
            dynamic_axes={name: axes for name in TOKEN_INPUTS} | {output_name: {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
        )
    proto = onnx.load_model_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def strip_debug_info(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Drop the exporter's per-node debug metadata (Python stack traces, FX node text, class
    hierarchy): it is most of a small model's file and the runtime never reads it."""
    for node in proto.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    proto.graph.doc_string = ""
    return proto


def check_parity(
    model: nn.Module,
    onnx_bytes: bytes,
    feeds: Mapping[str, np.ndarray] | np.ndarray,
    *,
    atol: float = 1e-4,
    what: str = "rows",
) -> float:
    """Max abs difference between ``model`` (called with the feeds' arrays, in order, as
    tensors) and ONNX Runtime's first output on the same ``feeds`` (input name -> array; one
    array: the graph's only input); raises ``ExportParityError`` over ``atol``."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    if not isinstance(feeds, Mapping):
        feeds = {session.get_inputs()[0].name: feeds}
    with torch.no_grad():
        expected = model.eval()(*(torch.from_numpy(v) for v in feeds.values())).numpy()
    actual = session.run(None, dict(feeds))[0]
    diff = float(np.max(np.abs(actual - expected)))
    if diff > atol:
        rows = len(next(iter(feeds.values())))
        raise ExportParityError(
            f"exported ONNX differs from torch by {diff:.3g} (tolerance {atol:g}) on "
            f"{rows} {what}; an operator was translated differently"
        )
    return diff


@dataclass(frozen=True)
class TorchExport:
    """How the recipe engine exports one family's torch model and checks the export: the
    tabular and image families feed one float tensor (``tabular_export``), a text encoder
    token ids and a mask (``leanscore.compression.text_model.encoder_export``)."""

    export: Callable[[nn.Module, int], bytes]  # (model, opset) -> the served graph's bytes
    served: Callable[[nn.Module], nn.Module]  # the module whose outputs that graph reproduces
    parity_feeds: Callable[[LabelledData], dict[str, np.ndarray]]  # feeds the check runs on
    parity_what: str = "rows"
    opset: int = DEFAULT_OPSET  # what the baseline and the measurements of torch steps use
    tokenizer: Any = None  # text families: the tokenizer their steps read texts with
    max_length: int | None = None


def tabular_export(task: str, example_input: torch.Tensor | None) -> TorchExport:
    """One float tensor in (``features``), the class probabilities (softmax added to a
    classifier's logits) or the model's output out."""
    from leanscore.compression.models import WithSoftmax

    def served(model: nn.Module) -> nn.Module:
        return WithSoftmax(model) if task == "classification" else model

    def export(model: nn.Module, opset: int) -> bytes:
        if example_input is None:
            raise RecipeError("a PyTorch model needs an example_input to be exported")
        return export_onnx(served(model), example_input, opset=opset)

    return TorchExport(
        export=export, served=served, parity_feeds=lambda data: {"features": data.features[:512]}
    )


class _quiet_exporter:
    """The dynamo exporter logs progress at INFO and prints ✅ lines; keep driver logs clean."""

    def __enter__(self):
        self._loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript")]
        self._levels = [lg.level for lg in self._loggers]
        for lg in self._loggers:
            lg.setLevel(logging.ERROR)
        import contextlib
        import io

        self._stdout = contextlib.redirect_stdout(io.StringIO())
        self._stdout.__enter__()
        return self

    def __exit__(self, *exc):
        self._stdout.__exit__(*exc)
        for lg, level in zip(self._loggers, self._levels, strict=True):
            lg.setLevel(level)
        return False
