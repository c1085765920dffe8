"""The text classifier family: one string column, tokenized inside the task with the
artifact's own ``tokenizer.json``, scored by a BERT-family sequence classifier whose graph ends
in a softmax; a label and its probability (and all class probabilities) as outputs.

The tokenizer reaches the executors as the embedding UDF's does: its bytes, checked against the
manifest's sha256 on the driver (``attach``), ride in this object, which is pickled into the
tasks (a ``tokenizer.json`` is well under a megabyte; PySpark broadcasts a pickled function
over ``spark.broadcast.UDFCompressionThreshold`` itself). Each worker process verifies the bytes
again and builds the tokenizer once (``leanscore.udfs.text.worker_tokenizer``); the tokenizer
object itself never travels.

A null, non-string, empty or blank text (or one over ``MAX_CHARS`` characters) is a bad row
whose reason names the column; the kernel applies ``bad_rows`` (flag or fail). Texts over the
artifact's ``size`` tokens are truncated, as the model was evaluated. The batch's matrix is the
(rows, 2, width) int64 token matrix of ``leanscore.compression.text_inputs``; calls are cut
from rows ordered by length (``call_groups``), so a batch of short texts is not padded to its
longest one. Tokenization and grouping are the very functions ``leanscore compress`` measured
the held-out accuracy with.
"""

from __future__ import annotations

import numpy as np
from leanscore.compression.text_inputs import call_groups, check_input_names, feeds, token_matrix
from leanscore.udfs.batch import Batch
from leanscore.udfs.families.base import Family
from leanscore.udfs.families.tabular import task_columns, task_fields

MAX_CHARS = 100_000  # texts longer than this are bad rows, checked before tokenizing


class TextClassifierFamily(Family):
    name = "text_classifier"

    def __init__(self, manifest):
        super().__init__(manifest)
        spec = manifest.features
        if spec.text_column is None or spec.tokenizer is None:
            raise ValueError(
                f"model {manifest.name!r} has family 'text_classifier' but its features name no "
                "text_column and tokenizer; rebuild it with 'leanscore compress'"
            )
        if manifest.task != "classification":
            raise ValueError(
                f"model {manifest.name!r} has family 'text_classifier' but task "
                f"{manifest.task!r}; text embedding models are scored with 'leanscore embed'"
            )
        self.input_names = [t.name for t in manifest.inputs]
        check_input_names(self.input_names, model=manifest.name)
        self.tokenizer_bytes: bytes | None = None

    # --- the tokenizer --------------------------------------------------------------------
    def attach(self, artifact) -> None:
        self.tokenizer_bytes = artifact.read_file(self.manifest.features.tokenizer)

    def tokenizer(self):
        from leanscore.udfs.text import worker_tokenizer

        spec = self.manifest.features
        if self.tokenizer_bytes is None:
            raise RuntimeError(
                f"the tokenizer of model {self.manifest.name!r} was not attached; build the "
                "scorer with leanscore.udfs.predict.build_scorer"
            )
        return worker_tokenizer(
            self.tokenizer_bytes, self.manifest.files[spec.tokenizer], spec.size
        )

    # --- inputs -------------------------------------------------------------------------
    def input_columns(self) -> list[str]:
        return [self.manifest.features.text_column]

    def check_input_types(self, types: dict) -> None:
        from pyspark.sql.types import StringType

        name = self.manifest.features.text_column
        if not isinstance(types[name], StringType):
            raise TypeError(
                f"text column {name!r} has type {types[name].simpleString()}, the model needs "
                "a string; cast it before scoring"
            )

    def from_pandas(self, columns) -> Batch:
        return self.from_texts(columns[0].tolist())

    def from_arrow(self, arrays) -> Batch:
        return self.from_texts(arrays[0].to_pylist())

    def from_texts(self, texts: list) -> Batch:
        """The token matrix of the good texts (bad rows all zeros), the bad rows and why."""
        from leanscore.udfs.text import text_reasons

        column = self.manifest.features.text_column
        reasons = text_reasons(texts, column=column, max_chars=MAX_CHARS)
        good = [i for i, r in enumerate(reasons) if r is None]
        encodings = self.tokenizer().encode_batch([texts[i] for i in good]) if good else []
        matrix = token_matrix([e.ids for e in encodings], len(texts), good)
        bad = np.array([r is not None for r in reasons], dtype=bool)
        return Batch(matrix, bad, reasons)

    def element_name(self, j: int) -> str:
        return f"column {self.manifest.features.text_column!r}"

    def feeds(self, input_name: str, inputs: np.ndarray) -> dict[str, np.ndarray]:
        return feeds(inputs, self.input_names)

    def call_groups(self, inputs: np.ndarray, batch_size: int) -> list[np.ndarray]:
        return call_groups(inputs, batch_size)

    # --- outputs ------------------------------------------------------------------------
    def output_fields(self, *, probabilities: bool = False) -> list[tuple[str, str]]:
        return task_fields("classification", probabilities=probabilities)

    def output_columns(self, out, fields):
        return task_columns("classification", out, fields)
