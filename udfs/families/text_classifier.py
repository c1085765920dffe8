"""The text classifier family: a BERT-family sequence classifier whose graph ends in a softmax,
scoring one string column into a label and its probability (and all class probabilities).

Reading, tokenizing, call grouping and the bad-row reasons are ``TextFamily``'s
(``leanscore.udfs.families.text_base``): the very functions ``leanscore compress`` measured the
held-out accuracy with. Texts over ``max_length`` tokens are truncated, as the model was
evaluated, unless the run asks for ``long_text='bad'``.
"""

from __future__ import annotations

from leanscore.udfs.families.tabular import task_columns, task_fields
from leanscore.udfs.families.text_base import TextFamily


class TextClassifierFamily(TextFamily):
    name = "text_classifier"
    task = "classification"

    def output_fields(self, *, probabilities: bool = False) -> list[tuple[str, str]]:
        return task_fields("classification", probabilities=probabilities)

    def output_columns(self, out, fields):
        return task_columns("classification", out, fields)
