"""Turn one Arrow/pandas batch into the model's float32 matrix, and find the bad rows.

Pure numpy and pandas: no Spark, no ONNX Runtime, so it is tested on its own.
Type coercion: any numeric column (int, long, float, double, decimal) and any numeric array or
ML Vector element is cast to float32. A null, NaN or infinity, or an array of the wrong length,
makes the row bad; what happens to bad rows is the caller's policy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class Batch:
    matrix: np.ndarray  # (n, size) float32, C-contiguous; bad rows hold zeros
    bad: np.ndarray  # (n,) bool
    reasons: list[str | None]  # per row, None where the row is fine


def from_columns(columns: list[pd.Series], names: list[str]) -> Batch:
    n = len(columns[0]) if columns else 0
    matrix = np.empty((n, len(columns)), dtype=np.float32)
    for j, series in enumerate(columns):
        try:
            matrix[:, j] = series.to_numpy(dtype=np.float32, na_value=np.nan)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"feature column {names[j]!r} has dtype {series.dtype} and cannot be cast to "
                f"float32 ({err}); cast it to a numeric type before scoring"
            ) from err
    finite = np.isfinite(matrix)
    bad = ~finite.all(axis=1)
    reasons: list[str | None] = [None] * n
    for i in np.flatnonzero(bad):
        j = int(np.flatnonzero(~finite[i])[0])
        reasons[i] = f"column {names[j]!r} is {_value_text(columns[j].iloc[i])}"
        matrix[i] = 0.0
    return Batch(matrix, bad, reasons)


def from_array(series: pd.Series, name: str, size: int) -> Batch:
    """One array<float|double> or ML Vector column -> (n, size) float32."""
    n = len(series)
    values = series.to_numpy()
    if n and _is_vector(values):
        values = np.array([None if v is None else v.toArray() for v in values], dtype=object)
    lengths = np.fromiter((-1 if v is None else len(v) for v in values), dtype=np.int64, count=n)
    good_len = lengths == size
    matrix = np.zeros((n, size), dtype=np.float32)
    if good_len.all() and n:
        matrix[:] = np.stack(values)
    else:
        for i in np.flatnonzero(good_len):
            matrix[i] = values[i]
    finite = np.isfinite(matrix).all(axis=1)
    bad = ~(good_len & finite)
    reasons: list[str | None] = [None] * n
    for i in np.flatnonzero(bad):
        if lengths[i] == -1:
            reasons[i] = f"column {name!r} is null"
        elif lengths[i] != size:
            reasons[i] = f"column {name!r} has {lengths[i]} elements, the model expects {size}"
        else:
            k = int(np.flatnonzero(~np.isfinite(matrix[i]))[0])
            reasons[i] = f"column {name!r} element {k} is {_value_text(values[i][k])}"
        matrix[i] = 0.0
    return Batch(matrix, bad, reasons)


def _is_vector(values: np.ndarray) -> bool:
    first = next((v for v in values if v is not None), None)
    return first is not None and hasattr(first, "toArray")


def _value_text(value) -> str:
    if value is None or (not isinstance(value, float | np.floating) and pd.isna(value)):
        return "null"
    if isinstance(value, float | np.floating) and np.isnan(value):
        return "NaN (or null)"
    return repr(float(value))
