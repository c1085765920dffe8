"""How texts become a BERT-family model's inputs: tokenized with the artifact's own
``tokenizer.json``, padded, and grouped into ONNX Runtime calls by length.

Shared by compression (held-out accuracy, speed and static-int8 calibration of a text
classifier) and scoring (the ``text_classifier`` family), so the accuracy ``leanscore compress``
reports is measured on exactly the inputs ``leanscore score`` feeds. Pure numpy plus the
``tokenizers`` library: no torch, so executors can import it.

A batch of texts is one int64 array of shape (rows, 2, width): ``[:, 0]`` the token ids,
``[:, 1]`` the attention mask, padded to the batch's longest text. Calls are cut from rows
ordered by token count, each call padded only to its own longest row and holding at most
``TOKENS_PER_CALL`` padded tokens: a transformer's cost grows with the padded length, and rows
of similar length waste little of it (MiniLM ran 2.3x faster length-sorted than in table
order; 16 rows of 128 tokens per call was its fastest sub-batch on one thread, activations
staying in cache, hence the budget of 2,048 tokens).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import numpy as np

TOKENS_PER_CALL = 16 * 128

# ONNX Runtime's SkipLayerNormFusion merges a residual Add and LayerNormalization into one
# SkipLayerNormalization kernel; on one CPU thread that kernel is slower than the two ops it
# replaces (measured on all-MiniLM-L6-v2, dynamic int8, AVX-512 VNNI: 12% of the model's time
# vs 6% unfused, so the int8 model runs ~11% faster with the fusion off; the fp32 export does
# not match the fusion's pattern and is unaffected). Text models' sessions leave only this
# fusion out, in scoring (the text families) and in the speeds measured while compressing.
DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)
TOKEN_INPUTS = ("input_ids", "attention_mask")
TOKENIZER_FILE = "tokenizer.json"  # the fast tokenizer, in a model folder and an artifact
OPTIONAL_INPUTS = ("token_type_ids",)


def tokenizer_from_bytes(data: bytes, max_length: int):
    """A fast ``tokenizers`` tokenizer from ``tokenizer.json`` bytes: no padding (calls pad
    themselves), texts truncated to ``max_length`` tokens."""
    # Spark runs one task per core: the tokenizer's own thread pool would fight them.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(data.decode("utf-8"))
    tok.no_padding()
    tok.enable_truncation(max_length)
    return tok


def token_matrix(token_ids: list[list[int]], rows: int | None = None, at=None) -> np.ndarray:
    """(rows, 2, width) int64: ids and attention mask, padded with zeros to the longest.
    ``at``: the row each id list goes to (default: in order); other rows stay all zeros."""
    n = len(token_ids) if rows is None else rows
    at = range(len(token_ids)) if at is None else at
    width = max((len(t) for t in token_ids), default=1) or 1
    matrix = np.zeros((n, 2, width), dtype=np.int64)
    for i, ids in zip(at, token_ids, strict=True):
        matrix[i, 0, : len(ids)] = ids
        matrix[i, 1, : len(ids)] = 1
    return matrix


def encode(tokenizer, texts: list[str]) -> np.ndarray:
    """The token matrix of ``texts`` (every one a non-empty string)."""
    return token_matrix([e.ids for e in tokenizer.encode_batch(list(texts))])


def call_groups(
    matrix: np.ndarray, batch_rows: int, *, tokens_per_call: int = TOKENS_PER_CALL
) -> list[np.ndarray]:
    """Row positions of ``matrix`` for each ONNX Runtime call: rows ordered by token count, cut
    into calls of at most ``batch_rows`` rows and ``tokens_per_call`` padded tokens (one row
    always fits)."""
    lengths = matrix[:, 1].sum(axis=1)
    order = np.argsort(lengths, kind="stable")
    groups, start = [], 0
    while start < len(order):
        end = start + 1
        while end < len(order) and end - start < batch_rows:
            longest = max(int(lengths[order[end]]), 1)
            if (end + 1 - start) * longest > tokens_per_call:
                break
            end += 1
        groups.append(order[start:end])
        start = end
    return groups


def feeds(matrix: np.ndarray, input_names: list[str] | tuple[str, ...]) -> dict[str, np.ndarray]:
    """The ONNX Runtime feed for rows of a token matrix, cut to their own longest row;
    ``token_type_ids`` (all zeros: one segment) when the graph takes it."""
    width = max(int(matrix[:, 1].sum(axis=1).max()) if len(matrix) else 1, 1)
    ids = np.ascontiguousarray(matrix[:, 0, :width])
    out = {"input_ids": ids, "attention_mask": np.ascontiguousarray(matrix[:, 1, :width])}
    if "token_type_ids" in input_names:
        out["token_type_ids"] = np.zeros_like(ids)
    return out


def check_input_names(names: list[str], *, model: str) -> None:
    """A text model's graph must take the token inputs this module feeds, and nothing else."""
    missing = [n for n in TOKEN_INPUTS if n not in names]
    unknown = [n for n in names if n not in TOKEN_INPUTS + OPTIONAL_INPUTS]
    if missing or unknown:
        raise ValueError(
            f"text model {model!r} has inputs {names}; a text classifier's graph takes "
            f"{' and '.join(TOKEN_INPUTS)} (and optionally token_type_ids)"
        )


def batches(
    tokenizer, texts: np.ndarray, batch_rows: int, input_names: list[str]
) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """(row positions, feeds) for each call over ``texts``, grouped as scoring groups them."""
    matrix = encode(tokenizer, [str(t) for t in texts])
    for idx in call_groups(matrix, batch_rows):
        yield idx, feeds(matrix[idx], input_names)


def tokenized_batches(
    data, *, name: str, reader: str, tokenizer_bytes: bytes, max_length: int, input_names
) -> Callable[[np.ndarray, int], Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]]:
    """The ``batches`` function of ``data.<name>`` (a ``LabelledData`` whose rows are texts)
    that tokenizes them as scoring does; ``reader`` names the model in the error for a table
    given as feature columns."""
    if data.features.ndim != 1 or data.features.dtype != object:
        raise ValueError(
            f"data.{name}: a {reader} reads texts; give the table's 'text_column' "
            "(not feature_column/feature_columns)"
        )
    tokenizer = tokenizer_from_bytes(tokenizer_bytes, max_length)
    names = list(input_names)

    def calls(rows: np.ndarray, batch_rows: int):
        return batches(tokenizer, rows, batch_rows, names)

    return calls
