"""What the text families share (``text_embedding``, ``text_classifier``): one string column,
tokenized inside the task with the artifact's own ``tokenizer.json``, grouped into ONNX Runtime
calls by length. The subclasses differ only in the task they score and the columns they write.

The tokenizer reaches the executors in the family object: its bytes, checked against the
manifest's sha256 on the driver (``attach``), are pickled into the tasks with it (a
``tokenizer.json`` is well under a megabyte; PySpark broadcasts a pickled function over
``spark.broadcast.UDFCompressionThreshold`` itself). Each worker process verifies the bytes
again and builds the tokenizer once (``worker_tokenizer``); the tokenizer object never travels.

Bad rows: a null, non-string, empty or blank text, or one over ``max_chars`` characters (checked
before tokenizing), and under ``long_text='bad'`` one over ``max_length`` tokens; each reason
names the column, and the kernel applies ``bad_rows`` (flag or fail). The batch's matrix is the
(rows, 2, width) int64 token matrix of ``leanscore.compression.text_inputs``; calls are cut from
rows ordered by token count (``sort_by_length``), so short texts are not padded to a long one.
Tokenizing and grouping are the functions ``leanscore compress`` measured the model with.

A row's output must not depend on its call mates. A dynamically quantized encoder
(``manifest.batch_dependent``) takes its activation scales from the whole call, padding
included: on all-MiniLM-L6-v2 dynamic int8, a sentence embedded with 15 others (length-sorted
calls of 16) had a cosine as low as 0.980 (mean 0.992) to the same sentence embedded alone,
while fp32 matched to 4e-8. Such a model therefore scores every text in a call of its own, as
``leanscore compress`` measures it; a batch-independent model (fp32, static int8) is batched.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import ClassVar

import numpy as np
from leanscore.compression.artifact import verify_sha256
from leanscore.compression.tabular_inputs import Batch
from leanscore.compression.text_inputs import (
    DISABLED_OPTIMIZERS,
    call_groups,
    check_input_names,
    feeds,
    token_matrix,
)
from leanscore.udfs.families.base import Family
from leanscore.udfs.options import DEFAULT_MAX_CHARS

# Texts per ONNX Runtime call: on one CPU thread MiniLM ran 5-10% faster, fp32 and int8 alike,
# with 16 than with 32, whose activations no longer stay in the core's cache.
TEXT_BATCH_ROWS = 16

_tokenizers: dict[tuple[str, int], object] = {}
_lock = threading.Lock()


def worker_tokenizer(data: bytes, sha256: str, max_length: int):
    """One tokenizer per worker process and max length, built from verified bytes."""
    key = (sha256, max_length)
    tok = _tokenizers.get(key)
    if tok is None:
        with _lock:
            tok = _tokenizers.get(key)
            if tok is None:
                from leanscore.compression.text_inputs import tokenizer_from_bytes

                verify_sha256(data, sha256, source="tokenizer sent with the scoring family")
                tok = tokenizer_from_bytes(data, max_length)
                _tokenizers[key] = tok
    return tok


def text_reasons(texts: list, *, column: str, max_chars: int) -> list[str | None]:
    """Per row: None when the text can be tokenized, else why not (null, not a string, empty
    or blank, longer than ``max_chars``), naming the column."""
    reasons: list[str | None] = []
    for value in texts:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            reasons.append(f"column {column!r} is null")
        elif not isinstance(value, str):
            reasons.append(f"column {column!r} holds {type(value).__name__}, not a string")
        elif not value.strip():
            reasons.append(f"column {column!r} is an empty string {value!r}")
        elif len(value) > max_chars:
            reasons.append(
                f"column {column!r} has {len(value)} characters, more than max_chars={max_chars}"
            )
        else:
            reasons.append(None)
    return reasons


class TextFamily(Family):
    """The shared text reader; a subclass sets ``name`` and ``task`` and names its outputs."""

    task: ClassVar[str]
    default_batch_size = TEXT_BATCH_ROWS

    def __init__(self, manifest):
        super().__init__(manifest)
        spec = manifest.features
        if spec.text_column is None or spec.tokenizer is None:
            raise ValueError(
                f"model {manifest.name!r} has family {self.name!r} but its features name no "
                "text_column and tokenizer; rebuild it with 'leanscore compress'"
            )
        if manifest.task != self.task:
            raise ValueError(
                f"model {manifest.name!r} is a text {manifest.task} model; the {self.name!r} "
                f"family scores text {self.task} models"
            )
        self.input_names = [t.name for t in manifest.inputs]
        check_input_names(self.input_names, model=manifest.name)
        self.tokenizer_bytes: bytes | None = None
        self.column = spec.text_column
        self.max_length = spec.size
        self.long_text = "truncate"
        self.max_chars = DEFAULT_MAX_CHARS
        self.sort_by_length = True
        self.alone = manifest.batch_dependent is not False

    def configure(self, options) -> None:
        size = self.manifest.features.size
        max_length = options.max_length or size
        if max_length > size:
            raise ValueError(
                f"max_length is {max_length}, more than the {size} tokens model "
                f"{self.manifest.name!r} was built for; use at most {size}"
            )
        self.max_length = max_length
        self.long_text = options.long_text
        self.max_chars = options.max_chars
        self.sort_by_length = options.sort_by_length

    def session_config(self, config):
        if config.disabled_optimizers is None:
            return dataclasses.replace(config, disabled_optimizers=DISABLED_OPTIMIZERS)
        return config

    # --- the tokenizer --------------------------------------------------------------------
    def attach(self, artifact) -> None:
        self.tokenizer_bytes = artifact.read_file(self.manifest.features.tokenizer)

    def tokenizer(self):
        if self.tokenizer_bytes is None:
            raise RuntimeError(
                f"the tokenizer of model {self.manifest.name!r} was not attached; build the "
                "scorer with leanscore.udfs.prepare.build_scorer"
            )
        sha256 = self.manifest.files[self.manifest.features.tokenizer]
        return worker_tokenizer(self.tokenizer_bytes, sha256, self.max_length)

    # --- inputs -------------------------------------------------------------------------
    def input_columns(self) -> list[str]:
        return [self.column]

    def check_input_types(self, types: dict) -> None:
        from pyspark.sql.types import StringType

        if not isinstance(types[self.column], StringType):
            raise TypeError(
                f"text column {self.column!r} has type {types[self.column].simpleString()}, the "
                "model needs a string; cast it before scoring"
            )

    def from_pandas(self, columns) -> Batch:
        return self.from_texts(columns[0].tolist())

    def from_arrow(self, arrays) -> Batch:
        return self.from_texts(arrays[0].to_pylist())

    def from_texts(self, texts: list) -> Batch:
        """The token matrix of the good texts (bad rows all zeros), the bad rows and why."""
        reasons = text_reasons(texts, column=self.column, max_chars=self.max_chars)
        good = [i for i, r in enumerate(reasons) if r is None]
        encodings = self.tokenizer().encode_batch([texts[i] for i in good]) if good else []
        if self.long_text == "bad":
            for i, encoding in zip(good, encodings, strict=True):
                if encoding.overflowing:
                    reasons[i] = (
                        f"column {self.column!r} has more than max_length={self.max_length} "
                        "tokens; raise max_length or use long_text='truncate'"
                    )
            kept = [(i, e) for i, e in zip(good, encodings, strict=True) if reasons[i] is None]
            good, encodings = [i for i, _ in kept], [e for _, e in kept]
        matrix = token_matrix([e.ids for e in encodings], len(texts), good)
        bad = np.array([r is not None for r in reasons], dtype=bool)
        return Batch(matrix, bad, reasons)

    def element_name(self, j: int) -> str:
        return f"column {self.column!r}"

    def nonfinite_hint(self) -> str:
        return f"its text in column {self.column!r} may be far from what the model was built for"

    def feeds(self, input_name: str, inputs: np.ndarray) -> dict[str, np.ndarray]:
        return feeds(inputs, self.input_names)

    def call_groups(self, inputs: np.ndarray, batch_size: int) -> list[np.ndarray] | None:
        """One call per text for a batch-dependent model; else calls of up to ``batch_size``
        texts, ordered by token count unless ``sort_by_length`` is off (then None: the
        kernel's consecutive chunks)."""
        if self.alone:
            return [np.array([i]) for i in range(len(inputs))]
        return call_groups(inputs, batch_size) if self.sort_by_length else None
