"""Measure one model: size, single-thread speed, accuracy and fidelity to the baseline."""

from __future__ import annotations

import time
import zlib

import numpy as np
import onnx
import onnxruntime as ort
from leanscore.compression.artifact import graph_is_batch_dependent


def distinct_rows(features: np.ndarray) -> int:
    """How many different feature rows ``features`` holds (repeated rows count once)."""
    if len(features) == 0:
        return 0
    if features.dtype == object:  # texts: one string per row
        return len(set(features.reshape(len(features)).tolist()))
    rows = np.ascontiguousarray(features).reshape(len(features), -1)
    return len(np.unique(rows, axis=0))


def single_thread_session(onnx_bytes: bytes) -> ort.InferenceSession:
    """A one-thread session, marked ``texts_alone`` when its graph is batch dependent: scoring
    gives such a text model one text per call (``leanscore.udfs.families.text_base``), so
    ``run_onnx`` measures it the same way."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    session.texts_alone = graph_is_batch_dependent(onnx_bytes)
    return session


def run_onnx(
    session: ort.InferenceSession,
    features: np.ndarray,
    batch_size: int = 4096,
    *,
    output: str | None = None,
    batches=None,
) -> np.ndarray:
    """The model's ``output`` (default: its first output) for ``features``, in row order;
    ``batches`` (see ``LabelledData.batches``) makes the calls for rows that are not one float
    input (texts): one text per call on a session marked ``texts_alone``."""
    wanted = None if output is None else [output]
    if batches is not None:
        out = None
        rows_per_call = 1 if getattr(session, "texts_alone", False) else batch_size
        for idx, feed in batches(features, rows_per_call):
            part = session.run(wanted, feed)[0]
            if out is None:
                out = np.empty((len(features), *part.shape[1:]), dtype=part.dtype)
            out[idx] = part
        return out
    name = session.get_inputs()[0].name
    outs = [
        session.run(wanted, {name: features[i : i + batch_size]})[0]
        for i in range(0, len(features), batch_size)
    ]
    return np.concatenate(outs)


def onnx_params(onnx_bytes: bytes) -> int:
    """Number of stored weight values (initializers, whatever their dtype), plus a tree
    ensemble's thresholds, leaf weights and base values (node attributes, not initializers)."""
    from leanscore.compression.trees import tree_values

    model = onnx.load_model_from_string(onnx_bytes)
    weights = int(sum(int(np.prod(init.dims)) for init in model.graph.initializer))
    return weights + tree_values(onnx_bytes)


def wilson_interval(correct: int, n: int, *, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95% for z=1.96) of an accuracy of ``correct`` out of ``n``."""
    if n <= 0:
        return (0.0, 1.0)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (float(max(0.0, centre - half)), float(min(1.0, centre + half)))


def accuracy_interval(accuracy: float | None, n: int) -> list[float] | None:
    """Wilson's 95% interval of an accuracy measured on ``n`` independent examples, rounded
    for reports; None without an accuracy."""
    if accuracy is None or n <= 0:
        return None
    low, high = wilson_interval(accuracy * n, n)
    return [round(low, 6), round(high, 6)]


def rows_per_second(
    session: ort.InferenceSession,
    features: np.ndarray,
    *,
    batch_size: int = 1024,
    repeats: int = 7,
    min_repeats: int = 3,
    pass_seconds: float = 0.25,
    budget_seconds: float = 2.0,
    batches=None,
) -> float:
    """Rows/s of the fastest timed pass over ``features`` after a warm-up: the fastest pass is
    the one least disturbed by other processes on a shared machine.

    A slow model (a CNN: thousands of rows/s, not hundreds of thousands) is timed on the first
    rows only, as many as the warm-up says one pass covers in about ``pass_seconds``, so a
    measurement takes seconds, not a minute; fast models keep every row of ``features``.
    Held-out texts (``batches``) are all timed, their lengths as the gate saw them, so a pass
    of a transformer takes seconds: the passes stop at ``repeats``, or after ``min_repeats``
    once they took ``budget_seconds`` together (a pass that long already spans hundreds of
    calls)."""
    start = time.perf_counter()
    warmed = features[:batch_size]
    run_onnx(session, warmed, batch_size, batches=batches)
    rate = len(warmed) / max(time.perf_counter() - start, 1e-9)
    features = features[: max(batch_size, int(rate * pass_seconds))]
    if len(features) > len(warmed):
        run_onnx(session, features, batch_size, batches=batches)
    times: list[float] = []
    while len(times) < repeats and (len(times) < min_repeats or sum(times) < budget_seconds):
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
    output: str | None = None,
    batches=None,
) -> tuple[dict, np.ndarray]:
    """Return (metrics, outputs of ``output``, default the first). Metrics hold params,
    onnx_bytes, zipped_bytes, rows_per_s_1thread, accuracy (None without labels, or for a task
    without classes) and fidelity against the baseline (agreement for classes, cosine for
    embeddings).

    With ``batches`` (texts), the speed is timed on the held-out rows themselves, tokenizing
    included, in the calls scoring makes: a transformer is too slow to time on 20,000 rows."""
    session = single_thread_session(onnx_bytes)
    probs = run_onnx(session, features, output=output, batches=batches)
    if batches is not None:
        speed_input = features
    else:
        reps = int(np.ceil(speed_rows / len(features)))
        tiles = (reps,) + (1,) * (features.ndim - 1)  # rows only, for images (n, C, H, W) too
        speed_input = np.ascontiguousarray(np.tile(features, tiles)[:speed_rows])
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


def headline_fidelity(fid: dict, task: str) -> float | None:
    """The one fidelity figure a budget is stated in: the mean cosine to the baseline for
    embeddings, the agreement of classes for classifiers (None for a regression)."""
    return fid.get("cosine_mean") if task == "embedding" else fid.get("agreement")


def describe_metrics(m: dict) -> str:
    """One line of a model's measurements, for progress output and gate messages."""
    acc = "n/a" if m.get("accuracy") is None else f"{100 * m['accuracy']:.2f}%"
    if m.get("accuracy_interval"):
        low, high = m["accuracy_interval"]
        acc += f" [{100 * low:.1f}, {100 * high:.1f}]"
    fid = m.get("fidelity") or {}
    agree = fid.get("agreement", fid.get("cosine_mean"))
    agree_text = "" if agree is None else f" fidelity={agree:.4f}"
    return (
        f"params={m['params']:,} bytes={m['onnx_bytes']:,} zipped={m['zipped_bytes']:,} "
        f"rows/s(1 thread)={m['rows_per_s_1thread']:,.0f} accuracy={acc}{agree_text}"
    )
