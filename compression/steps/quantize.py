"""``quantize``: ONNX Runtime quantization of the ONNX graph, for every family: dynamic int8,
static int8 (QDQ, calibrated on the calibration rows, or on texts tokenized as scoring does),
weight-only int8 (weights stored in int8, arithmetic in float: about a 4x smaller file at
float speed, for CPUs whose int8 kernels do not pay), fp16; nodes left in float by name, by
op type, or by a sensitivity sweep (``exclude_most_sensitive``: the model quantized with each
weight MatMul left in float in turn, measured on the held-out rows; the N whose quantization
costs most fidelity stay in float)."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from leanscore.compression.steps.base import (
    FAMILIES,
    RecipeError,
    Step,
    StepContext,
    StepState,
)
from pydantic import Field

# Rows per calibration call for models fed by ``LabelledData.batches`` (texts).
CALIBRATION_CALL_ROWS = 32
# Ops whose weights ONNX Runtime's quantizers quantize.
QUANTIZABLE_OPS = frozenset({"MatMul", "Gemm", "Conv", "ConvTranspose", "Attention", "LSTM", "GRU"})


class QuantizeStep(Step):
    """ONNX Runtime quantization. The defaults are the variant measured best on the example
    models (see the report's quantize alternatives)."""

    side: ClassVar[str] = "onnx"
    families: ClassVar[frozenset[str]] = FAMILIES

    step: Literal["quantize"]
    mode: Literal["dynamic_int8", "static_int8", "weight_only_int8", "fp16"] = "static_int8"
    per_channel: bool = True
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    percentile: float = Field(default=99.999, gt=90.0, le=100.0)
    calibration_rows: int = Field(default=1024, ge=1)
    exclude_nodes: list[str] = Field(default_factory=list)
    exclude_op_types: list[str] = Field(default_factory=list)
    exclude_most_sensitive: int = Field(
        default=0,
        ge=0,
        description="int8: quantize with each weight MatMul left in float in turn (one "
        "quantization per MatMul: slow) and leave the N whose quantization costs the most "
        "fidelity on the held-out rows in float",
    )
    pre_process: bool = True
    compare: bool = Field(
        default=False,
        description="also build and measure the other int8 variants and fp16, and report them",
    )

    def check_graph(self, ops: set[str], where: str) -> None:
        from leanscore.compression import trees

        tree_ops = sorted(ops & set(trees.TREE_OPS))
        if tree_ops and not QUANTIZABLE_OPS & ops:
            raise RecipeError(
                f"{where}: the graph is a tree ensemble ({', '.join(tree_ops)}) whose thresholds "
                "and leaf weights are node attributes ONNX Runtime's quantizers leave as they "
                "are (int8 and fp16 would only rewrite the file around them); compress trees "
                "with 'truncate_trees' and remove the quantize step"
            )

    def apply(self, state: StepState, ctx: StepContext) -> dict:
        from leanscore.compression.quantization import nodes_to_exclude

        if self.exclude_most_sensitive and self.mode == "fp16":
            raise RecipeError("quantize: exclude_most_sensitive applies to int8 modes, not fp16")
        excluded = nodes_to_exclude(
            state.onnx_bytes, names=self.exclude_nodes, op_types=self.exclude_op_types
        )
        calibration = None
        if ctx.calibration is not None:
            rows = ctx.calibration.features
            pick = np.random.default_rng(0).permutation(len(rows))[: self.calibration_rows]
            calibration = rows[np.sort(pick)]
            if ctx.calibration.batches is None:
                calibration = np.ascontiguousarray(calibration, dtype=np.float32)
            else:  # rows the model does not read as they are (texts): the calls scoring makes
                from leanscore.compression.quantization import FeedsCalibrationReader

                calls = ctx.calibration.batches(calibration, CALIBRATION_CALL_ROWS)
                calibration = FeedsCalibrationReader(
                    [feed for _, feed in calls], rows=len(calibration)
                )
        options = dict(
            calibration=calibration,
            method=self.calibration,
            percentile=self.percentile,
            exclude=excluded,
            exclude_op_types=self.exclude_op_types,
            pre_process=self.pre_process,
        )
        float_bytes = state.onnx_bytes
        detail: dict = {}
        if self.exclude_most_sensitive:
            sweep = sensitivity_sweep(float_bytes, self, options, ctx)
            chosen = [r["node"] for r in sweep[: self.exclude_most_sensitive]]
            detail["sensitivity"] = sweep[: max(5, self.exclude_most_sensitive)]
            excluded = sorted(set(excluded) | set(chosen))
            options["exclude"] = excluded
        state.onnx_bytes = quantize_bytes(
            float_bytes, mode=self.mode, per_channel=self.per_channel, **options
        )
        detail = {
            "mode": self.mode,
            "per_channel": self.per_channel if self.mode != "fp16" else None,
            "calibration": self.calibration if self.mode == "static_int8" else None,
            "calibration_rows": None if calibration is None else len(calibration),
            "excluded_nodes": excluded,
            **detail,
        }
        if self.compare:
            detail["alternatives"] = _alternatives(self, float_bytes, options, ctx)
        return detail


def quantize_bytes(
    onnx_bytes: bytes,
    *,
    mode: str,
    per_channel: bool,
    calibration,
    method: str = "minmax",
    percentile: float = 99.999,
    exclude: list[str] | None = None,
    exclude_op_types: list[str] | None = None,
    pre_process: bool = True,
) -> bytes:
    """``onnx_bytes`` quantized in ``mode``; ``calibration``: float rows or a calibration
    reader (static int8 only)."""
    from leanscore.compression import quantization as q

    if mode == "dynamic_int8":
        return q.dynamic_int8(
            onnx_bytes, per_channel=per_channel, nodes_to_exclude=exclude, pre_process=pre_process
        )
    if mode == "static_int8":
        if calibration is None:
            raise RecipeError("static_int8 needs calibration rows; give data.calibration or train")
        return q.static_int8(
            onnx_bytes,
            calibration,
            per_channel=per_channel,
            method=method,
            percentile=percentile,
            nodes_to_exclude=exclude,
            pre_process=pre_process,
        )
    if mode == "weight_only_int8":
        return q.weight_only_int8(onnx_bytes, nodes_to_exclude=exclude, per_channel=per_channel)
    return q.float16(onnx_bytes, nodes_to_exclude=exclude, op_types=exclude_op_types)


def weight_matmuls(onnx_bytes: bytes) -> list[str]:
    """The MatMul nodes whose second input is a weight (an initializer)."""
    import onnx

    graph = onnx.load_model_from_string(onnx_bytes).graph
    names = {i.name for i in graph.initializer}
    return [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in names]


def sensitivity_sweep(
    float_bytes: bytes, step: QuantizeStep, options: dict, ctx: StepContext
) -> list[dict]:
    """For each weight MatMul: the held-out fidelity to the baseline when only it stays in
    float (the rest quantized as ``step`` says), highest first."""
    from leanscore.compression.evaluate import (
        fidelity,
        headline_fidelity,
        run_onnx,
        single_thread_session,
    )

    results = []
    for name in weight_matmuls(float_bytes):
        quantized = quantize_bytes(
            float_bytes,
            mode=step.mode,
            per_channel=step.per_channel,
            **{**options, "exclude": [name]},
        )
        data = ctx.evaluation
        out = run_onnx(
            single_thread_session(quantized),
            data.features,
            output=ctx.result_output,
            batches=data.batches,
        )
        fid = fidelity(out, ctx.baseline.outputs, task=ctx.task)
        value = headline_fidelity(fid, ctx.task)
        value = -fid["max_abs_diff"] if value is None else value
        results.append({"node": name, "fidelity": round(float(value), 6)})
        ctx.say(f"  sweep {name}: fidelity {value:.5f}")
    return sorted(results, key=lambda r: -r["fidelity"])


def _alternatives(step: QuantizeStep, float_bytes: bytes, options: dict, ctx) -> list:
    """Every int8 variant (dynamic/static x per-channel/per-tensor) and fp16, measured side by
    side on the same data, so the report shows why the chosen one was chosen."""
    from leanscore.compression.evaluate import describe_metrics, evaluate_onnx

    variants = [("dynamic_int8", True), ("dynamic_int8", False), ("static_int8", True)]
    variants += [("static_int8", False), ("fp16", None)]
    rows = []
    for mode, per_channel in variants:
        if mode == "static_int8" and options["calibration"] is None:
            continue
        data = quantize_bytes(float_bytes, mode=mode, per_channel=bool(per_channel), **options)
        m, _ = evaluate_onnx(
            data,
            ctx.evaluation.features,
            ctx.evaluation.labels,
            ctx.baseline.outputs,
            task=ctx.task,
            output=ctx.result_output,
            batches=ctx.evaluation.batches,
        )
        rows.append(
            {
                "mode": mode,
                "per_channel": per_channel,
                "chosen": mode == step.mode and (per_channel in (None, step.per_channel)),
                **{k: m[k] for k in ("onnx_bytes", "zipped_bytes", "rows_per_s_1thread")},
                "accuracy": m["accuracy"],
                "fidelity": m["fidelity"],
            }
        )
        ctx.say(f"  quantize alternative {mode} per_channel={per_channel}: {describe_metrics(m)}")
    return rows
