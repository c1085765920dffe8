"""An ONNX model as given: the declared mapping of its input and outputs (``OnnxModel`` in a
compress config) checked against the graph before any data is read, so a wrong name or width
fails in a second with what the graph has, not as a shape error from ONNX Runtime minutes later.

A converted scikit-learn classifier (skl2onnx, ``zipmap: False``) has two outputs, ``label``
first and ``probabilities`` second: leanscore scores and measures the probabilities and writes
the label from them (the most probable class). Its class labels come from the graph (the
``classlabels_int64s``/``classlabels_strings`` attribute of the ``ai.onnx.ml`` node), so a model
trained on labels 2, 5, 7 writes 2, 5, 7; the declared label output is checked, on the
evaluation rows, to be that class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from leanscore.compression.sources import OnnxModel

_FLOATS = {onnx.TensorProto.FLOAT}
_LABEL_TYPES = {onnx.TensorProto.INT64, onnx.TensorProto.STRING}


@dataclass(frozen=True)
class ResolvedIO:
    """The mapping once checked: the input fed, its width, the result output, the label output
    to check, and the class labels in the order of the probabilities' columns."""

    input: str
    width: int | None
    result_output: str
    label_output: str | None
    class_labels: list[str] | None


def _dims(value) -> list:
    return [
        d.dim_param or (d.dim_value if d.HasField("dim_value") else None)
        for d in value.type.tensor_type.shape.dim
    ]


def _describe(value) -> str:
    elem = value.type.tensor_type.elem_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem).name if elem else "not a tensor"
    shape = ", ".join("N" if d is None else str(d) for d in _dims(value))
    return f"{value.name!r} ({dtype} [{shape}])"


def graph_class_labels(model: onnx.ModelProto) -> list[str] | None:
    """The class labels an ``ai.onnx.ml`` classifier node declares, in probability order."""
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.name == "classlabels_int64s" and attr.ints:
                return [str(v) for v in attr.ints]
            if attr.name == "classlabels_strings" and attr.strings:
                return [v.decode() for v in attr.strings]
    return None


def resolve_io(onnx_bytes: bytes, spec: OnnxModel, *, task: str, path: str) -> ResolvedIO:
    """Check ``spec``'s mapping against the graph; every error names the config key, the bad
    name or width, and lists what the graph has."""
    model = onnx.load_model_from_string(onnx_bytes)
    fed, width = _checked_input(model.graph, spec, path)
    result, label, result_dims = _checked_outputs(model.graph, spec, task, path)
    class_labels = graph_class_labels(model) if task == "classification" else None
    n_classes = result_dims[-1] if len(result_dims) == 2 else None
    if class_labels is not None and isinstance(n_classes, int) and len(class_labels) != n_classes:
        class_labels = None  # the probabilities are not the classifier node's: labels unknown
    return ResolvedIO(fed.name, width, result, label, class_labels)


def _checked_input(graph, spec: OnnxModel, path: str):
    """(the graph's one float [rows, features] input, its width; None where symbolic)."""
    initializers = {i.name for i in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    input_list = ", ".join(_describe(v) for v in inputs)
    if spec.input is not None and spec.input not in {v.name for v in inputs}:
        raise ValueError(
            f"model.input: {spec.input!r} is not an input of {path}; its inputs are {input_list}"
        )
    if len(inputs) != 1:
        raise ValueError(
            f"model.path: {path} has {len(inputs)} inputs ({input_list}); leanscore feeds one "
            "float tensor of all the feature columns: convert the model with a single input "
            "(skl2onnx: to_onnx(model, X[:1].astype(numpy.float32)))"
        )
    fed = inputs[0]
    if fed.type.tensor_type.elem_type not in _FLOATS:
        raise ValueError(
            f"model.input: input {_describe(fed)} of {path} is not float32, which leanscore "
            "feeds; convert the model from float32 rows (skl2onnx: to_onnx(model, "
            "X[:1].astype(numpy.float32)))"
        )
    dims = _dims(fed)
    if len(dims) != 2:
        raise ValueError(
            f"model.input: input {_describe(fed)} of {path} is not a [rows, features] matrix"
        )
    width = dims[1] if isinstance(dims[1], int) else None
    columns = spec.feature_columns
    if columns is not None and width is not None and len(columns) != width:
        raise ValueError(
            f"model.feature_columns: {len(spec.feature_columns)} columns feed input "
            f"{_describe(fed)} of {path}, which takes {width} features; list its {width} "
            "columns in the order the model was trained on"
        )
    return fed, width


def _checked_outputs(graph, spec: OnnxModel, task: str, path: str):
    """(the output holding the result, the label output or None, the result's dims)."""
    outputs = {v.name: v for v in graph.output}
    output_list = ", ".join(_describe(v) for v in outputs.values())
    declared = spec.outputs.model_dump(exclude_none=True) if spec.outputs else {}
    for role, name in declared.items():
        if name not in outputs:
            raise ValueError(
                f"model.outputs.{role}: {name!r} is not an output of {path}; its outputs are "
                f"{output_list}"
            )
    if task == "classification" and "probabilities" not in declared:
        raise ValueError(
            "model.outputs.probabilities: the task is classification, so name the output that "
            f"holds the class probabilities; {path}'s outputs are {output_list}"
        )
    if task != "classification" and "value" not in declared:
        raise ValueError(
            f"model.outputs.value: the task is {task!r}, so name the output that holds the "
            f"value (and drop label/probabilities); {path}'s outputs are {output_list}"
        )
    result = declared.get("probabilities") or declared["value"]
    result_value = outputs[result]
    result_dims = _dims(result_value)
    if result_value.type.tensor_type.elem_type not in _FLOATS or len(result_dims) not in (1, 2):
        role = "probabilities" if "probabilities" in declared else "value"
        raise ValueError(
            f"model.outputs.{role}: output {_describe(result_value)} of {path} is not a float32 "
            f"[rows] or [rows, n] tensor; its outputs are {output_list}"
        )
    label = declared.get("label")
    if label is not None:
        label_value = outputs[label]
        label_type = label_value.type.tensor_type.elem_type
        if label_type not in _LABEL_TYPES or len(_dims(label_value)) != 1:
            raise ValueError(
                f"model.outputs.label: output {_describe(label_value)} of {path} is not an int64 "
                f"or string [rows] tensor; its outputs are {output_list}"
            )
    return result, label, result_dims


def check_label_output(onnx_bytes: bytes, io: ResolvedIO, features: np.ndarray, class_labels):
    """The declared label output must be the most probable class on every evaluation row where
    one class is clearly the most probable (exact ties may break either way)."""
    from leanscore.compression.evaluate import single_thread_session

    session = single_thread_session(onnx_bytes)
    label, probs = session.run([io.label_output, io.result_output], {io.input: features})
    probs = probs.reshape(len(probs), -1)
    top = np.sort(probs, axis=1)
    clear = top[:, -1] - top[:, -2] > 1e-6 if probs.shape[1] > 1 else np.ones(len(probs), bool)
    names = np.asarray(class_labels if class_labels else [str(i) for i in range(probs.shape[1])])
    expected = names[probs.argmax(axis=1)]
    given = np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in label])
    wrong = np.flatnonzero(clear & (given != expected))
    if len(wrong):
        i = int(wrong[0])
        raise ValueError(
            f"model.outputs.label: output {io.label_output!r} is not the most probable class of "
            f"output {io.result_output!r} on {len(wrong)} of {len(probs)} evaluation rows (row "
            f"{i}: label {given[i]!r}, most probable {expected[i]!r} of classes "
            f"{names.tolist()}); check model.outputs, or give class_labels in the order of the "
            "probabilities' columns"
        )


def label_indices(labels: np.ndarray | None, class_labels: list[str], *, where: str):
    """A table's label values (the model's classes, e.g. 2, 5, 7) as positions in
    ``class_labels`` (0, 1, 2), which accuracy compares with the most probable column."""
    if labels is None:
        return None
    position = {name: i for i, name in enumerate(class_labels)}
    keys = [str(v) for v in labels.tolist()]
    unknown = sorted({k for k in keys if k not in position})
    if unknown:
        raise ValueError(
            f"{where}: label value(s) {unknown[:5]} are not classes of the model "
            f"({class_labels}); check the label column or class_labels"
        )
    return np.asarray([position[k] for k in keys], dtype=np.int64)
