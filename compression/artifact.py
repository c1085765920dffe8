"""The artifact: the contract between compression and scoring.

An artifact is a directory holding ``model.onnx`` and ``manifest.json``. Compression writes it;
``udfs`` reads it and knows nothing else about how it was made. This module imports neither
torch nor Spark so executors can load it cheaply.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1

Task = Literal["classification", "regression", "embedding"]


class ArtifactError(ValueError):
    """An artifact directory is missing, incomplete or invalid."""


class ModelIntegrityError(ArtifactError):
    """The model bytes do not hash to the sha256 the manifest promises."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    name: str
    dtype: str
    shape: list[int | str | None]


class FeatureSpec(_Strict):
    """How table columns map onto the model's single input.

    Either ``columns`` (many numeric columns, in input order) or ``array_column`` (one array or
    vector column of ``size`` elements).
    """

    columns: list[str] | None = None
    array_column: str | None = None
    size: int = Field(gt=0)

    @model_validator(mode="after")
    def _one_layout(self) -> FeatureSpec:
        if (self.columns is None) == (self.array_column is None):
            raise ValueError("give exactly one of 'columns' or 'array_column'")
        if self.columns is not None and len(self.columns) != self.size:
            raise ValueError(f"'columns' has {len(self.columns)} names but size is {self.size}")
        return self


class Manifest(_Strict):
    format_version: int = FORMAT_VERSION
    name: str
    version: str = "1"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    model_file: str = MODEL_FILE
    model_bytes: int = Field(gt=0)
    inputs: list[TensorSpec] = Field(min_length=1)
    outputs: list[TensorSpec] = Field(min_length=1)
    features: FeatureSpec
    task: Task
    class_labels: list[str] | None = None
    recipe: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)
    created_at: str | None = None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify_sha256(data: bytes, expected: str, *, source: str) -> None:
    actual = sha256_hex(data)
    if actual != expected:
        raise ModelIntegrityError(
            f"{source}: sha256 is {actual} but the manifest says {expected}; the model was "
            "modified or truncated after compression. Rebuild the artifact with "
            "'leanscore compress' or restore the original model.onnx."
        )


class Artifact:
    """A loaded artifact directory. ``Artifact.load`` checks the manifest and the model hash."""

    def __init__(self, path: Path, manifest: Manifest):
        self.path = path
        self.manifest = manifest

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest.model_file

    @property
    def sha256(self) -> str:
        return self.manifest.sha256

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, verify: bool = True) -> Artifact:
        path = Path(path).resolve()
        manifest_path = path / MANIFEST_FILE
        if not path.is_dir():
            raise ArtifactError(
                f"artifact directory {path} does not exist; point to a directory written by "
                "'leanscore compress' (it holds model.onnx and manifest.json)"
            )
        if not manifest_path.is_file():
            raise ArtifactError(f"{manifest_path} is missing; the artifact is incomplete")
        try:
            raw = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as err:
            raise ArtifactError(f"{manifest_path} is not valid JSON: {err}") from err
        try:
            manifest = Manifest.model_validate(raw)
        except ValidationError as err:
            raise ArtifactError(f"{manifest_path} is not a valid manifest:\n{err}") from err
        artifact = cls(path, manifest)
        if not artifact.model_path.is_file():
            raise ArtifactError(f"{artifact.model_path} is missing; the artifact is incomplete")
        if verify:
            artifact.read_model_bytes()
        return artifact

    def read_model_bytes(self) -> bytes:
        data = self.model_path.read_bytes()
        verify_sha256(data, self.manifest.sha256, source=str(self.model_path))
        return data

    def __repr__(self) -> str:
        return f"Artifact({self.manifest.name!r}, sha256={self.sha256[:12]}, path={self.path})"


def write_artifact(
    out_dir: str | os.PathLike[str], model_bytes: bytes, manifest_fields: dict[str, Any]
) -> Artifact:
    """Write ``model.onnx`` and ``manifest.json`` atomically: a reader sees the old artifact or
    the whole new one, never half of it. ``sha256`` and ``model_bytes`` are computed here."""
    out_dir = Path(out_dir).resolve()
    manifest = Manifest.model_validate(
        {**manifest_fields, "sha256": sha256_hex(model_bytes), "model_bytes": len(model_bytes)}
    )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        (staging / manifest.model_file).write_bytes(model_bytes)
        (staging / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
        if out_dir.exists():
            retired = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(retired, ignore_errors=True)
            out_dir.rename(retired)
            staging.rename(out_dir)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Artifact(out_dir, manifest)
