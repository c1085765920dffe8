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
    session: ort.InferenceSession, features: np.ndarray, batch_size: int = 4096, *, batches=None
) -> np.ndarray:
    """The model's first output for ``features``, in row order; ``batches`` (see
    ``LabelledData.batches``) makes the calls for rows that are not one float input (texts)."""
    if batches is not None:
        out = None
        for idx, feed in batches(features, batch_size):
            part = session.run(None, feed)[0]
            if out is None:
                out = np.empty((len(features), *part.shape[1:]), dtype=part.dtype)
            out[idx] = part
        return out
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
    session: ort.InferenceSession,
    features: np.ndarray,
    *,
    batch_size: int = 1024,
    repeats: int = 7,
    batches=None,
) -> float:
    """Rows/s of the fastest of ``repeats`` timed passes over ``features`` after one warm-up
    pass: the fastest pass is the one least disturbed by other processes on a shared machine."""
    run_onnx(session, features, batch_size, batches=batches)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_onnx(session, features, batch_size, batches=batches)
        times.append(time.perf_counter() - start)
    return len(features) / float(np.min(times))


def evaluate_onnx(
    onnx_bytes: bytes,
    features: np.ndarray,
    labels: np.ndarray | None,
    baseline_probs: np.ndarray | None,
    *,
    params: int | None = None,
    speed_rows: int = 20_000,
    task: str = "classification",
    batches=None,
) -> tuple[dict, np.ndarray]:
    """Return (metrics, outputs). Metrics hold params, onnx_bytes, zipped_bytes,
    rows_per_s_1thread, accuracy (None without labels, or for a task without classes) and
    fidelity against the baseline (agreement for classes, cosine for embeddings).

    With ``batches`` (texts), the speed is timed on the held-out rows themselves, tokenizing
    included, in the calls scoring makes: a transformer is too slow to time on 20,000 rows."""
    session = single_thread_session(onnx_bytes)
    probs = run_onnx(session, features, batches=batches)
    if batches is not None:
        speed_input = features
    else:
        reps = int(np.ceil(speed_rows / len(features)))
        speed_input = np.ascontiguousarray(np.tile(features, (reps, 1))[:speed_rows])
    speed = rows_per_second(session, speed_input, batches=batches)
    metrics = {
        "params": params if params is not None else onnx_params(onnx_bytes),
        "onnx_bytes": len(onnx_bytes),
        "zipped_bytes": len(zlib.compress(onnx_bytes, 9)),
        "rows_per_s_1thread": round(speed, 1),
        "accuracy": accuracy(probs, labels, task=task),
        "fidelity": None if baseline_probs is None else fidelity(probs, baseline_probs, task=task),
    }
    return metrics, probs


def accuracy(outputs: np.ndarray, labels: np.ndarray | None, *, task: str) -> float | None:
    if labels is None or task != "classification":
        return None
    return float(np.mean(outputs.argmax(1) == labels))


def fidelity(
    probs: np.ndarray, baseline_probs: np.ndarray, *, task: str = "classification"
) -> dict:
    if task == "embedding":
        a = probs.reshape(len(probs), -1).astype(np.float64)
        b = baseline_probs.reshape(len(baseline_probs), -1).astype(np.float64)
        denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        cosine = np.sum(a * b, axis=1) / np.maximum(denom, 1e-12)
        return {
            "cosine_mean": float(cosine.mean()),
            "cosine_p1": float(np.percentile(cosine, 1)),
            "cosine_min": float(cosine.min()),
            "max_abs_diff": float(np.max(np.abs(a - b))),
        }
    if task == "regression":
        return {"max_abs_diff": float(np.max(np.abs(probs - baseline_probs)))}
    return {
        "agreement": float(np.mean(probs.argmax(1) == baseline_probs.argmax(1))),
        "max_abs_diff": float(np.max(np.abs(probs - baseline_probs))),
    }


def accuracy_interval(accuracy: float | None, n: int, *, z: float = 1.96) -> list[float] | None:
    """Wilson's 95% interval of an accuracy measured on ``n`` independent examples (the
    bench's ``accuracy_interval``, for compression's gate)."""
    if accuracy is None or n <= 0:
        return None
    z2 = z * z
    centre = (accuracy + z2 / (2 * n)) / (1 + z2 / n)
    half = z * np.sqrt(accuracy * (1 - accuracy) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return [round(max(0.0, float(centre - half)), 6), round(min(1.0, float(centre + half)), 6)]
