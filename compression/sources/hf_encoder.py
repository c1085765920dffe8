"""A local Hugging Face encoder (BERT family) as a sentence-embedding compression source.

The compress config names the folder (``model.kind: huggingface``, saved with
``save_pretrained``: config.json, the weights, the fast tokenizer's ``tokenizer.json``) and
``task: embedding``. The encoder is loaded from the folder only (never the hub), wrapped with
mean pooling over real tokens and L2 normalisation (``text_model.SentenceEncoder``, the
sentence-transformers recipe of all-MiniLM-L6-v2) and handed to the recipe engine as a torch
model, so every text step applies (``drop_layers``, ``prune_ffn``, ``distill_embeddings``), then
``export`` and ``quantize``; the gate is the mean cosine to the model as given on held-out texts.

Where a text classifier is exported before the recipe (``hf_classifier``), an encoder stays a
torch module until the recipe's ``export``: the structural steps need the module.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from leanscore.compression.data import LabelledData
from leanscore.compression.sources.hf_classifier import model_folder
from leanscore.compression.text_inputs import TOKEN_INPUTS, TOKENIZER_FILE, tokenized_batches

RECIPE_FAMILY = "text_embedding"


def load_source(path: Path, *, max_length: int, progress=lambda msg: None):
    """(the sentence encoder, the source's description) of the encoder saved in ``path``."""
    from leanscore.compression.text_model import load_encoder

    path = model_folder(path)
    progress(f"loading the encoder in {path} with mean pooling and L2 normalisation")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            encoder = load_encoder(path)
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"model.path: {path} does not load as a Hugging Face encoder (AutoModel): {first}"
        ) from err
    config = encoder.bert.config
    positions = getattr(config, "max_position_embeddings", None)
    if positions is not None and max_length > positions:
        raise ValueError(
            f"model.max_length {max_length} is more than the {positions} positions the model in "
            f"{path} has; use at most {positions}"
        )
    if not hasattr(getattr(encoder.bert, "encoder", None), "layer"):
        raise ValueError(
            f"model.path: {path} holds a {type(encoder.bert).__name__}, not a BERT-family "
            "encoder (encoder.layer); leanscore compresses BERT-family encoders"
        )
    info = {
        "kind": "huggingface",
        "path": str(path),
        "architecture": type(encoder.bert).__name__,
        "model_type": config.model_type,
        "layers": getattr(config, "num_hidden_layers", None),
        "hidden_size": getattr(config, "hidden_size", None),
        "params": int(sum(p.numel() for p in encoder.parameters())),
        "pooling": "mean, L2-normalised",
        "max_length": max_length,
    }
    return encoder, info


@dataclass(frozen=True)
class TextEmbeddingInputs:
    """What the recipe engine and the artifact need beyond the model: the tokenizer (its bytes
    go into the artifact), how texts become calls, how the encoder is exported."""

    tokenizer_bytes: bytes
    max_length: int
    input_names: tuple[str, ...] = TOKEN_INPUTS
    family: str = "text_embedding"  # the scoring family (leanscore.udfs.families)
    recipe_family: str = RECIPE_FAMILY
    class_labels: list[str] | None = None

    @classmethod
    def of(cls, path: Path, *, max_length: int) -> TextEmbeddingInputs:
        path = model_folder(path)
        return cls((path / TOKENIZER_FILE).read_bytes(), max_length)

    def features(self, text_column: str) -> dict:
        return {"text_column": text_column, "tokenizer": TOKENIZER_FILE, "size": self.max_length}

    def files(self) -> dict[str, bytes]:
        return {TOKENIZER_FILE: self.tokenizer_bytes}

    def exporter(self):
        from leanscore.compression.text_model import encoder_export

        return encoder_export(self.tokenizer_bytes, self.max_length)

    def attach(self, data: LabelledData, *, name: str) -> LabelledData:
        """``data`` (rows: texts) with the ``batches`` that tokenize them as scoring does."""
        calls = tokenized_batches(
            data,
            name=name,
            reader="text encoder",
            tokenizer_bytes=self.tokenizer_bytes,
            max_length=self.max_length,
            input_names=self.input_names,
        )
        if data.labels is not None:
            raise ValueError(
                f"data.{name}: an embedding model is gated on its cosine to the model as given, "
                "not on labels; drop label_column"
            )
        return replace(data, batches=calls)
