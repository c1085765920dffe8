"""Turn Arrow arrays straight into the model's float32 matrix, with as few copies as possible.

- One ``list<float>`` column whose rows all hold ``size`` elements and no nulls: the list's
  flattened values, reshaped to ``(n, size)``. No copy at all: the matrix *is* the Arrow buffer.
- ``list<double>`` (or integers): one cast of the flattened values to float32.
- Rows with a null list, a wrong length, or a null/NaN/inf element: the good rows are gathered
  into a fresh matrix in one vectorised step; the bad rows are reported, never scored.
- Many numeric columns: one C-contiguous ``(n, columns)`` float32 matrix filled column by column
  (one pass over each Arrow buffer).

The coercion rules are those of ``batch`` (the pandas path), so both paths produce the same
matrix; the Arrow path tells a null from a NaN in its error messages where pandas cannot.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from leanscore.compression.tabular_inputs import Batch, value_text


def to_float32(values: pa.Array, name: str) -> np.ndarray:
    """A numeric Arrow array as float32 numpy (NaN where null). Zero-copy for float32 without
    nulls; integers go through int64 -> float32 (float64 when they hold nulls), as in pandas."""
    t = values.type
    if pa.types.is_decimal(t):
        values = pc.cast(values, pa.float64())
    elif not (pa.types.is_floating(t) or pa.types.is_integer(t)):
        raise TypeError(
            f"feature column {name!r} holds Arrow type {t} and cannot be cast to float32; cast "
            "it to a numeric type before scoring"
        )
    data = values.to_numpy(zero_copy_only=False)
    return data if data.dtype == np.float32 else data.astype(np.float32)


def from_arrow_columns(arrays: list[pa.Array], names: list[str]) -> Batch:
    n = len(arrays[0]) if arrays else 0
    matrix = np.empty((n, len(arrays)), dtype=np.float32)
    nulls: dict[int, np.ndarray] = {}
    for j, array in enumerate(arrays):
        matrix[:, j] = to_float32(array, names[j])
        if array.null_count:
            nulls[j] = array.is_null().to_numpy(zero_copy_only=False)
    finite = np.isfinite(matrix)
    bad = ~finite.all(axis=1)
    reasons: list[str | None] = [None] * n
    for i in np.flatnonzero(bad):
        j = int(np.flatnonzero(~finite[i])[0])
        is_null = j in nulls and nulls[j][i]
        reasons[i] = f"column {names[j]!r} is {'null' if is_null else value_text(matrix[i, j])}"
        matrix[i] = 0.0
    return Batch(matrix, bad, reasons)


def from_arrow_list(array: pa.Array, name: str, size: int) -> Batch:
    """One list / large_list / fixed_size_list column of numbers -> (n, size) float32."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    n = len(array)
    t = array.type
    if pa.types.is_fixed_size_list(t):
        offsets = (np.arange(n + 1, dtype=np.int64) + array.offset) * t.list_size
    elif pa.types.is_list(t) or pa.types.is_large_list(t):
        offsets = array.offsets.to_numpy().astype(np.int64, copy=False)
    else:
        raise TypeError(
            f"feature column {name!r} holds Arrow type {t}, the model needs an array of "
            f"{size} numbers; convert ML Vectors with pyspark.ml.functions.vector_to_array"
        )
    values = array.values
    flat = to_float32(values, name)
    lengths = np.diff(offsets)
    valid = (
        ~array.is_null().to_numpy(zero_copy_only=False) if array.null_count else np.ones(n, bool)
    )
    good_len = valid & (lengths == size)
    if n and good_len.all():
        start = int(offsets[0])
        matrix = flat[start : start + n * size].reshape(n, size)  # a view of the Arrow buffer
    else:
        matrix = np.zeros((n, size), dtype=np.float32)
        rows = np.flatnonzero(good_len)
        if len(rows):
            matrix[rows] = flat[offsets[rows, None] + np.arange(size)]
    finite = np.isfinite(matrix).all(axis=1)
    bad = ~(good_len & finite)
    reasons: list[str | None] = [None] * n
    if bad.any():
        element_null = (
            values.is_null().to_numpy(zero_copy_only=False) if values.null_count else None
        )
        if not matrix.flags.writeable:
            matrix = matrix.copy()
        for i in np.flatnonzero(bad):
            if not valid[i]:
                reasons[i] = f"column {name!r} is null"
            elif lengths[i] != size:
                reasons[i] = f"column {name!r} has {lengths[i]} elements, the model expects {size}"
            else:
                k = int(np.flatnonzero(~np.isfinite(matrix[i]))[0])
                is_null = element_null is not None and element_null[offsets[i] + k]
                text = "null" if is_null else value_text(matrix[i, k])
                reasons[i] = f"column {name!r} element {k} is {text}"
            matrix[i] = 0.0
    return Batch(matrix, bad, reasons)
