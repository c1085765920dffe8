"""Models named by MLflow URIs (``models:/NAME/VERSION``, ``models:/NAME@ALIAS``,
``runs:/RUN_ID/PATH``) turned into local artifact directories, once per job, on the driver.

Teams keep their models in the MLflow registry (Unity Catalog on Databricks) and name them by
URI. Everything that accepts an artifact directory accepts such a URI too: ``load_artifact``
pins an alias to the version it points at *now*, downloads that version once, checks the
sha256 the registry recorded against the bytes and the manifest, and returns an ``Artifact``
whose lineage (``manifest.name``/``manifest.version``) is the registered name and version, so
the nightly output and run summary say which registry version scored each row. The executors
get the model exactly as for a folder (broadcast, closure or path): nothing downloads per task.

The registry and tracking stores come from MLflow's own environment (``MLFLOW_TRACKING_URI``,
``MLFLOW_REGISTRY_URI``, ``databricks-uc``). MLflow is imported inside functions: the core
install (executors, the CLI without a registry) never needs it.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from leanscore.compression.artifact import (
    MANIFEST_FILE,
    Artifact,
    ArtifactError,
    ModelIntegrityError,
)
from leanscore.compression.errors import LeanscoreError

SCHEMES = ("models:/", "runs:/")
SHA256_TAG = "leanscore.sha256"
"""The model version tag (and run tag) holding the sha256 of the registered model.onnx."""

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))/?$")
_RUNS_URI = re.compile(r"^runs:/(?P<run_id>[^/]+)/(?P<path>.+?)/?$")


class RegistryError(LeanscoreError, ValueError):
    """A model URI cannot be resolved: unknown name, version or alias, not a leanscore model,
    an unreachable store, or MLflow not installed. The message names the URI."""


@dataclass(frozen=True)
class ModelVersionRef:
    """What a URI resolved to: the registry version it names right now (None for runs:/)."""

    uri: str
    name: str | None
    version: str | None
    alias: str | None
    run_id: str | None
    source: str  # the URI the bytes were downloaded from (pinned to the version)
    registry_uri: str

    def facts(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


class RegisteredArtifact(Artifact):
    """An artifact downloaded from MLflow; ``registered`` says which version it is."""

    def __init__(self, path: Path, manifest, registered: ModelVersionRef, artifact_name: str):
        super().__init__(path, manifest)
        self.registered = registered
        self.artifact_name = artifact_name  # the name leanscore compress gave it


def is_model_uri(ref: object) -> bool:
    return isinstance(ref, str) and ref.startswith(SCHEMES)


def require_mlflow(uri: str):
    """The mlflow module, or a RegistryError naming the extra that installs it."""
    try:
        import mlflow
    except ImportError as err:
        raise RegistryError(
            f"{uri}: MLflow is not installed; install the registry extra with "
            "pip install 'leanscore[mlflow]'"
        ) from err
    return mlflow


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def _client_call(uri: str, what: str, call):
    """Run one registry call; MLflow's errors become one line naming the URI."""
    mlflow = require_mlflow(uri)
    from mlflow.exceptions import MlflowException

    try:
        return call()
    except MlflowException as err:
        missing = err.error_code == "RESOURCE_DOES_NOT_EXIST" or (
            err.error_code == "INVALID_PARAMETER_VALUE" and "not found" in str(err)
        )
        if missing:
            raise RegistryError(f"{uri}: {what} not found ({_first_line(err)})") from None
        raise RegistryError(
            f"{uri}: cannot read the MLflow registry at {mlflow.get_registry_uri()} "
            f"({_first_line(err)}); check MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI"
        ) from None
    except (OSError, ConnectionError) as err:
        raise RegistryError(
            f"{uri}: cannot reach the MLflow registry at {mlflow.get_registry_uri()} "
            f"({_first_line(err)}); check MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI"
        ) from None


def resolve(uri: str) -> ModelVersionRef:
    """Pin ``uri`` to what it names now: an alias to its version, a run path as given."""
    mlflow = require_mlflow(uri)
    from mlflow import MlflowClient

    registry_uri = mlflow.get_registry_uri()
    runs = _RUNS_URI.match(uri)
    if runs:
        client = MlflowClient()
        _client_call(uri, f"run {runs['run_id']!r}", lambda: client.get_run(runs["run_id"]))
        return ModelVersionRef(uri, None, None, None, runs["run_id"], uri, registry_uri)
    match = _MODELS_URI.match(uri)
    if not match:
        raise RegistryError(
            f"{uri}: not a model URI leanscore reads; give models:/NAME/VERSION, "
            "models:/NAME@ALIAS or runs:/RUN_ID/PATH"
        )
    client = MlflowClient()
    name, alias = match["name"], match["alias"]
    _client_call(uri, f"registered model {name!r}", lambda: client.get_registered_model(name))
    if alias:
        version = _client_call(
            uri,
            f"alias {alias!r} of registered model {name!r}",
            lambda: client.get_model_version_by_alias(name, alias),
        )
    else:
        version = _client_call(
            uri,
            f"version {match['version']} of registered model {name!r}",
            lambda: client.get_model_version(name, match["version"]),
        )
    return ModelVersionRef(
        uri,
        name,
        str(version.version),
        alias,
        version.run_id or None,
        f"models:/{name}/{version.version}",
        registry_uri,
    )


def download(ref: ModelVersionRef) -> Path:
    """Download the pinned version once into a folder removed when this process exits, under
    ``LEANSCORE_REGISTRY_DIR`` when set: models above ``path_threshold_bytes`` reach executors
    by path, so on a multi-node cluster that folder must be one every executor reads (a Unity
    Catalog volume, DBFS, NFS)."""
    mlflow = require_mlflow(ref.uri)
    base = os.environ.get("LEANSCORE_REGISTRY_DIR") or None
    if base:
        Path(base).mkdir(parents=True, exist_ok=True)
    target = Path(tempfile.mkdtemp(prefix="leanscore-mlflow-", dir=base))
    atexit.register(shutil.rmtree, target, True)
    local = _client_call(
        ref.uri,
        "model files",
        lambda: mlflow.artifacts.download_artifacts(artifact_uri=ref.source, dst_path=str(target)),
    )
    return Path(local)


def mlmodel_flavors(local: Path) -> dict:
    """The flavors of a downloaded MLflow model folder ({} when it is not one)."""
    import yaml

    mlmodel = local / "MLmodel"
    if not mlmodel.is_file():
        return {}
    return (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors") or {}


def registered_sha256(ref: ModelVersionRef) -> str | None:
    """The sha256 leanscore recorded on the version (or its run) when it registered it."""
    from mlflow import MlflowClient

    client = MlflowClient()
    if ref.name is not None:
        version = _client_call(
            ref.uri, "model version", lambda: client.get_model_version(ref.name, ref.version)
        )
        if SHA256_TAG in (version.tags or {}):
            return version.tags[SHA256_TAG]
    if ref.run_id is not None:
        run = _client_call(ref.uri, f"run {ref.run_id!r}", lambda: client.get_run(ref.run_id))
        return run.data.tags.get(SHA256_TAG)
    return None


def load_registered(uri: str) -> RegisteredArtifact:
    """Resolve, download once and verify a leanscore model registered in MLflow."""
    ref = resolve(uri)
    local = download(ref)
    if not (local / MANIFEST_FILE).is_file():
        flavors = sorted(mlmodel_flavors(local)) or ["none: not an MLflow model"]
        raise RegistryError(
            f"{uri}: not a leanscore model (no {MANIFEST_FILE}; flavors {', '.join(flavors)}); "
            "score models registered by 'leanscore compress --register', or compress this one "
            "with model: {kind: mlflow, uri: ...}"
        )
    try:
        artifact = Artifact.load(local)
    except ArtifactError as err:
        raise RegistryError(f"{uri}: {_first_line(err)}") from None
    promised = registered_sha256(ref)
    if promised is not None and promised != artifact.sha256:
        raise ModelIntegrityError(
            f"{uri}: the registry records sha256 {promised} but the downloaded model is "
            f"{artifact.sha256}; the version's files were changed after registration"
        )
    manifest = artifact.manifest
    if ref.name is not None:
        manifest = manifest.model_copy(update={"name": ref.name, "version": ref.version})
    return RegisteredArtifact(artifact.path, manifest, ref, artifact.manifest.name)


def load_artifact(ref: str | os.PathLike[str] | Artifact) -> Artifact:
    """An ``Artifact`` from a folder, a loaded artifact, or an MLflow model URI."""
    if isinstance(ref, Artifact):
        return ref
    if is_model_uri(ref):
        return load_registered(str(ref))
    return Artifact.load(ref)


def registry_summary(artifact: Artifact) -> dict:
    """Run-summary fields naming the registry version (empty for a folder)."""
    registered = getattr(artifact, "registered", None)
    if registered is None:
        return {}
    return {
        "model_uri": registered.uri,
        "registered_model": registered.name,
        "registered_version": registered.version,
        "registered_alias": registered.alias,
        "model_run_id": registered.run_id,
        "artifact_name": artifact.artifact_name,
    }


__all__ = [
    "ModelVersionRef",
    "RegisteredArtifact",
    "RegistryError",
    "is_model_uri",
    "load_artifact",
    "load_registered",
    "registry_summary",
    "resolve",
]
