"""A local Hugging Face sequence classifier as a compression source.

Any ``AutoModelForSequenceClassification`` saved with ``save_pretrained`` (BERT, DistilBERT,
MiniLM, RoBERTa...: ``config.json``, the weights, and the fast tokenizer's ``tokenizer.json``)
is loaded from its folder, never from the hub, and exported to ONNX with the softmax inside the
graph: inputs ``input_ids`` and ``attention_mask`` (int64, batch x sequence, both axes dynamic),
output ``probabilities`` (batch x classes). From there the recipe engine's ONNX-side steps
(``quantize``: dynamic or static int8, fp16) apply, and its gate decides on held-out accuracy.

The held-out and calibration texts reach the engine as ``LabelledData`` whose rows are the texts
themselves; ``TextClassifierInputs.attach`` gives them the ``batches`` that tokenize them with
the model's own ``tokenizer.json`` and cut the calls exactly as the ``text_classifier`` scoring
family does (``leanscore.compression.text_inputs``). The artifact carries ``tokenizer.json``,
hashed in the manifest like the model.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from leanscore.compression.data import LabelledData
from leanscore.compression.models import WithSoftmax
from leanscore.compression.text_inputs import (
    TOKEN_INPUTS,
    TOKENIZER_FILE,
    encode,
    tokenized_batches,
    tokenizer_from_bytes,
)
from leanscore.compression.torch_export import check_parity, export_token_model
from torch import nn

OUTPUT_NAME = "probabilities"
FAMILY = "text_classifier"
PARITY_TEXTS = (
    "A short sentence to check the exported graph against the PyTorch model.",
    "Another, longer sentence: the export must give the same probabilities whatever the "
    "padding, the batch size and the sequence length of the call.",
)


def model_folder(path: Path) -> Path:
    """``path`` checked to be a saved sequence classifier with a fast tokenizer."""
    if not path.is_dir():
        raise FileNotFoundError(
            f"model.path: {path} is not a folder; give the folder a Hugging Face model was saved "
            "to with save_pretrained"
        )
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"model.path: {path} has no config.json; save the model with "
            "model.save_pretrained(path)"
        )
    if not (path / TOKENIZER_FILE).is_file():
        raise FileNotFoundError(
            f"model.path: {path} has no {TOKENIZER_FILE}; save the model's fast tokenizer there "
            "too: tokenizer.save_pretrained(path)"
        )
    return path


def load_classifier(path: Path) -> nn.Module:
    """The model, from the folder only (no hub), eager attention (exports with dynamic axes)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForSequenceClassification

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = AutoModelForSequenceClassification.from_pretrained(
                str(path), local_files_only=True, attn_implementation="eager"
            )
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"model.path: {path} does not load as a sequence classifier "
            f"(AutoModelForSequenceClassification): {first}"
        ) from err
    return model.eval()


def class_labels_of(path: Path) -> list[str]:
    """The class names in ``config.json``'s ``id2label``, in class-index order."""
    config = json.loads((path / "config.json").read_text())
    id2label = config.get("id2label") or {}
    count = len(id2label) or int(config.get("num_labels", 2))
    return [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(count)]


def export_classifier_onnx(model: nn.Module, *, opset: int) -> bytes:
    """The classifier with its softmax, batch and sequence axes dynamic
    (``export_token_model``, as for the MiniLM encoder)."""
    return export_token_model(WithSoftmax(model), output_name=OUTPUT_NAME, opset=opset)


def export_source(
    path: Path,
    *,
    max_length: int,
    opset: int,
    parity_atol: float,
    sample_texts: list[str] | None,
    progress=lambda msg: None,
) -> tuple[bytes, dict]:
    """(the served ONNX model, the source's description) of the classifier in ``path``."""
    path = model_folder(path)
    model = load_classifier(path)
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions is not None and max_length > positions:
        raise ValueError(
            f"model.max_length {max_length} is more than the {positions} positions the model in "
            f"{path} has; use at most {positions}"
        )
    progress(f"exporting {type(model).__name__} from {path} to ONNX with a softmax")
    onnx_bytes = export_classifier_onnx(model, opset=opset)
    tokenizer = tokenizer_from_bytes((path / TOKENIZER_FILE).read_bytes(), max_length)
    texts = list(sample_texts or PARITY_TEXTS)[:16]
    matrix = encode(tokenizer, texts)  # padded together, as one call of several lengths
    feeds = {"input_ids": matrix[:, 0], "attention_mask": matrix[:, 1]}
    diff = check_parity(WithSoftmax(model), onnx_bytes, feeds, atol=parity_atol, what="texts")
    info = {
        "kind": "huggingface",
        "path": str(path),
        "architecture": type(model).__name__,
        "model_type": model.config.model_type,
        "layers": getattr(model.config, "num_hidden_layers", None),
        "hidden_size": getattr(model.config, "hidden_size", None),
        "params": int(sum(p.numel() for p in model.parameters())),
        "max_length": max_length,
        "opset": opset,
        "parity_max_abs_diff": diff,
        "parity_texts": len(texts),
    }
    return onnx_bytes, info


@dataclass(frozen=True)
class TextClassifierInputs:
    """What the recipe engine and the artifact need beyond the ONNX model: the tokenizer (its
    bytes go into the artifact), the class names, and how texts become calls."""

    tokenizer_bytes: bytes
    max_length: int
    class_labels: list[str]
    input_names: tuple[str, ...] = TOKEN_INPUTS
    family: str = FAMILY
    recipe_family: str = FAMILY  # exported before the recipe: ONNX-side steps only

    @classmethod
    def of(cls, path: Path, *, max_length: int) -> TextClassifierInputs:
        path = model_folder(path)
        return cls((path / TOKENIZER_FILE).read_bytes(), max_length, class_labels_of(path))

    def features(self, text_column: str) -> dict:
        return {"text_column": text_column, "tokenizer": TOKENIZER_FILE, "size": self.max_length}

    def files(self) -> dict[str, bytes]:
        return {TOKENIZER_FILE: self.tokenizer_bytes}

    def exporter(self):
        """None: the classifier reaches the recipe already exported."""
        return None

    def attach(self, data: LabelledData, *, name: str) -> LabelledData:
        """``data`` (rows: texts) with the ``batches`` that tokenize them as scoring does, and
        class names as labels turned into class indices."""
        calls = tokenized_batches(
            data,
            name=name,
            reader="text classifier",
            tokenizer_bytes=self.tokenizer_bytes,
            max_length=self.max_length,
            input_names=self.input_names,
        )
        return replace(data, labels=self._label_indices(data.labels, name), batches=calls)

    def _label_indices(self, labels: np.ndarray | None, name: str) -> np.ndarray | None:
        if labels is None or labels.dtype != object:
            if (
                labels is not None
                and len(labels)
                and not (labels.min() >= 0 and labels.max() < len(self.class_labels))
            ):
                raise ValueError(
                    f"data.{name}: labels run from {labels.min()} to {labels.max()} but the "
                    f"model has {len(self.class_labels)} classes {self.class_labels}"
                )
            return labels
        index = {label: i for i, label in enumerate(self.class_labels)}
        unknown = sorted({str(v) for v in labels if v not in index})
        if unknown:
            raise ValueError(
                f"data.{name}: labels {unknown[:5]} are not classes of the model; its classes "
                f"(config.json id2label) are {self.class_labels}"
            )
        return np.array([index[v] for v in labels], dtype=np.int64)
