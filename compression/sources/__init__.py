"""Where a model and its data come from: a PyTorch factory plus a state_dict checkpoint, an
existing ONNX file, a model logged to MLflow (``mlflow.pytorch`` or ``mlflow.onnx``, named by a
``models:/`` or ``runs:/`` URI), or a built-in digits model trained on the spot; labelled rows from
scikit-learn's digits (optionally augmented) or from a Parquet/Delta table sample.

This module holds each ``model.kind``'s config and loads it; what a kind needs beyond a few
lines has a module of its own here: ``onnx_model`` (an ONNX file's inputs and outputs),
``hf_classifier`` and ``hf_encoder`` (Hugging Face models exported with their tokenizer),
``table`` (a labelled sample of a Parquet/Delta table); the MLflow registry is
``compression.mlflow_registry``, shared with the scoring side."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from leanscore.compression.artifact import ImageSpec
from leanscore.compression.data import LabelledData
from leanscore.compression.sources.table import TableSample, read_table_sample
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BuiltinModel(_Spec):
    """A reference digits model (MLP or small CNN) trained here on ``data.train``."""

    kind: Literal["builtin-digits-mlp", "builtin-digits-cnn"]
    epochs: int = Field(default=8, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    seed: int = 0
    hidden: list[int] | None = Field(default=None, description="MLP hidden widths")
    channels: list[int] | None = Field(default=None, min_length=3, max_length=3)


class TorchModel(_Spec):
    """A PyTorch module: ``factory`` ('package.module:function') builds it, ``checkpoint`` (a
    state_dict saved with torch.save) fills it. Loaded with weights_only=True: no pickled code."""

    kind: Literal["torch"]
    factory: str = Field(pattern=r"^[\w.]+:\w+$")
    kwargs: dict[str, Any] = Field(default_factory=dict)
    checkpoint: str | None = None
    input_shape: list[int] = Field(min_length=1, description="one row's shape, batch excluded")


class OnnxOutputs(_Spec):
    """Which of an ONNX file's outputs hold what (checked against the graph by
    ``sources.onnx_model``): a classifier's class ``probabilities`` (scored and
    measured) and, optionally, its ``label`` (checked to be the most probable class); a
    regression's ``value``."""

    label: str | None = None
    probabilities: str | None = None
    value: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> OnnxOutputs:
        if self.value is not None and (self.label is not None or self.probabilities is not None):
            raise ValueError("give 'value' (a regression) or 'label'/'probabilities', not both")
        if self.value is None and self.probabilities is None:
            raise ValueError(
                "name the output that holds the result: 'probabilities' (a classifier) or "
                "'value' (a regression)"
            )
        return self


class OnnxModel(_Spec):
    """An existing ONNX file: only ONNX-side steps (quantize, truncate_trees) apply.

    "As given": ``feature_columns`` (or one array ``feature_column``) say which table columns
    feed the graph's ``input``, in which order, and ``outputs`` which outputs hold the result;
    the mapping is checked against the graph before any data is read and recorded in the
    artifact's manifest. Without ``outputs`` the first output is the result."""

    kind: Literal["onnx"]
    path: str
    input: str | None = Field(default=None, description="the graph input; default: its only one")
    feature_columns: list[str] | None = Field(
        default=None, min_length=1, description="table columns feeding the input, in order"
    )
    feature_column: str | None = Field(default=None, description="or one array column")
    outputs: OnnxOutputs | None = None

    @model_validator(mode="after")
    def _one_layout(self) -> OnnxModel:
        if self.feature_columns is not None and self.feature_column is not None:
            raise ValueError("give one of 'feature_columns' or 'feature_column', not both")
        keys = ("input", "feature_columns", "feature_column")
        declared = [k for k in keys if getattr(self, k) is not None]
        if declared and self.outputs is None:
            raise ValueError(
                f"{declared[0]} is declared but 'outputs' is not: an ONNX model as given names "
                "its result output too ({probabilities: NAME, label: NAME} or {value: NAME})"
            )
        if self.feature_columns is not None:
            names = self.feature_columns
            repeated = sorted({c for c in names if names.count(c) > 1})
            if repeated:
                raise ValueError(f"feature_columns names {repeated} more than once")
        return self

    @property
    def as_given(self) -> bool:
        """Whether the config declares the mapping (the 'ONNX as given' family)."""
        return self.outputs is not None


class MlflowModel(_Spec):
    """A model logged to MLflow, as data scientists hand models over: ``mlflow.pytorch``
    (loaded as the torch module) or ``mlflow.onnx`` (only ONNX-side steps apply)."""

    kind: Literal["mlflow"]
    uri: str = Field(
        pattern=r"^(models|runs):/.+",
        description="models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/PATH",
    )
    input_shape: list[int] | None = Field(
        default=None,
        min_length=1,
        description="a PyTorch model's row shape, batch excluded; default: its signature",
    )


class HuggingFaceModel(_Spec):
    """A local Hugging Face BERT-family model folder (``save_pretrained``: config.json, the
    weights, tokenizer.json); the data are texts (a table's ``text_column``). The compress
    config's ``task`` says what it is: ``classification``, a sequence classifier exported to
    ONNX with its softmax before the recipe (ONNX-side steps apply;
    ``leanscore.compression.sources.hf_classifier``), or ``embedding``, an encoder with mean pooling
    that the recipe gets as a torch module (text steps, export, quantize;
    ``leanscore.compression.sources.hf_encoder``)."""

    kind: Literal["huggingface"]
    path: str
    max_length: int = Field(default=128, ge=2, description="tokens per text, longer ones cut")
    opset: int = Field(default=17, ge=14)
    parity_atol: float = Field(default=1e-4, gt=0)


ModelSource = Annotated[
    BuiltinModel | TorchModel | OnnxModel | MlflowModel | HuggingFaceModel,
    Field(discriminator="kind"),
]


class DigitsSample(_Spec):
    """scikit-learn's real 8x8 digits, a fixed split, plus augmented copies (shifts, noise)."""

    kind: Literal["digits"]
    split: Literal["train", "held_out"]
    augmented_rows: int = Field(default=0, ge=0)
    include_originals: bool = True
    seed: int = 0


DataSpec = Annotated[DigitsSample | TableSample, Field(discriminator="kind")]


def _resolve(path: str, base_dir: Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else base_dir / p


def import_factory(spec: str) -> Callable[..., nn.Module]:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"factory {spec!r}: cannot import module {module_name!r} ({err})") from err
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"factory {spec!r}: module {module_name!r} has no callable {attr!r}")
    return factory


def load_digits_sample(spec: DigitsSample) -> LabelledData:
    from leanscore.compression.data import augment, digits_splits

    train, held_out = digits_splits()
    split = train if spec.split == "train" else held_out
    parts_x, parts_y = [], []
    if spec.include_originals:
        parts_x.append(split.features)
        parts_y.append(split.labels)
    if spec.augmented_rows:
        x, y = augment(split, spec.augmented_rows, np.random.default_rng([spec.seed, 1]))
        parts_x.append(x)
        parts_y.append(y)
    if not parts_x:
        raise ValueError("digits data is empty: set include_originals or augmented_rows")
    source = {"dataset": "sklearn.datasets.load_digits", **spec.model_dump(exclude={"kind"})}
    return LabelledData(
        np.ascontiguousarray(np.concatenate(parts_x)), np.concatenate(parts_y), source
    )


def load_data(
    spec: DigitsSample | TableSample, *, base_dir: Path, spark=None, image: ImageSpec | None = None
) -> LabelledData:
    """The labelled rows ``spec`` names; ``image`` decodes a table's image (or pixel array)
    column into (n, C, H, W) inputs, as scoring will."""
    if isinstance(spec, DigitsSample):
        if image is not None:
            raise ValueError(
                "the built-in digits rows are 64 flat pixels, not images; an 'image' model "
                "needs table data (kind: table with image_column or feature_column)"
            )
        return load_digits_sample(spec)
    path = spec.path if "://" in spec.path else str(_resolve(spec.path, base_dir))
    return read_table_sample(spec.model_copy(update={"path": path}), spark=spark, image=image)


def load_model(
    spec: BuiltinModel | TorchModel | OnnxModel | MlflowModel | HuggingFaceModel,
    *,
    base_dir: Path,
    train: LabelledData | None,
    progress: Callable[[str], None] = lambda msg: None,
    task: str = "classification",
) -> tuple[nn.Module | bytes, torch.Tensor | None, dict]:
    """Return (model or ONNX bytes, an example input batch, the source's description);
    ``task`` tells a Hugging Face classifier from an encoder."""
    if isinstance(spec, OnnxModel):
        path = _resolve(spec.path, base_dir)
        if not path.is_file():
            raise FileNotFoundError(f"model.path: ONNX file {path} does not exist")
        import onnx

        data = path.read_bytes()
        try:
            onnx.checker.check_model(onnx.load_model_from_string(data))
        except Exception as err:  # noqa: BLE001 - onnx raises several types
            raise ValueError(f"model.path: {path} is not a valid ONNX model: {err}") from err
        return data, None, {"kind": "onnx", "path": str(path)}
    if isinstance(spec, TorchModel):
        return _load_torch(spec, base_dir)
    if isinstance(spec, HuggingFaceModel) and task == "embedding":
        from leanscore.compression.sources.hf_encoder import load_source

        encoder, info = load_source(
            _resolve(spec.path, base_dir), max_length=spec.max_length, progress=progress
        )
        return encoder, None, info
    if isinstance(spec, HuggingFaceModel):
        from leanscore.compression.sources.hf_classifier import export_source

        texts = None
        if train is not None and train.features.dtype == object:
            texts = [str(t) for t in train.features[:16]]
        data, info = export_source(
            _resolve(spec.path, base_dir),
            max_length=spec.max_length,
            opset=spec.opset,
            parity_atol=spec.parity_atol,
            sample_texts=texts,
            progress=progress,
        )
        return data, None, info
    if isinstance(spec, MlflowModel):
        return _load_mlflow(spec, progress)
    return _train_builtin(spec, train, progress)


def _load_mlflow(spec: MlflowModel, progress):
    """Resolve the URI to a version, download it once, and load its ONNX bytes or its torch
    module; any other flavor is refused with the URI and the flavors it has."""
    from leanscore.compression.mlflow_registry import (
        RegistryError,
        download,
        mlmodel_flavors,
        resolve,
    )

    ref = resolve(spec.uri)
    progress(f"downloading {ref.source} ({spec.uri})")
    local = download(ref)
    flavors = mlmodel_flavors(local)
    info = {"kind": "mlflow", **ref.facts()}
    if "onnx" in flavors:
        import onnx

        path = local / flavors["onnx"].get("data", "model.onnx")
        try:  # mlflow.onnx stores weights as external data by default: load them too
            data = onnx.load(str(path), load_external_data=True).SerializeToString()
            onnx.checker.check_model(onnx.load_model_from_string(data))
        except Exception as err:  # noqa: BLE001 - onnx raises several types
            raise RegistryError(f"{spec.uri}: its ONNX model does not load ({err})") from None
        return data, None, {**info, "flavor": "onnx"}
    if "pytorch" in flavors:
        import mlflow.pytorch

        model = mlflow.pytorch.load_model(str(local), map_location="cpu")
        if not isinstance(model, nn.Module):
            raise RegistryError(f"{spec.uri}: its pytorch flavor holds {type(model).__name__}")
        try:
            model.eval()
        except NotImplementedError:  # a torch.export program (pt2, MLflow's default format)
            model = _inference_only(model, spec.uri)
        shape = spec.input_shape or _signature_row_shape(local)
        if shape is None:
            raise RegistryError(
                f"{spec.uri}: the model has no tensor signature to take its input shape from; "
                "give model.input_shape (one row's shape, batch excluded)"
            )
        example = torch.zeros((2, *shape), dtype=torch.float32)
        try:
            with torch.no_grad():
                model(example)
        except Exception as err:  # noqa: BLE001
            raise ValueError(f"model.input_shape {shape} does not fit {spec.uri}: {err}") from None
        return model, example, {**info, "flavor": "pytorch", "input_shape": shape}
    raise RegistryError(
        f"{spec.uri}: not an ONNX or PyTorch model (flavors: "
        f"{', '.join(sorted(flavors)) or 'none: not an MLflow model'}); log it with "
        "mlflow.pytorch or mlflow.onnx"
    )


def _inference_only(model: nn.Module, uri: str) -> nn.Module:
    """A torch.export program (``serialization_format='pt2'``) refuses ``train()``/``eval()``:
    it is already an inference graph. Let ``eval()`` pass; refuse training with the fix."""
    import types

    def train(self, mode: bool = True):
        if mode:
            raise ValueError(
                f"{uri} is a torch.export program (pt2), an inference graph that cannot be "
                "fine-tuned; use ONNX-side steps only, or log the model with "
                "mlflow.pytorch.log_model(..., serialization_format='pickle')"
            )
        return self

    model.train = types.MethodType(train, model)
    return model


def _signature_row_shape(local: Path) -> list[int] | None:
    """One row's shape from an MLflow model's tensor input signature ((-1, 64) -> [64])."""
    from mlflow.models import Model
    from mlflow.types.schema import TensorSpec

    signature = Model.load(str(local)).signature
    inputs = signature.inputs.inputs if signature is not None and signature.inputs else []
    if len(inputs) == 1 and isinstance(inputs[0], TensorSpec):
        shape = list(inputs[0].shape[1:])
        return shape if shape and all(d > 0 for d in shape) else None
    return None


def _load_torch(spec: TorchModel, base_dir: Path):
    model = import_factory(spec.factory)(**spec.kwargs)
    if not isinstance(model, nn.Module):
        raise ValueError(
            f"model.factory {spec.factory!r} returned {type(model).__name__}, not a torch.nn.Module"
        )
    info = {"kind": "torch", "factory": spec.factory, "kwargs": spec.kwargs}
    if spec.checkpoint:
        path = _resolve(spec.checkpoint, base_dir)
        if not path.is_file():
            raise FileNotFoundError(f"model.checkpoint: {path} does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - unpickling refuses code with several types
            raise ValueError(
                f"model.checkpoint: {path} is not a plain state_dict loadable with "
                f"weights_only=True ({str(err).splitlines()[0]}); save model.state_dict()"
            ) from err
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ValueError(
                f"model.checkpoint: {path} holds {type(state).__name__}, not a state_dict"
            )
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(
                f"model.checkpoint: {path} does not fit {spec.factory}: missing keys "
                f"{result.missing_keys[:10]}, unexpected keys {result.unexpected_keys[:10]}"
            )
        info["checkpoint"] = str(path)
    model.eval()
    example = torch.zeros((2, *spec.input_shape), dtype=torch.float32)
    try:
        with torch.no_grad():
            model(example)
    except Exception as err:  # noqa: BLE001
        raise ValueError(
            f"model.input_shape {spec.input_shape} does not fit {spec.factory}: {err}"
        ) from err
    return model, example, info


def _train_builtin(spec: BuiltinModel, train: LabelledData | None, progress):
    from leanscore.compression.models import digits_cnn, digits_mlp, train_classifier

    if train is None or train.labels is None:
        raise ValueError(f"model.kind {spec.kind!r} is trained here: give labelled data.train")
    torch.manual_seed(spec.seed)
    images = train.features.ndim == 4  # (n, C, H, W) from an image table
    if spec.kind == "builtin-digits-mlp":
        if images:
            raise ValueError(
                "model.kind 'builtin-digits-mlp' reads 64 pixel features, but the data are "
                f"images {list(train.features.shape[1:])}; use 'builtin-digits-cnn'"
            )
        model = digits_mlp(spec.hidden)
    else:
        shape = tuple(train.features.shape[1:]) if images else (1, 8, 8)
        model = digits_cnn(spec.channels, input_shape=shape)
    progress(f"training {spec.kind} for {spec.epochs} epochs on {len(train.features):,} rows")
    train_classifier(
        model,
        train.features,
        train.labels,
        epochs=spec.epochs,
        lr=spec.lr,
        seed=spec.seed,
        progress=lambda e, loss: progress(f"  epoch {e + 1}/{spec.epochs} loss {loss:.4f}"),
    )
    example = torch.from_numpy(np.ascontiguousarray(train.features[:8]))
    return model, example, {"kind": spec.kind, **spec.model_dump(exclude={"kind"})}


def text_inputs(spec, *, base_dir: Path, task: str = "classification"):
    """For a model that reads texts: its tokenizer, class names, how texts become calls and
    how it exports (``hf_classifier.TextClassifierInputs``, ``hf_encoder.TextEmbeddingInputs``);
    None for every other."""
    if not isinstance(spec, HuggingFaceModel):
        return None
    path = _resolve(spec.path, base_dir)
    if task == "embedding":
        from leanscore.compression.sources.hf_encoder import TextEmbeddingInputs

        return TextEmbeddingInputs.of(path, max_length=spec.max_length)
    from leanscore.compression.sources.hf_classifier import TextClassifierInputs

    return TextClassifierInputs.of(path, max_length=spec.max_length)
