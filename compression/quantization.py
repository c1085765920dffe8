"""ONNX-side quantization with ONNX Runtime's own tooling: dynamic int8, static int8 (QDQ,
calibrated), fp16, with ``quant_pre_process`` first and nodes excluded by name or op type."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_dynamic,
    quantize_static,
)

CALIBRATION_METHODS = {m.name.lower(): m for m in CalibrationMethod}

log = logging.getLogger(__name__)


class ArrayCalibrationReader(CalibrationDataReader):
    """Feeds calibration batches from an in-memory array (a sample read from a Parquet/Delta
    table, or any numpy matrix) to ``quantize_static``, the way ONNX Runtime's readers do."""

    def __init__(self, features: np.ndarray, *, input_name: str, batch_size: int = 128):
        if len(features) == 0:
            raise ValueError("calibration needs at least one row; the calibration sample is empty")
        self.features = np.ascontiguousarray(features, dtype=np.float32)
        self.input_name = input_name
        self.batch_size = batch_size
        self._batches: Iterator[dict] = self._iterate()

    def _iterate(self) -> Iterator[dict]:
        # Every batch has the same size: ONNX Runtime's histogram calibrators (Entropy,
        # Percentile) stack the batches and fail on a short last one, so it wraps around.
        n, size = len(self.features), min(self.batch_size, len(self.features))
        for start in range(0, n, size):
            batch = self.features[start : start + size]
            if len(batch) < size:
                batch = np.concatenate([batch, self.features[: size - len(batch)]])
            yield {self.input_name: batch}

    def get_next(self) -> dict | None:
        return next(self._batches, None)

    def rewind(self) -> None:
        self._batches = self._iterate()


class FeedsCalibrationReader(CalibrationDataReader):
    """Feeds ready-made calibration calls (for a model with several inputs: a text model's
    token ids and attention mask, as scoring makes its calls) to ``quantize_static``. After
    the last call it starts over, so the same reader serves the next quantization too."""

    def __init__(self, feeds: list[dict], *, rows: int):
        if not feeds:
            raise ValueError("calibration needs at least one row; the calibration sample is empty")
        self.feeds = feeds
        self.rows = rows
        self._calls = iter(self.feeds)

    def __len__(self) -> int:
        return self.rows

    def get_next(self) -> dict | None:
        feed = next(self._calls, None)
        if feed is None:
            self.rewind()
        return feed

    def rewind(self) -> None:
        self._calls = iter(self.feeds)


def input_name(onnx_bytes: bytes) -> str:
    graph = onnx.load_model_from_string(onnx_bytes).graph
    initializers = {i.name for i in graph.initializer}
    return next(v.name for v in graph.input if v.name not in initializers)


def nodes_to_exclude(onnx_bytes: bytes, *, names: Iterable[str], op_types: Iterable[str]) -> list:
    """Node names to leave in float: the named ones plus every node of the given op types.

    A name that is not in the graph is an error (a typo would otherwise silently quantize it)."""
    nodes = onnx.load_model_from_string(onnx_bytes).graph.node
    present = {n.name for n in nodes}
    missing = sorted(set(names) - present)
    if missing:
        raise ValueError(
            f"exclude_nodes names {missing} that are not in the graph; node names here are "
            f"{sorted(present)[:20]}"
        )
    types = set(op_types)
    return sorted(set(names) | {n.name for n in nodes if n.op_type in types})


def preprocess(onnx_bytes: bytes) -> bytes:
    """``quant_pre_process``: symbolic shape inference and graph optimisation before quantizing.

    Symbolic shape inference cannot follow some exports (BERT's position ids sliced to
    ``Min(512, sequence)``); those get ONNX's own shape inference and the optimisation only."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "in.onnx"), Path(tmp, "out.onnx")
        src.write_bytes(onnx_bytes)
        dumped_before = Path(SYMBOLIC_DUMP).exists()
        try:
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
        except Exception as err:  # onnxruntime raises a bare Exception for this
            if "symbolic shape inference" not in str(err):
                raise
            if not dumped_before:
                _remove_symbolic_dump()
            log.warning("pre-processing without symbolic shape inference: %s", err)
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
        return dst.read_bytes()


# Where onnxruntime's symbolic shape inference dumps the model (plus a uuid-named external data
# file, the model's size) in the working directory when it gives up.
SYMBOLIC_DUMP = "sym_shape_infer_temp.onnx"


def _remove_symbolic_dump() -> None:
    dump = Path(SYMBOLIC_DUMP)
    if not dump.is_file():
        return
    model = onnx.load(str(dump), load_external_data=False)
    locations = {
        entry.value
        for tensor in model.graph.initializer
        for entry in tensor.external_data
        if entry.key == "location"
    }
    for location in locations:
        Path(location).unlink(missing_ok=True)
    dump.unlink()


# int8 weights are quantized to 7 bits (ONNX Runtime's ``reduce_range``). An artifact is made
# on one CPU and scored on others: on x86 CPUs without VNNI (AVX2, AVX-512 before Cascade
# Lake, AMD before Zen 4), ONNX Runtime's uint8 x int8 kernels add pairs of products in 16 bits
# (VPMADDUBSW), which saturate for 8-bit weights: measured on an AVX2 EPYC, a digits CNN's static
# int8 lost 8.9 accuracy points and dynamic int8 gave rows other classes in a batch than alone.
# With 7-bit weights no pair can saturate, so every CPU computes the same exact integers.
SEVEN_BIT_WEIGHTS = True


def _checked(path: Path) -> bytes:
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    return model.SerializeToString()


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
            reduce_range=SEVEN_BIT_WEIGHTS,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=nodes_to_exclude or [],
            op_types_to_quantize=op_types,
        )
        return _checked(dst)


def static_int8(
    onnx_bytes: bytes,
    calibration: np.ndarray | CalibrationDataReader,
    *,
    per_channel: bool = True,
    method: str = "minmax",
    percentile: float = 99.999,
    nodes_to_exclude: list[str] | None = None,
    pre_process: bool = True,
) -> bytes:
    """Static int8 in QDQ format: int8 weights (per channel or per tensor) and uint8
    activations whose ranges come from running ``calibration`` through the float model
    (MinMax, Entropy or Percentile)."""
    if method not in CALIBRATION_METHODS:
        raise ValueError(
            f"calibration method {method!r} is unknown; use one of {sorted(CALIBRATION_METHODS)}"
        )
    if pre_process:
        onnx_bytes = preprocess(onnx_bytes)
    reader = (
        calibration
        if isinstance(calibration, CalibrationDataReader)
        else ArrayCalibrationReader(calibration, input_name=input_name(onnx_bytes))
    )
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "in.onnx"), Path(tmp, "out.onnx")
        src.write_bytes(onnx_bytes)
        quantize_static(
            str(src),
            str(dst),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            reduce_range=SEVEN_BIT_WEIGHTS,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CALIBRATION_METHODS[method],
            nodes_to_exclude=nodes_to_exclude or [],
            extra_options={"CalibPercentile": percentile, "CalibTensorRangeSymmetric": False},
        )
        return _checked(dst)


# The ops whose second input weight-only quantization stores in int8, and that weight's output
# axis (given the node and the weight's rank): per-channel scales run along it.
_WEIGHT_AXIS = {
    "Conv": lambda node, rank: 0,
    "Gemm": lambda node, rank: 0 if _trans_b(node) else 1,
    "MatMul": lambda node, rank: rank - 1,
}


def _trans_b(node: onnx.NodeProto) -> bool:
    return any(a.name == "transB" and a.i for a in node.attribute)


def weight_only_int8(
    onnx_bytes: bytes, *, nodes_to_exclude: list[str] | None = None, per_channel: bool = True
) -> bytes:
    """Weights stored as int8, arithmetic left in float32: each Conv, Gemm and MatMul weight
    (an initializer) becomes an int8 initializer (symmetric, one scale per output channel, or
    one per tensor) turned back into float by a ``Cast`` and a ``Mul`` in front of its op.
    ONNX Runtime folds those constants into float weights when it builds the session, so the
    model runs at float speed with its float kernels' weight layouts; a ``DequantizeLinear``
    there would not be folded (ONNX Runtime keeps them for its QDQ fusions) and the layouts
    would be lost, leaving the convolutions on slower kernels.

    For CPUs where int8 kernels do not pay: without VNNI, ONNX Runtime's int8 convolutions on
    a few channels run slower than float32 ones, yet the file should still shrink about 4x. The
    dequantization runs once, when the session is built. All 8 bits are used:
    the products are computed in float, so nothing can saturate."""
    model = onnx.load_model_from_string(onnx_bytes)
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    skip = set(nodes_to_exclude or ())
    dequantize: list[onnx.NodeProto] = []
    for node in graph.node:
        axis_of = _WEIGHT_AXIS.get(node.op_type)
        name = node.input[1] if axis_of and len(node.input) > 1 else None
        tensor = weights.get(name) if name and node.name not in skip else None
        if tensor is None or tensor.data_type != onnx.TensorProto.FLOAT or len(tensor.dims) < 2:
            continue
        w = numpy_helper.to_array(tensor)
        axis = axis_of(node, w.ndim)
        reduce = tuple(i for i in range(w.ndim) if i != axis) if per_channel else None
        scale = np.abs(w).max(axis=reduce, keepdims=True) / 127.0
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
        quantized = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
        graph.initializer.remove(tensor)
        del weights[name]
        graph.initializer.extend(
            [
                numpy_helper.from_array(quantized, f"{name}_int8"),
                numpy_helper.from_array(scale, f"{name}_scale"),
            ]
        )
        dequantize += [
            onnx.helper.make_node(
                "Cast", [f"{name}_int8"], [f"{name}_cast"], to=onnx.TensorProto.FLOAT
            ),
            onnx.helper.make_node("Mul", [f"{name}_cast", f"{name}_scale"], [name]),
        ]
    if not dequantize:
        raise ValueError(
            "weight_only_int8: the graph has no float Conv, Gemm or MatMul weight to store in int8"
        )
    nodes = dequantize + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def float16(
    onnx_bytes: bytes, *, nodes_to_exclude: list[str] | None = None, op_types: list[str] | None
) -> bytes:
    """Weights and arithmetic in fp16, inputs and outputs kept float32 (the table's type).

    Uses ONNX Runtime's own converter (``onnxruntime.transformers.float16``). On CPUs without
    fp16 arithmetic ONNX Runtime inserts casts, so this halves the file but rarely the time."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load_model_from_string(onnx_bytes)
    converted = convert_float_to_float16(
        model,
        keep_io_types=True,
        node_block_list=nodes_to_exclude or None,
        op_block_list=op_types or None,
    )
    _topological_sort(converted.graph)
    onnx.checker.check_model(converted)
    return converted.SerializeToString()


def _topological_sort(graph: onnx.GraphProto) -> None:
    """The fp16 converter appends its input casts at the end of the node list; ONNX requires
    producers before consumers."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ValueError("the fp16 graph has a cycle or an input that nothing produces")
        for n in ready:
            ordered.append(n)
            available.update(n.output)
        pending = [n for n in pending if n not in ready]
    copies = [onnx.NodeProto.FromString(n.SerializeToString()) for n in ordered]
    del graph.node[:]
    graph.node.extend(copies)
