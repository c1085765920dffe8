"""The "ONNX as given" family: an ONNX file brought as it is (a scikit-learn, LightGBM or
XGBoost model converted with skl2onnx or onnxmltools), whose mapping was declared in the
compress config and recorded in the manifest: feature columns as tabular reads them, the result
read from the output the manifest names (``result_output``, e.g. ``probabilities``).

It differs from tabular in one thing: a classifier's label is written as the model's own class
(the manifest's ``class_labels``, taken from the graph), so a model trained on classes 2, 5, 7
writes 2, 5, 7, not the column positions 0, 1, 2. Class labels that are not integers cannot be
written as a bigint label: the label is then the position, and ``class_labels`` names it.
"""

from __future__ import annotations

import numpy as np
from leanscore.udfs.families.tabular import TabularFamily


def integer_labels(class_labels: list[str] | None) -> np.ndarray | None:
    """The class labels as int64 when every one is an integer and they are not simply
    0..k-1 (then the position is already the label); else None."""
    if not class_labels:
        return None
    try:
        values = np.asarray([int(v) for v in class_labels], dtype=np.int64)
    except ValueError:
        return None
    return None if np.array_equal(values, np.arange(len(values))) else values


class OnnxModelFamily(TabularFamily):
    name = "onnx_model"

    def __init__(self, manifest):
        super().__init__(manifest)
        self._labels = (
            integer_labels(manifest.class_labels) if manifest.task == "classification" else None
        )

    def output_columns(self, out, fields):
        columns = super().output_columns(out, fields)
        if self._labels is not None:
            columns["label"] = self._labels[columns["label"]]
        return columns
