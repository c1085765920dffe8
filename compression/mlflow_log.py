"""Log a compressed artifact to MLflow as a model, and register it: where Databricks teams keep
and find their models (``models:/NAME@champion``), with the numbers that justify it.

The logged model folder is a leanscore artifact *and* an MLflow model at once: ``model.onnx``
(the artifact's exact bytes, stored inline, no external data) and ``manifest.json`` at its root,
plus ``MLmodel`` with two flavors:

- ``onnx``: the CPU execution provider and one intra-op thread, for ``mlflow.onnx.load_model``
  and tools that read ONNX models from the registry;
- ``python_function``: a small wrapper (``leanscore.udfs.mlflow_pyfunc``), not MLflow's ONNX
  pyfunc. MLflow's ONNX pyfunc flattens every output to one dimension (a (n, 10) probability
  matrix becomes 10n values), cannot read an array column, and so cannot score a classifier in
  ``mlflow.pyfunc.spark_udf``. The wrapper runs leanscore's own scoring kernel and returns the
  columns ``leanscore score`` writes (``prediction`` and ``probability``, or ``embedding``), so
  ``spark_udf(spark, "models:/NAME@ALIAS")`` gives the same predictions as ``leanscore score``.

The signature comes from the manifest (inputs: the feature columns or the array column;
outputs: those columns), which Unity Catalog requires. The run carries the recipe as params,
the compression metrics (baseline and final bytes, params, rows/s, accuracy, fidelity) as
metrics, and lineage tags (source model, data, sha256). MLflow is imported inside functions.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from leanscore.compression.artifact import MANIFEST_FILE, Artifact, Manifest
from leanscore.compression.mlflow_registry import SHA256_TAG, _client_call, require_mlflow

PYFUNC_LOADER = "leanscore.udfs.mlflow_pyfunc"
SESSION_OPTIONS = {"intra_op_num_threads": 1}
PARAM_VALUE_LIMIT = 6000  # MLflow's limit on one param value


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    alias: str | None
    run_id: str
    model_uri: str  # models:/NAME/VERSION


def signature(manifest: Manifest):
    """Inputs and outputs as ``spark_udf`` sees them, from the manifest. An array column is a
    float32 tensor (n, size): MLflow then hands the wrapper one matrix per batch, where an
    array-typed column spec makes it check and convert every row in Python (about 10x slower
    through ``spark_udf`` on the digits MLP)."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema, TensorSpec
    from mlflow.types.schema import Array

    features = manifest.features
    if features.text_column is not None:
        inputs = [ColSpec(DataType.string, features.text_column)]
    elif features.image_column is not None:
        inputs = [ColSpec(DataType.binary, features.image_column)]
    elif features.array_column is not None:
        inputs = [TensorSpec(np.dtype("float32"), (-1, features.size), features.array_column)]
    else:
        inputs = [ColSpec(DataType.double, c) for c in features.columns]
    if manifest.task == "classification":
        outputs = [ColSpec(DataType.long, "prediction"), ColSpec(DataType.float, "probability")]
    elif manifest.task == "regression":
        outputs = [ColSpec(DataType.float, "prediction")]
    else:
        outputs = [ColSpec(Array(DataType.float), "embedding")]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def model_metadata(manifest: Manifest) -> dict:
    """The manifest's key facts, stored in MLmodel's metadata."""
    return {
        "leanscore": {
            "artifact_name": manifest.name,
            "sha256": manifest.sha256,
            "model_bytes": manifest.model_bytes,
            "task": manifest.task,
            "features": manifest.features.model_dump(exclude_none=True),
            "class_labels": manifest.class_labels,
            "recipe": manifest.recipe.get("name"),
            "format_version": manifest.format_version,
            "manifest_file": MANIFEST_FILE,
        }
    }


def save_model(path, mlflow_model=None, *, artifact: Artifact, signature=None, **_ignored) -> None:
    """The flavor function ``mlflow.models.Model.log`` calls: write the MLflow model folder."""
    import mlflow.onnx
    import onnx
    import onnxruntime
    from mlflow import pyfunc
    from mlflow.models import Model

    path = Path(path)
    model_bytes = artifact.read_model_bytes()  # verifies the sha256
    mlflow_model = mlflow_model if mlflow_model is not None else Model()
    mlflow.onnx.save_model(
        onnx.load_model_from_string(model_bytes),
        str(path),
        mlflow_model=mlflow_model,
        signature=signature,
        onnx_execution_providers=["CPUExecutionProvider"],
        onnx_session_options=SESSION_OPTIONS,
        save_as_external_data=False,
        pip_requirements=[
            f"leanscore=={_version('leanscore')}",
            f"onnxruntime=={onnxruntime.__version__}",
            f"onnx=={onnx.__version__}",
        ],
    )
    onnx_data = mlflow_model.flavors["onnx"]["data"]
    # onnx.save may re-serialize differently: keep the bytes whose sha256 the manifest holds.
    (path / onnx_data).write_bytes(model_bytes)
    shutil.copyfile(artifact.path / MANIFEST_FILE, path / MANIFEST_FILE)
    for name in artifact.manifest.files:
        shutil.copyfile(artifact.path / name, path / name)
    flavor = mlflow_model.flavors[pyfunc.FLAVOR_NAME]
    flavor[pyfunc.MAIN] = PYFUNC_LOADER
    mlflow_model.save(str(path / "MLmodel"))


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:  # running from a checkout without an install
        return "0.0.0"


def _flatten(prefix: str, value, out: dict) -> dict:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value
    return out


def recipe_params(manifest: Manifest) -> dict[str, str]:
    """The recipe, one param per setting (``recipe.steps.1.mode``), lists as JSON."""
    flat: dict[str, object] = {}
    recipe = dict(manifest.recipe)
    steps = recipe.pop("steps", []) or []
    _flatten("recipe", recipe, flat)
    for i, step in enumerate(steps):
        _flatten(f"recipe.steps.{i}", step, flat)
    return {
        k: (json.dumps(v) if isinstance(v, list | dict) else str(v))[:PARAM_VALUE_LIMIT]
        for k, v in flat.items()
    }


def compression_metrics(manifest: Manifest) -> dict[str, float]:
    """Baseline and final numbers (bytes, params, rows/s, accuracy, fidelity) as run metrics."""
    out: dict[str, float] = {}
    for stage in ("baseline", "final"):
        flat = _flatten(stage, manifest.metrics.get(stage) or {}, {})
        for key, value in flat.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[key] = float(value)
    return out


def lineage_tags(manifest: Manifest) -> dict[str, str]:
    """Where the model came from: source model, data (path, format, Delta version), sha256."""
    data = dict(manifest.data)
    tags = {
        SHA256_TAG: manifest.sha256,
        "leanscore.artifact_name": manifest.name,
        "leanscore.task": manifest.task,
        "leanscore.model_bytes": str(manifest.model_bytes),
    }
    source = data.pop("model_source", None)
    if source is not None:
        tags["leanscore.source_model"] = json.dumps(source, sort_keys=True)[:PARAM_VALUE_LIMIT]
    for key, value in data.items():
        tags[f"leanscore.data.{key}"] = json.dumps(value, sort_keys=True)[:PARAM_VALUE_LIMIT]
    for lib, version in manifest.versions.items():
        tags[f"leanscore.version.{lib}"] = version
    return tags


def check_registry(name: str) -> None:
    """Fail before any work when the registry cannot be read: a compress run should not spend
    minutes and then find the registry unreachable. The message names the registry URI."""
    mlflow = require_mlflow(f"models:/{name}")
    from mlflow import MlflowClient

    client = MlflowClient()
    _client_call(
        f"models:/{name} (registry {mlflow.get_registry_uri()})",
        "registry",
        lambda: client.search_registered_models(max_results=1),
    )


def log_and_register(
    artifact: Artifact, *, name: str, alias: str | None = None, run_name: str | None = None
) -> RegisteredVersion:
    """Log ``artifact`` in a new run and register it as a new version of ``name``; point
    ``alias`` at that version when given. The registry comes from MLflow's environment."""
    mlflow = require_mlflow(f"models:/{name}")
    from mlflow import MlflowClient
    from mlflow.models import Model

    manifest = artifact.manifest
    client = MlflowClient()
    uri = f"models:/{name}" + (f"@{alias}" if alias else "")
    with mlflow.start_run(run_name=run_name or f"compress {manifest.name}") as run:
        mlflow.log_params(recipe_params(manifest))
        mlflow.log_metrics(compression_metrics(manifest))
        mlflow.set_tags(lineage_tags(manifest))
        mlflow.log_dict(manifest.model_dump(mode="json"), MANIFEST_FILE)
        info = _client_call(
            uri,
            "registry",
            lambda: Model.log(
                None,
                name="model",
                flavor=_flavor_module(),
                registered_model_name=name,
                metadata=model_metadata(manifest),
                signature=signature(manifest),
                artifact=artifact,
            ),
        )
    version = str(info.registered_model_version)
    for key, value in {
        SHA256_TAG: manifest.sha256,
        "leanscore.artifact_name": manifest.name,
    }.items():
        client.set_model_version_tag(name, version, key, value)
    if alias:
        _client_call(uri, "alias", lambda: client.set_registered_model_alias(name, alias, version))
    return RegisteredVersion(name, version, alias, run.info.run_id, f"models:/{name}/{version}")


def save_local_model(artifact: Artifact, path: str | Path | None = None) -> str:
    """The artifact as an MLflow model folder on local disk, with no tracking store (what
    ``mlflow.pyfunc.spark_udf`` loads from a path); a fresh temporary folder by default."""
    require_mlflow(str(artifact.path))
    import atexit
    import tempfile

    from mlflow.models import Model

    if path is None:
        parent = Path(tempfile.mkdtemp(prefix="leanscore-mlflow-model-"))
        atexit.register(shutil.rmtree, parent, True)
        path = parent / "model"
    mlflow_model = Model(metadata=model_metadata(artifact.manifest))
    save_model(path, mlflow_model, artifact=artifact, signature=signature(artifact.manifest))
    return str(path)


def _flavor_module():
    import sys

    return sys.modules[__name__]


__all__ = [
    "RegisteredVersion",
    "check_registry",
    "compression_metrics",
    "lineage_tags",
    "log_and_register",
    "recipe_params",
    "save_local_model",
    "save_model",
    "signature",
]
