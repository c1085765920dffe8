"""torch -> ONNX with a dynamic batch axis, checked by onnx.checker and by output parity."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import onnx
import torch
from leanscore.compression.errors import LeanscoreError
from torch import nn

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


def strip_debug_info(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Drop the exporter's per-node debug metadata (Python stack traces, FX node text, class
    hierarchy): it is most of a small model's file and the runtime never reads it."""
    for node in proto.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    proto.graph.doc_string = ""
    return proto


def check_parity(
    model: nn.Module, onnx_bytes: bytes, sample: np.ndarray, *, atol: float = 1e-4
) -> float:
    """Max abs difference between torch and ONNX Runtime on ``sample``; raises over ``atol``."""
    import onnxruntime as ort

    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(sample)).numpy()
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    actual = session.run(None, {name: sample})[0]
    diff = float(np.max(np.abs(actual - expected)))
    if diff > atol:
        raise ExportParityError(
            f"exported ONNX differs from torch by {diff:.3g} (tolerance {atol:g}) on "
            f"{len(sample)} rows; an operator was translated differently"
        )
    return diff


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
