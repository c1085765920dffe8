"""The tabular family: numeric columns, or one numeric array, ML Vector or float32-bytes column,
as one float32 matrix; a classifier's class probabilities, a regression's value or an embedding
as outputs.

Type coercion is ``leanscore.udfs.schema``'s; the matrix is built by
``leanscore.compression.tabular_inputs`` (pandas; ``leanscore compress`` reads its training rows
with it too) and ``leanscore.udfs.arrow_batch`` (Arrow), which give the same values.
"""

from __future__ import annotations

import numpy as np
from leanscore.udfs.families.base import Family


def task_fields(task: str, *, probabilities: bool) -> list[tuple[str, str]]:
    """The output fields of a task: what every family with these outputs writes."""
    if task == "classification":
        fields = [("label", "bigint"), ("probability", "float")]
        if probabilities:
            fields.append(("probabilities", "array<float>"))
        return fields
    if task == "regression":
        return [("value", "float")]
    return [("embedding", "array<float>")]


def task_columns(task: str, out: np.ndarray, fields: list[str]) -> dict[str, np.ndarray]:
    """A task's output columns from the model's result rows: a classifier's label is the
    highest score's index and its probability that score."""
    columns: dict[str, np.ndarray] = {}
    rows = out.reshape(len(out), int(np.prod(out.shape[1:])))  # (0, k) too: a batch of bad rows
    if task == "classification":
        label = out.argmax(axis=1)
        columns["label"] = label.astype(np.int64, copy=False)
        top = np.take_along_axis(out, label[:, None], axis=1)[:, 0]  # one pass, not a max
        columns["probability"] = top.astype(np.float32, copy=False)
        if "probabilities" in fields:
            columns["probabilities"] = out.astype(np.float32, copy=False)
    elif task == "regression":
        columns["value"] = rows[:, 0].astype(np.float32, copy=False)
    else:
        columns["embedding"] = rows.astype(np.float32, copy=False)
    return columns


class TabularFamily(Family):
    name = "tabular"

    def input_columns(self) -> list[str]:
        spec = self.manifest.features
        return list(spec.columns) if spec.columns else [spec.array_column]

    def check_input_types(self, types: dict) -> None:
        from leanscore.udfs.schema import is_vector
        from pyspark.sql.types import ArrayType, BinaryType, NumericType

        array_layout = self.manifest.features.array_column is not None
        for name in self.input_columns():
            dtype = types[name]
            if array_layout:
                ok = (
                    (isinstance(dtype, ArrayType) and isinstance(dtype.elementType, NumericType))
                    or is_vector(dtype)
                    or isinstance(dtype, BinaryType)
                )
                expect = "array<float>, array<double>, an ML Vector or binary (float32 bytes)"
            else:
                ok = isinstance(dtype, NumericType)
                expect = "a numeric type"
            if not ok:
                raise TypeError(
                    f"feature column {name!r} has type {dtype.simpleString()}, the model needs "
                    f"{expect}; cast it before scoring"
                )

    def from_pandas(self, columns):
        from leanscore.compression.tabular_inputs import from_array, from_columns

        spec = self.manifest.features
        if spec.array_column is not None:
            return from_array(columns[0], spec.array_column, spec.size)
        return from_columns(list(columns), spec.columns)

    def from_arrow(self, arrays):
        from leanscore.udfs.arrow_batch import from_arrow_columns, from_arrow_list

        spec = self.manifest.features
        if spec.array_column is not None:
            return from_arrow_list(arrays[0], spec.array_column, spec.size)
        return from_arrow_columns(list(arrays), spec.columns)

    def element_name(self, j: int) -> str:
        spec = self.manifest.features
        if spec.columns:
            return f"column {spec.columns[j]!r}"
        return f"column {spec.array_column!r} element {j}"

    def output_fields(self, *, probabilities: bool = False) -> list[tuple[str, str]]:
        return task_fields(self.manifest.task, probabilities=probabilities)

    def output_columns(self, out, fields):
        return task_columns(self.manifest.task, out, fields)
