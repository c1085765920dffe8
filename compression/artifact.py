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

from leanscore.compression.errors import LeanscoreError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
REFERENCE_DIR = "reference"
FORMAT_VERSION = 1

Task = Literal["classification", "regression", "embedding"]


class ArtifactError(LeanscoreError, ValueError):
    """An artifact directory is missing, incomplete or invalid."""


class ModelIntegrityError(ArtifactError):
    """The model bytes do not hash to the sha256 the manifest promises."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    name: str
    dtype: str
    shape: list[int | str | None]


class ImageSpec(_Strict):
    """How an image becomes the model's fixed (channels, height, width) input.

    Decoded images (PNG/JPEG bytes in an ``image_column``) are converted to grayscale
    (``channels`` 1) or RGB (3), resized to ``width`` x ``height`` when ``resize`` is true (else
    an image of another size is a bad row), scaled to [0, 1] (8-bit values / 255), then
    normalised per channel: ``(x - mean) / std``. A fixed-shape ``array_column`` holds the
    pixels already scaled to [0, 1], channel-major (C, H, W); only ``mean``/``std`` apply.
    """

    channels: Literal[1, 3]
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    mean: list[float] | None = Field(default=None, description="per channel; default 0")
    std: list[float] | None = Field(default=None, description="per channel; default 1")
    resize: bool = False
    resample: Literal["nearest", "box", "bilinear", "hamming", "bicubic", "lanczos"] = "bilinear"
    convert: bool = Field(
        default=True,
        description="convert an image of another mode (RGB to grayscale, grayscale to RGB, "
        "alpha dropped); false: such an image is a bad row named with its mode",
    )

    @model_validator(mode="after")
    def _one_value_per_channel(self) -> ImageSpec:
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is not None and len(values) != self.channels:
                raise ValueError(
                    f"image.{name} has {len(values)} values but the image has {self.channels} "
                    "channel(s); give one per channel"
                )
        if self.std is not None and not all(s > 0 for s in self.std):
            raise ValueError(f"image.std must be positive, got {self.std}")
        return self

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    @property
    def size(self) -> int:
        return self.channels * self.height * self.width


class FeatureSpec(_Strict):
    """How table columns map onto the model's single input.

    Either ``columns`` (many numeric columns, in input order) or ``array_column`` (one array or
    vector column of ``size`` elements, or a binary column of their float32 bytes), or, for
    text models, ``text_column`` (one string column) with ``tokenizer`` naming a tokenizer file
    stored in the artifact (listed in the manifest's ``files``) and ``size`` the largest number
    of tokens the model reads. Image models give ``image`` (an ``ImageSpec``) with
    ``image_column`` (one binary column of PNG/JPEG bytes) or ``array_column`` (channels x
    height x width numbers); ``size`` is then channels x height x width.
    """

    columns: list[str] | None = None
    array_column: str | None = None
    size: int = Field(gt=0)
    text_column: str | None = None
    tokenizer: str | None = None
    image_column: str | None = None
    image: ImageSpec | None = None

    @model_validator(mode="after")
    def _one_layout(self) -> FeatureSpec:
        if self.text_column is not None or self.tokenizer is not None:
            numeric = (self.columns, self.array_column, self.image_column, self.image)
            if any(v is not None for v in numeric):
                raise ValueError(
                    "give exactly one of 'columns', 'array_column', 'image_column' or "
                    f"'text_column'; got text_column={self.text_column!r} together with a "
                    "numeric or image layout"
                )
            if self.text_column is None or self.tokenizer is None:
                raise ValueError(
                    "a text model needs both 'text_column' and 'tokenizer' (a file in the "
                    f"artifact); got text_column={self.text_column!r}, "
                    f"tokenizer={self.tokenizer!r}"
                )
            return self
        given = [n for n in ("columns", "array_column", "image_column") if getattr(self, n)]
        if len(given) != 1:
            raise ValueError("give exactly one of 'columns', 'array_column' or 'image_column'")
        if self.columns is not None and len(self.columns) != self.size:
            raise ValueError(f"'columns' has {len(self.columns)} names but size is {self.size}")
        if self.image_column is not None and self.image is None:
            raise ValueError(
                f"image_column {self.image_column!r} needs 'image' (channels, height, width and "
                "the normalisation) to decode it"
            )
        if self.image is not None:
            if self.columns is not None:
                raise ValueError("'image' applies to an image_column or an array_column")
            if self.size != self.image.size:
                raise ValueError(
                    f"size is {self.size} but image {list(self.image.shape)} (channels, height, "
                    f"width) holds {self.image.size} values"
                )
        return self


class InputRange(_Strict):
    """Each input feature's range on the rows the model was calibrated or trained on: one
    ``low``/``high`` per feature, in the order of the model's input. Scoring compares rows with
    it to isolate values the model never saw (see ``leanscore.udfs.kernel``)."""

    low: list[float] = Field(min_length=1)
    high: list[float] = Field(min_length=1)
    rows: int = Field(gt=0, description="rows the range was taken from")
    source: str = Field(description="which rows: calibration, train or evaluation")

    @model_validator(mode="after")
    def _one_interval_per_feature(self) -> InputRange:
        if len(self.low) != len(self.high):
            raise ValueError(f"low has {len(self.low)} values but high has {len(self.high)}")
        for j, (lo, hi) in enumerate(zip(self.low, self.high, strict=True)):
            if not lo <= hi:  # also refuses NaN
                raise ValueError(f"feature {j}: low {lo} is not <= high {hi}")
        return self


def input_range_of(features, *, source: str) -> InputRange | None:
    """The per-feature min/max of a (rows, features) matrix, ignoring non-finite values; None
    when a feature has no finite value at all (no range can be stated). Images (rows, channels,
    height, width) get each channel's min/max, repeated for every pixel of the channel: a pixel
    position the training images never lit is no reason to isolate an image that lights it."""
    import numpy as np

    array = np.asarray(features, dtype=np.float64)
    if len(array) == 0:
        return None
    if array.ndim == 4:  # images (n, C, H, W): one range per channel, for each of its pixels
        channels, pixels = array.shape[1], array.shape[2] * array.shape[3]
        matrix = array.transpose(1, 0, 2, 3).reshape(channels, -1).T
    else:
        matrix, pixels = array.reshape(len(array), -1), 1
    finite = np.where(np.isfinite(matrix), matrix, np.nan)
    if np.isnan(finite).all(axis=0).any():
        return None
    low, high = np.nanmin(finite, axis=0), np.nanmax(finite, axis=0)
    low, high = np.repeat(low, pixels), np.repeat(high, pixels)
    return InputRange(low=low.tolist(), high=high.tolist(), rows=len(array), source=source)


# ONNX Runtime ops that quantize activations with a scale computed from the whole input of each
# call: a row's output then depends on the other rows of its batch.
BATCH_DEPENDENT_OPS = frozenset(
    {"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM"}
)


def graph_is_batch_dependent(onnx_bytes: bytes) -> bool:
    """Whether the model quantizes activations per call (ONNX Runtime's dynamic quantization),
    found from the graph itself, so an ONNX file from elsewhere is judged the same way."""
    import onnx

    graph = onnx.load_model_from_string(onnx_bytes).graph
    ops = {n.op_type for n in graph.node}
    for node in graph.node:  # subgraphs (If/Loop bodies)
        for attr in node.attribute:
            if attr.HasField("g"):
                ops |= {n.op_type for n in attr.g.node}
    return bool(ops & BATCH_DEPENDENT_OPS)


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
    files: dict[str, str] = Field(
        default_factory=dict, description="other files in the artifact: name -> sha256"
    )
    input_range: InputRange | None = Field(
        default=None,
        description="each feature's calibrated min/max; None for text models and artifacts "
        "written before ranges were recorded",
    )
    family: str | None = Field(
        default=None,
        description="the scoring family (leanscore.udfs.families) that reads the model's input "
        "columns and names its outputs; None: tabular, or text for a text_column model",
        pattern=r"^[a-z][a-z0-9_]*$",
    )
    result_output: str | None = Field(
        default=None,
        description="the ONNX output that holds the result (a classifier's class probabilities); "
        "None: the model's first output",
    )
    batch_dependent: bool | None = Field(
        default=None,
        description="true when a row's output depends on the other rows of its call (dynamic "
        "quantization); None when not recorded (scoring then assumes true)",
    )
    reference: str | None = Field(
        default=None,
        description="the folder, inside this artifact, of the uncompressed model it was made "
        "from (an artifact of its own: the nightly shadow's default reference); None: none "
        "was written (the model is the uncompressed one, or came from elsewhere)",
    )

    @model_validator(mode="after")
    def _result_output_exists(self) -> Manifest:
        names = [o.name for o in self.outputs]
        if self.result_output is not None and self.result_output not in names:
            raise ValueError(
                f"result_output is {self.result_output!r} but the model's outputs are {names}"
            )
        return self

    @model_validator(mode="after")
    def _image_family(self) -> Manifest:
        has_image = self.features.image is not None
        if has_image and self.family not in (None, "image"):
            raise ValueError(
                f"features.image describes an image model but family is {self.family!r}"
            )
        if self.family == "image" and not has_image:
            raise ValueError(
                "family 'image' needs features.image (channels, height, width, normalisation)"
            )
        return self

    @model_validator(mode="after")
    def _tokenizer_listed(self) -> Manifest:
        tokenizer = self.features.tokenizer
        if tokenizer is not None and tokenizer not in self.files:
            raise ValueError(
                f"features.tokenizer is {tokenizer!r} but 'files' lists {sorted(self.files)}; "
                "the tokenizer must be stored (and hashed) in the artifact"
            )
        for name, digest in self.files.items():
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(f"files[{name!r}] must be a sha256 hex digest, got {digest!r}")
        return self


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
        for name in manifest.files:
            if not (path / name).is_file():
                raise ArtifactError(f"{path / name} is missing; the artifact is incomplete")
        if verify:
            check_model_matches_manifest(artifact.read_model_bytes(), manifest, artifact.model_path)
            for name in manifest.files:
                artifact.read_file(name)
        return artifact

    def read_model_bytes(self) -> bytes:
        data = self.model_path.read_bytes()
        verify_sha256(data, self.manifest.sha256, source=str(self.model_path))
        return data

    def read_file(self, name: str) -> bytes:
        """The bytes of an extra file (e.g. the tokenizer), checked against its sha256."""
        if name not in self.manifest.files:
            raise ArtifactError(
                f"{name!r} is not a file of artifact {self.manifest.name!r}; it holds "
                f"{sorted(self.manifest.files)}"
            )
        data = (self.path / name).read_bytes()
        verify_sha256(data, self.manifest.files[name], source=str(self.path / name))
        return data

    def __repr__(self) -> str:
        return f"Artifact({self.manifest.name!r}, sha256={self.sha256[:12]}, path={self.path})"


def check_model_matches_manifest(data: bytes, manifest: Manifest, model_path: Path) -> None:
    """The bytes parse as a valid ONNX model whose input width is the manifest's feature size.

    A hash only proves the bytes are the ones the manifest names; this proves they are a model
    the scoring side can use, so a broken artifact fails on the driver with its path, not as a
    stack trace from every executor or as every row flagged bad."""
    import onnx

    try:
        model = onnx.load_model_from_string(data)
        onnx.checker.check_model(model)
    except Exception as err:  # protobuf DecodeError, onnx ValidationError
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ArtifactError(
            f"{model_path} is not a valid ONNX model ({first[:200]}); rebuild the artifact with "
            "'leanscore compress'"
        ) from err
    initializers = {i.name for i in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    if not inputs:
        raise ArtifactError(f"{model_path} is not a valid ONNX model (it has no graph inputs)")
    features = manifest.features
    if features.text_column is not None:
        return
    dims = inputs[0].type.tensor_type.shape.dim
    width = dims[-1].dim_value if dims and dims[-1].HasField("dim_value") else None
    if features.image is not None:
        _check_image_input(inputs[0].name, dims, features.image, model_path)
    elif width is not None and width != features.size:
        raise ArtifactError(
            f"manifest features.size {features.size} does not match model input "
            f"{inputs[0].name!r} with shape [..., {width}]; the manifest belongs to another "
            "model: rebuild the artifact with 'leanscore compress'"
        )
    recorded = manifest.input_range
    if recorded is not None and len(recorded.low) != features.size:
        raise ArtifactError(
            f"manifest input_range holds {len(recorded.low)} features but features.size is "
            f"{features.size}; the manifest was edited or belongs to another model: rebuild the "
            "artifact with 'leanscore compress'"
        )


def _check_image_input(name: str, dims, image: ImageSpec, model_path: Path) -> None:
    """An image model's input is (batch, channels, height, width); fixed axes must match."""
    shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    fits = len(shape) == 4 and all(
        got is None or got == want for got, want in zip(shape[1:], image.shape, strict=True)
    )
    if not fits:
        raise ArtifactError(
            f"manifest features.image expects input (batch, {image.channels}, {image.height}, "
            f"{image.width}) but model input {name!r} of {model_path} has shape {shape}; the "
            "manifest belongs to another model: rebuild the artifact with 'leanscore compress'"
        )


def write_artifact(
    out_dir: str | os.PathLike[str],
    model_bytes: bytes,
    manifest_fields: dict[str, Any],
    *,
    extra_files: dict[str, bytes] | None = None,
    reference: tuple[bytes, dict[str, Any]] | None = None,
) -> Artifact:
    """Write ``model.onnx`` and ``manifest.json`` atomically: a reader sees the old artifact or
    the whole new one, never half of it. ``sha256`` and ``model_bytes`` are computed here, and
    the sha256 of every ``extra_files`` entry (e.g. ``tokenizer.json``) goes in ``files``.
    ``reference`` (the uncompressed model's bytes and manifest fields) is written as an artifact
    of its own in ``REFERENCE_DIR``, with the same extra files, and linked from the manifest."""
    out_dir = Path(out_dir).resolve()
    extra_files = extra_files or {}
    for name in extra_files:
        if Path(name).name != name or name in (MODEL_FILE, MANIFEST_FILE):
            raise ArtifactError(f"extra file name {name!r} must be a plain, unreserved file name")
    fields = {**manifest_fields, "sha256": sha256_hex(model_bytes), "model_bytes": len(model_bytes)}
    if extra_files:
        fields["files"] = {name: sha256_hex(data) for name, data in extra_files.items()}
    if reference is not None:
        fields["reference"] = REFERENCE_DIR
    manifest = Manifest.model_validate(fields)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        (staging / manifest.model_file).write_bytes(model_bytes)
        for name, data in extra_files.items():
            (staging / name).write_bytes(data)
        if reference is not None:
            write_artifact(
                staging / REFERENCE_DIR, reference[0], reference[1], extra_files=extra_files
            )
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
