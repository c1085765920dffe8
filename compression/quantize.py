"""ONNX-side quantization with ONNX Runtime's own tooling."""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic


def preprocess(onnx_bytes: bytes) -> bytes:
    """``quant_pre_process``: symbolic shape inference and graph optimisation before quantizing."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "in.onnx"), Path(tmp, "out.onnx")
        src.write_bytes(onnx_bytes)
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
        return dst.read_bytes()


def dynamic_int8(
    onnx_bytes: bytes,
    *,
    per_channel: bool = True,
    nodes_to_exclude: list[str] | None = None,
    op_types: list[str] | None = None,
    pre_process: bool = True,
) -> bytes:
    """Dynamic int8: weights stored as int8, activations quantized per batch at run time."""
    if pre_process:
        onnx_bytes = preprocess(onnx_bytes)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "in.onnx"), Path(tmp, "out.onnx")
        src.write_bytes(onnx_bytes)
        quantize_dynamic(
            str(src),
            str(dst),
            per_channel=per_channel,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=nodes_to_exclude or [],
            op_types_to_quantize=op_types,
        )
        model = onnx.load(str(dst))
        onnx.checker.check_model(model)
        return model.SerializeToString()
