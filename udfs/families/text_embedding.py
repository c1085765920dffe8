"""The text embedding family: a sentence encoder (any local BERT-family Hugging Face encoder
compressed by ``leanscore compress`` with task ``embedding``: mean pooling and L2 norm in the
graph) scoring one string column into an ``array<float>`` embedding per row.

Reading, tokenizing, call grouping and the bad-row reasons are ``TextFamily``'s
(``leanscore.udfs.families.text_base``); this family only checks the task and names the output.
"""

from __future__ import annotations

from leanscore.udfs.families.tabular import task_columns, task_fields
from leanscore.udfs.families.text_base import TextFamily


class TextEmbeddingFamily(TextFamily):
    name = "text_embedding"
    task = "embedding"

    def output_fields(self, *, probabilities: bool = False) -> list[tuple[str, str]]:
        if probabilities:
            raise ValueError(
                f"probabilities is set, but model {self.manifest.name!r} embeds texts; a "
                "classifier has probabilities"
            )
        return task_fields("embedding", probabilities=False)

    def output_columns(self, out, fields):
        return task_columns("embedding", out, fields)
