"""Measure one model: size, single-thread speed, accuracy and fidelity to the baseline."""

from __future__ import annotations

import time
import zlib

import numpy as np
import onnx
import onnxruntime as ort


def single_thread_session(onnx_bytes: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def run_onnx(
    session: ort.InferenceSession, features: np.ndarray, batch_size: int = 4096
) -> np.ndarray:
    name = session.get_inputs()[0].name
    outs = [
        session.run(None, {name: features[i : i + batch_size]})[0]
        for i in range(0, len(features), batch_size)
    ]
    return np.concatenate(outs)


def onnx_params(onnx_bytes: bytes) -> int:
    """Number of stored weight values (initializers), whatever their dtype."""
    model = onnx.load_model_from_string(onnx_bytes)
    return int(sum(int(np.prod(init.dims)) for init in model.graph.initializer))


def rows_per_second(
    session: ort.InferenceSession, features: np.ndarray, *, batch_size: int = 1024, repeats: int = 5
) -> float:
    """Median rows/s of ``repeats`` timed passes over ``features`` after one warm-up pass."""
    run_onnx(session, features, batch_size)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_onnx(session, features, batch_size)
        times.append(time.perf_counter() - start)
    return len(features) / float(np.median(times))


def evaluate_onnx(
    onnx_bytes: bytes,
    features: np.ndarray,
    labels: np.ndarray | None,
    baseline_probs: np.ndarray | None,
    *,
    params: int | None = None,
    speed_rows: int = 20_000,
) -> tuple[dict, np.ndarray]:
    """Return (metrics, probabilities). Metrics hold params, onnx_bytes, zipped_bytes,
    rows_per_s_1thread, accuracy (None without labels) and fidelity against the baseline."""
    session = single_thread_session(onnx_bytes)
    probs = run_onnx(session, features)
    reps = int(np.ceil(speed_rows / len(features)))
    speed_input = np.ascontiguousarray(np.tile(features, (reps, 1))[:speed_rows])
    metrics = {
        "params": params if params is not None else onnx_params(onnx_bytes),
        "onnx_bytes": len(onnx_bytes),
        "zipped_bytes": len(zlib.compress(onnx_bytes, 9)),
        "rows_per_s_1thread": round(rows_per_second(session, speed_input), 1),
        "accuracy": None if labels is None else float(np.mean(probs.argmax(1) == labels)),
        "fidelity": None if baseline_probs is None else fidelity(probs, baseline_probs),
    }
    return metrics, probs


def fidelity(probs: np.ndarray, baseline_probs: np.ndarray) -> dict:
    return {
        "agreement": float(np.mean(probs.argmax(1) == baseline_probs.argmax(1))),
        "max_abs_diff": float(np.max(np.abs(probs - baseline_probs))),
    }
