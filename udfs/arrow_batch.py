"""Turn Arrow arrays straight into the model's float32 matrix, with as few copies as possible.

- One ``list<float>`` column whose rows all hold ``size`` elements and no nulls: the list's
  flattened values, reshaped to ``(n, size)``. No copy at all: the matrix *is* the Arrow buffer.
- ``list<double>`` (or integers): one cast of the flattened values to float32.
- One ML Vector column as stored (the struct of type, size, indices and values the scan engine
  reads from Parquet): dense rows are their ``values`` list, read as ``list<double>`` above;
  sparse rows are spread into dense ones first.
- One binary column of float32 bytes (``4 * size`` little-endian bytes a row): a view of the
  Arrow data buffer as float32, no copy, where every row has its bytes.
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
from leanscore.compression.tabular_inputs import Batch, bytes_reason, value_text


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
    """One list / large_list / fixed_size_list column of numbers, or a binary column of their
    float32 bytes (``from_arrow_bytes``) -> (n, size) float32."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    n = len(array)
    t = array.type
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return from_arrow_bytes(array, name, size)
    if is_vector_struct(t):
        return from_arrow_list(vector_values(array), name, size)
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
    valid = _not_null(array)
    good_len = valid & (lengths == size)
    if n and good_len.all():
        start = int(offsets[0])
        matrix = flat[start : start + n * size].reshape(n, size)  # a view of the Arrow buffer
    else:
        matrix = np.zeros((n, size), dtype=np.float32)
        rows = np.flatnonzero(good_len)
        if len(rows):
            matrix[rows] = flat[offsets[rows, None] + np.arange(size)]
    # a null element reads as NaN, so its row is flagged whenever the values hold one
    element_null = values.is_null().to_numpy(zero_copy_only=False) if values.null_count else None

    def reason(i: int, row: np.ndarray) -> str:
        if not valid[i]:
            return f"column {name!r} is null"
        if lengths[i] != size:
            return f"column {name!r} has {lengths[i]} elements, the model expects {size}"
        k = int(np.flatnonzero(~np.isfinite(row))[0])
        is_null = element_null is not None and element_null[offsets[i] + k]
        return f"column {name!r} element {k} is {'null' if is_null else value_text(row[k])}"

    return _flagged(matrix, good_len, reason)


def _not_null(array: pa.Array) -> np.ndarray:
    """Per row, whether ``array``'s value is there."""
    if not array.null_count:
        return np.ones(len(array), bool)
    return ~array.is_null().to_numpy(zero_copy_only=False)


def _flagged(matrix: np.ndarray, good: np.ndarray, reason) -> Batch:
    """The batch of ``matrix``: a row is bad where ``good`` says so or a number is not finite;
    each bad row gets ``reason(i, row)`` (asked before the row is zeroed) and then zeros."""
    bad = ~(good & np.isfinite(matrix).all(axis=1))
    reasons: list[str | None] = [None] * len(matrix)
    if bad.any():
        if not matrix.flags.writeable:
            matrix = matrix.copy()
        for i in np.flatnonzero(bad):
            reasons[i] = reason(int(i), matrix[i])
            matrix[i] = 0.0
    return Batch(matrix, bad, reasons)


def from_arrow_bytes(array: pa.Array, name: str, size: int) -> Batch:
    """One binary column of float32 numbers, ``4 * size`` little-endian bytes a row (a tensor's
    raw bytes) -> (n, size) float32. No copy when every row has its bytes and they start on a
    4-byte boundary: the matrix *is* the Arrow buffer."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    n, t, width = len(array), array.type, 4 * size
    buffers = array.buffers()
    if pa.types.is_fixed_size_binary(t):
        offsets = (np.arange(n + 1, dtype=np.int64) + array.offset) * t.byte_width
        data = buffers[1]
    else:
        kind = np.int64 if pa.types.is_large_binary(t) else np.int32
        offsets = np.frombuffer(buffers[1], dtype=kind)[array.offset : array.offset + n + 1]
        offsets = offsets.astype(np.int64)
        data = buffers[2]
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.empty(0, np.uint8)
    lengths = np.diff(offsets)
    valid = _not_null(array)
    good_len = valid & (lengths == width)
    start = int(offsets[0]) if n else 0
    if n and good_len.all() and (raw.ctypes.data + start) % 4 == 0:
        matrix = raw[start : start + n * width].view("<f4").reshape(n, size)
    else:
        matrix = np.zeros((n, size), dtype="<f4")
        rows = np.flatnonzero(good_len)
        if len(rows):
            picked = raw[offsets[rows, None] + np.arange(width)]
            matrix[rows] = picked.view("<f4").reshape(len(rows), size)
    matrix = matrix.astype(np.float32, copy=False)  # the host's byte order

    def reason(i: int, row: np.ndarray) -> str:
        if not valid[i]:
            return f"column {name!r} is null"
        if lengths[i] != width:
            return bytes_reason(name, int(lengths[i]), size)
        k = int(np.flatnonzero(~np.isfinite(row))[0])
        return f"column {name!r} element {k} is {value_text(row[k])}"

    return _flagged(matrix, good_len, reason)


VECTOR_FIELDS = ("type", "size", "indices", "values")
"""Spark ML's Vector as stored: ``type`` 0 sparse, 1 dense; a dense row's numbers in ``values``,
a sparse row's ``size`` numbers zero but at ``indices``."""


def is_vector_struct(t: pa.DataType) -> bool:
    return pa.types.is_struct(t) and [t.field(i).name for i in range(t.num_fields)] == list(
        VECTOR_FIELDS
    )


def vector_values(array: pa.StructArray) -> pa.Array:
    """Each ML Vector row's numbers as one ``list<double>`` row (null where the vector is):
    the ``values`` child itself where every row is dense, else sparse rows spread out."""
    kind, _, _, values = array.flatten()  # each child with the struct's offset applied
    null = array.is_null().to_numpy(zero_copy_only=False)
    sparse = ~null & (kind.fill_null(1).to_numpy(zero_copy_only=False) == 0)
    if not sparse.any():
        if not null.any():
            return values
        offsets = pa.array(values.offsets.to_numpy())  # unsliced: a mask needs its own buffer
        return pa.ListArray.from_arrays(offsets, values.values, mask=pa.array(null))
    rows = []
    for i, row in enumerate(array.to_pylist()):
        if row is None or not sparse[i]:
            rows.append(None if row is None else row["values"])
        else:
            dense = np.zeros(row["size"], dtype=np.float64)
            dense[np.asarray(row["indices"], dtype=np.int64)] = row["values"]
            rows.append(dense)
    return pa.array(rows, pa.list_(pa.float64()))
