"""Turn one pandas batch of feature columns (or one array or ML Vector column) into the
model's float32 matrix, and find the bad rows: the tabular families' input, and the image
family's for an array column (``image_inputs``).

Pure numpy and pandas: no Spark, no ONNX Runtime, no torch, so executors import it and it is
tested on its own. pandas is imported by the functions that take pandas objects, not with the
module: a driver that only plans the job does not wait for it.
Type coercion: any numeric column (int, long, float, double, decimal) and any numeric array or
ML Vector element is cast to float32; a binary column holds each row's float32 numbers as
little-endian bytes (a tensor's raw bytes, ``numpy.ndarray.tobytes`` on a little-endian host).
A null, NaN or infinity, or an array (or bytes) of the wrong length, makes the row bad; what
happens to bad rows is the caller's policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class Batch:
    matrix: np.ndarray  # (n, size) float32 ((n, C, H, W) for images), C-contiguous; bad rows zeros
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
        reasons[i] = f"column {names[j]!r} is {value_text(columns[j].iloc[i], maybe_null=True)}"
        matrix[i] = 0.0
    return Batch(matrix, bad, reasons)


def bytes_reason(name: str, nbytes: int, size: int) -> str:
    """Why a binary feature value of ``nbytes`` bytes is not a row of ``size`` float32s."""
    return (
        f"column {name!r} has {nbytes} bytes, the model expects {4 * size} ({size} float32 "
        "numbers, little-endian)"
    )


def from_array(series: pd.Series, name: str, size: int) -> Batch:
    """One array<float|double>, ML Vector or binary (float32 bytes) column -> (n, size)
    float32."""
    import pandas as pd

    n = len(series)
    wrong_bytes: dict[int, int] = {}
    from_bytes = False  # a float32 read from bytes is never a null
    if isinstance(series, pd.DataFrame):
        values = _vectors_from_struct(series)
    else:
        values = series.to_numpy()
        if n and _is_vector(values):
            values = np.array([None if v is None else v.toArray() for v in values], dtype=object)
        elif n and _is_bytes(values):
            values, wrong_bytes = _float32s_from_bytes(values, size)
            from_bytes = True
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
        if i in wrong_bytes:
            reasons[i] = bytes_reason(name, wrong_bytes[i], size)
        elif lengths[i] == -1:
            reasons[i] = f"column {name!r} is null"
        elif lengths[i] != size:
            reasons[i] = f"column {name!r} has {lengths[i]} elements, the model expects {size}"
        else:
            k = int(np.flatnonzero(~np.isfinite(matrix[i]))[0])
            reasons[i] = (
                f"column {name!r} element {k} is "
                f"{value_text(values[i][k], maybe_null=not from_bytes)}"
            )
        matrix[i] = 0.0
    return Batch(matrix, bad, reasons)


def _is_bytes(values: np.ndarray) -> bool:
    first = next((v for v in values if v is not None), None)
    return isinstance(first, bytes | bytearray | memoryview)


def _float32s_from_bytes(values: np.ndarray, size: int) -> tuple[np.ndarray, dict[int, int]]:
    """Each binary value as its float32 numbers; a value of another length than ``4 * size``
    bytes becomes an empty array (a bad row), its length kept for the message."""
    out = np.empty(len(values), dtype=object)
    wrong: dict[int, int] = {}
    for i, v in enumerate(values):
        if v is None:
            out[i] = None
        elif len(v) != 4 * size:
            wrong[i], out[i] = len(v), np.empty(0, np.float32)
        else:
            out[i] = np.frombuffer(v, dtype="<f4")
    return out, wrong


def _vectors_from_struct(frame: pd.DataFrame) -> np.ndarray:
    """pandas UDFs receive an ML Vector column as its struct: type (0 sparse, 1 dense), size,
    indices, values."""
    import pandas as pd

    out = np.empty(len(frame), dtype=object)
    for i, (kind, size, indices, values) in enumerate(
        zip(frame["type"], frame["size"], frame["indices"], frame["values"], strict=True)
    ):
        if values is None or (not hasattr(values, "__len__") and pd.isna(values)):
            out[i] = None
        elif kind == 1:
            out[i] = np.asarray(values, dtype=np.float64)
        else:
            dense = np.zeros(int(size), dtype=np.float64)
            dense[np.asarray(indices, dtype=np.int64)] = values
            out[i] = dense
    return out


def _is_vector(values: np.ndarray) -> bool:
    first = next((v for v in values if v is not None), None)
    return first is not None and hasattr(first, "toArray")


def value_text(value, *, maybe_null: bool = False) -> str:
    """How a bad value reads in an error. pandas turns nulls into NaN, so there a NaN reads
    "NaN (or null)"; the Arrow path knows the difference."""
    import pandas as pd

    if value is None or (not isinstance(value, float | np.floating) and pd.isna(value)):
        return "null"
    if isinstance(value, float | np.floating) and np.isnan(value):
        return "NaN (or null)" if maybe_null else "NaN"
    return repr(float(value))
