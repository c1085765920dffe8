"""Run a recipe and write its artifact, with the manifest the scoring side relies on."""

from __future__ import annotations

import datetime as dt
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import onnx
from leanscore.compression.artifact import Artifact, FeatureSpec, write_artifact
from leanscore.compression.recipe import CompressionResult, LabelledData, Recipe, run_recipe

_ONNX_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.STRING: "string",
}


def tensor_specs(onnx_bytes: bytes) -> tuple[list[dict], list[dict]]:
    """The graph's real inputs and outputs: name, dtype and shape (symbolic axes by name)."""
    graph = onnx.load_model_from_string(onnx_bytes).graph
    initializers = {i.name for i in graph.initializer}

    def spec(value) -> dict:
        t = value.type.tensor_type
        dims = [
            d.dim_param or (d.dim_value if d.HasField("dim_value") else None) for d in t.shape.dim
        ]
        return {
            "name": value.name,
            "dtype": _ONNX_DTYPES.get(t.elem_type, str(t.elem_type)),
            "shape": dims,
        }

    inputs = [spec(v) for v in graph.input if v.name not in initializers]
    return inputs, [spec(v) for v in graph.output]


def library_versions() -> dict[str, str]:
    out = {}
    for pkg in ("leanscore", "torch", "onnx", "onnxruntime", "torch-pruning"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


def write_result(
    result: CompressionResult,
    out_dir: str | Path,
    *,
    name: str,
    features: FeatureSpec | dict,
    task: str = "classification",
    class_labels: list[str] | None = None,
    data: dict | None = None,
    model_version: str = "1",
    extra_metrics: dict | None = None,
) -> Artifact:
    inputs, outputs = tensor_specs(result.onnx_bytes)
    return write_artifact(
        out_dir,
        result.onnx_bytes,
        {
            "name": name,
            "version": model_version,
            "inputs": inputs,
            "outputs": outputs,
            "features": features if isinstance(features, dict) else features.model_dump(),
            "task": task,
            "class_labels": class_labels,
            "recipe": result.recipe.model_dump(),
            "metrics": {**result.metrics, **(extra_metrics or {})},
            "data": data or {},
            "versions": library_versions(),
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        },
    )


def compress_to_artifact(
    recipe: Recipe,
    model,
    out_dir: str | Path,
    *,
    example_input,
    train: LabelledData,
    evaluation: LabelledData,
    features: FeatureSpec | dict,
    task: str = "classification",
    class_labels: list[str] | None = None,
    progress=None,
    calibration: LabelledData | None = None,
    also_evaluate: dict[str, LabelledData] | None = None,
    model_source: dict | None = None,
) -> Artifact:
    """Run ``recipe`` on ``model`` (a torch module, or ONNX bytes) and write the artifact;
    nothing is written when the accuracy gate refuses the result."""
    result = run_recipe(
        recipe,
        model,
        example_input=example_input,
        train=train,
        evaluation=evaluation,
        progress=progress,
        calibration=calibration,
        task=task,
        also_evaluate=also_evaluate,
    )
    return write_result(
        result,
        out_dir,
        name=recipe.name,
        features=features,
        task=task,
        class_labels=class_labels,
        data=data_lineage(
            train=train,
            evaluation=evaluation,
            calibration=calibration,
            also_evaluate=also_evaluate,
            model_source=model_source,
        ),
    )


def data_lineage(
    *,
    train: LabelledData | None,
    evaluation: LabelledData,
    calibration: LabelledData | None = None,
    also_evaluate: dict[str, LabelledData] | None = None,
    model_source: dict | None = None,
) -> dict:
    """Where every sample came from (path, format, Delta version, rows) for the manifest."""

    def describe(data: LabelledData | None):
        if data is None:
            return None
        return {"rows": len(data.features), "labelled": data.labels is not None, **data.source}

    out = {
        "train": describe(train),
        "calibration": describe(calibration) if calibration is not None else "train (a sample)",
        "evaluation": describe(evaluation),
        "gated_on": "evaluation",
    }
    if also_evaluate:
        out["also_evaluated"] = {k: describe(v) for k, v in also_evaluate.items()}
    if model_source:
        out["model_source"] = model_source
    return out
