"""Text embedding UDF: tokenize inside the UDF, run the sentence encoder, return array<float>.

    from leanscore.udfs.text import text_embedding_udf, embed_dataframe
    embed = text_embedding_udf("/dbfs/models/minilm-int8")
    df.withColumn("e", embed("text", key="doc_id"))       # struct<embedding, error>
    embed_dataframe(df, "/dbfs/models/minilm-int8", key_columns=["doc_id"])

Within each Arrow batch the rows are ordered by token count and padded per sub-batch, so a
batch of short sentences is not padded to its longest one; results go back in row order. On
Spark 4.1+ the UDF is an Arrow UDF whose embeddings leave as one flat float32 buffer (no
pandas objects per row); elsewhere a pandas UDF with the same results. The
tokenizer (``tokenizer.json`` from the artifact, sha256-checked) rides in the UDF closure; the
model travels as ``leanscore.udfs.distribution`` decides and is cached per worker by
``leanscore.udfs.session_cache``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import onnxruntime as ort
import pandas as pd
import pyarrow as pa
from leanscore.compression.artifact import Artifact, verify_sha256
from leanscore.compression.errors import LeanscoreError
from leanscore.compression.registry import load_artifact
from leanscore.udfs.distribution import DEFAULT_PATH_THRESHOLD_BYTES, ModelSource, distribute
from leanscore.udfs.session_cache import SessionConfig, get_session
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

BadRowPolicy = Literal["fail", "flag"]
LongTextPolicy = Literal["truncate", "bad"]
ERROR_FIELD = "error"
RETURN_TYPE = "struct<embedding:array<float>,error:string>"


# ONNX Runtime's SkipLayerNormFusion merges a residual Add and LayerNormalization into one
# SkipLayerNormalization kernel; on one CPU thread that kernel is slower than the two ops it
# replaces (measured on all-MiniLM-L6-v2, dynamic int8, AVX-512 VNNI: 12% of the model's time
# vs 6% unfused, so the int8 model runs ~11% faster with the fusion off; the fp32 export does
# not match the fusion's pattern and is unaffected). Only this fusion is disabled; every other
# graph optimisation stays on.
DEFAULT_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)


@dataclass(frozen=True)
class TextSessionConfig(SessionConfig):
    """``SessionConfig`` plus ONNX Runtime graph optimisers to leave out, by name."""

    disabled_optimizers: tuple[str, ...] = DEFAULT_DISABLED_OPTIMIZERS

    def session_options(self) -> ort.SessionOptions:
        options = super().session_options()
        if self.disabled_optimizers:
            options.add_session_config_entry(
                "optimization.disable_specified_optimizers", ",".join(self.disabled_optimizers)
            )
        return options


class BadTextError(LeanscoreError, ValueError):
    """A row could not be embedded under the ``fail`` policy."""


@dataclass(frozen=True)
class TextOptions:
    """How texts become model inputs.

    ``max_length``: tokens per text (the artifact's ``size`` at most); ``long_text``: a text
    over ``max_length`` tokens is truncated (the usual behaviour of sentence encoders) or is a
    bad row; ``max_chars``: texts longer than this are always bad rows (a guard against
    pathological inputs, checked before tokenizing); ``sort_by_length``: order rows by token
    count within each Arrow batch before cutting sub-batches of ``sub_batch_rows`` (16: on
    one CPU thread, MiniLM ran 5-10% faster, fp32 and int8 alike, than with 32, whose
    activations no longer stay in the core's cache)."""

    max_length: int = 128
    sub_batch_rows: int = 16
    sort_by_length: bool = True
    long_text: LongTextPolicy = "truncate"
    max_chars: int = 100_000
    bad_rows: BadRowPolicy = "fail"

    def __post_init__(self) -> None:
        for name in ("max_length", "sub_batch_rows", "max_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive number, got {getattr(self, name)}")
        if self.long_text not in ("truncate", "bad"):
            raise ValueError(f"long_text must be 'truncate' or 'bad', got {self.long_text!r}")
        if self.bad_rows not in ("fail", "flag"):
            raise ValueError(f"bad_rows must be 'fail' or 'flag', got {self.bad_rows!r}")


_tokenizers: dict[tuple[str, int], object] = {}
_lock = threading.Lock()


def worker_tokenizer(data: bytes, sha256: str, max_length: int):
    """One tokenizer per worker process and max length, built from verified bytes (shared by
    the embedding UDF and the ``text_classifier`` scoring family)."""
    key = (sha256, max_length)
    tok = _tokenizers.get(key)
    if tok is None:
        with _lock:
            tok = _tokenizers.get(key)
            if tok is None:
                from leanscore.compression.text_inputs import tokenizer_from_bytes

                verify_sha256(data, sha256, source="tokenizer in the UDF closure")
                tok = tokenizer_from_bytes(data, max_length)
                _tokenizers[key] = tok
    return tok


def text_reasons(texts: list, *, column: str, max_chars: int) -> list[str | None]:
    """Per row: None when the text can be tokenized, else why not (null, not a string, empty
    or blank, longer than ``max_chars``), naming the column."""
    reasons: list[str | None] = []
    for value in texts:
        if value is None or (not isinstance(value, str) and pd.isna(value)):
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


class TextKernel:
    """What runs on the executors; holds no Spark objects so it pickles small."""

    def __init__(
        self,
        *,
        source: ModelSource,
        tokenizer_bytes: bytes,
        tokenizer_sha256: str,
        column: str,
        config: SessionConfig,
        options: TextOptions,
    ):
        self.source = source
        self.tokenizer_bytes = tokenizer_bytes
        self.tokenizer_sha256 = tokenizer_sha256
        self.column = column
        self.config = config
        self.options = options

    def pandas_iterator(self, with_key: bool):
        """The pandas UDF body: Series in, DataFrame(embedding, error) out."""
        kernel = self

        def embed(batches: Iterator[tuple[pd.Series, ...]]) -> Iterator[pd.DataFrame]:
            session = get_session(kernel.source, kernel.config)
            tok = kernel.tokenizer()
            for cols in batches:
                if isinstance(cols, pd.Series):
                    cols = (cols,)
                keys = cols[1] if with_key else None
                yield kernel.embed(session, tok, cols[0], keys)

        return embed

    def arrow_iterator(self, with_key: bool):
        """The Arrow UDF body: the same rows and results with no pandas conversion on the way
        out (the embeddings leave as one flat float32 buffer and offsets, not 384-float
        objects per row)."""
        kernel = self

        def embed(batches: Iterator[tuple[pa.Array, ...]]) -> Iterator[pa.Array]:
            session = get_session(kernel.source, kernel.config)
            tok = kernel.tokenizer()
            for cols in batches:
                if isinstance(cols, pa.Array | pa.ChunkedArray):
                    cols = (cols,)
                keys = cols[1].to_pylist() if with_key else None
                yield kernel.embed_arrow(session, tok, cols[0].to_pylist(), keys)

        return embed

    def tokenizer(self):
        return worker_tokenizer(
            self.tokenizer_bytes, self.tokenizer_sha256, self.options.max_length
        )

    def check(self, texts: list) -> list[str | None]:
        """Per row: None when the text can be embedded, else why not (before tokenizing)."""
        return text_reasons(texts, column=self.column, max_chars=self.options.max_chars)

    def compute(
        self, session, tok, texts: list, keys: list | None
    ) -> tuple[np.ndarray | None, list[int], list[str | None]]:
        """(embeddings of the rows that could be embedded, their row numbers, per row None or
        why it could not be embedded); raises ``BadTextError`` under the ``fail`` policy."""
        n = len(texts)
        reasons = self.check(texts)
        good = [i for i in range(n) if reasons[i] is None]
        encodings = tok.encode_batch([texts[i] for i in good]) if good else []
        if self.options.long_text == "bad":
            for i, enc in zip(good, encodings, strict=True):
                if enc.overflowing:
                    reasons[i] = (
                        f"column {self.column!r} has more than max_length="
                        f"{self.options.max_length} tokens; raise max_length or use "
                        "long_text='truncate'"
                    )
            kept = [(i, e) for i, e in zip(good, encodings, strict=True) if reasons[i] is None]
            good, encodings = [i for i, _ in kept], [e for _, e in kept]
        self._check_policy(reasons, keys)
        matrix = self.run(session, [e.ids for e in encodings])
        if matrix is not None:
            finite = np.isfinite(matrix).all(axis=1)
            if not finite.all():
                for pos in np.flatnonzero(~finite):
                    first = matrix[pos][~np.isfinite(matrix[pos])][0]
                    reasons[good[pos]] = (
                        f"the model's output is {first} (not finite) for column {self.column!r} "
                        "in this row"
                    )
                self._check_policy(reasons, keys)
                good = [i for i, ok in zip(good, finite, strict=True) if ok]
                matrix = matrix[finite] if finite.any() else None
        return matrix, good, reasons

    def _check_policy(self, reasons: list[str | None], keys: list | None) -> None:
        """Under ``bad_rows='fail'``, raise naming the first row that cannot be embedded."""
        if self.options.bad_rows != "fail" or all(r is None for r in reasons):
            return
        i = next(i for i, r in enumerate(reasons) if r is not None)
        where = f"row with key {keys[i]!r}" if keys is not None else f"row {i} of a batch"
        raise BadTextError(
            f"{where}: {reasons[i]}; fix the input or embed with bad_rows='flag' to get a "
            "null embedding and an error column instead"
        )

    def embed(self, session, tok, texts: pd.Series, keys: pd.Series | None) -> pd.DataFrame:
        matrix, good, reasons = self.compute(
            session, tok, texts.tolist(), None if keys is None else keys.tolist()
        )
        rows: list = [None] * len(texts)
        for pos, i in enumerate(good):
            rows[i] = matrix[pos]
        return pd.DataFrame({"embedding": rows, ERROR_FIELD: reasons})

    def embed_arrow(self, session, tok, texts: list, keys: list | None) -> pa.StructArray:
        matrix, good, reasons = self.compute(session, tok, texts, keys)
        n = len(texts)
        width = 0 if matrix is None else matrix.shape[1]
        values = pa.array(
            np.empty(0, np.float32) if matrix is None else matrix.reshape(-1), pa.float32()
        )
        if len(good) == n:
            offsets = pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32)[: n + 1])
            embedding = pa.ListArray.from_arrays(offsets, values)
        else:  # bad rows: null, spanning no values
            lengths = np.zeros(n, dtype=np.int32)
            lengths[good] = width
            offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
            invalid = np.ones(n, dtype=bool)
            invalid[good] = False
            embedding = pa.ListArray.from_arrays(offsets, values, mask=pa.array(invalid))
        return pa.StructArray.from_arrays(
            [embedding, pa.array(reasons, pa.string())], names=["embedding", ERROR_FIELD]
        )

    def run(self, session, token_ids: list[list[int]]) -> np.ndarray | None:
        """Embed in sub-batches, each padded to its own longest text; rows in input order."""
        if not token_ids:
            return None
        lengths = np.fromiter((len(t) for t in token_ids), dtype=np.int64, count=len(token_ids))
        order = np.argsort(lengths, kind="stable") if self.options.sort_by_length else None
        order = np.arange(len(token_ids)) if order is None else order
        out: np.ndarray | None = None
        step = self.options.sub_batch_rows
        for start in range(0, len(order), step):
            idx = order[start : start + step]
            width = int(lengths[idx].max())
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for r, i in enumerate(idx):
                ids[r, : lengths[i]] = token_ids[i]
                mask[r, : lengths[i]] = 1
            result = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            if out is None:
                out = np.empty((len(token_ids), result.shape[1]), dtype=np.float32)
            out[idx] = result
        return out


class TextEmbeddingUDF:
    """Callable returned by ``text_embedding_udf``: ``embed(text_col, key=None) -> Column``."""

    fields = (("embedding", "array<float>"), (ERROR_FIELD, "string"))

    def __init__(self, artifact: Artifact, kernel: TextKernel, *, engine: str = "auto"):
        self.artifact = artifact
        self.kernel = kernel
        self.engine = resolve_engine(engine)
        self._udfs: dict[bool, object] = {}

    def __call__(self, text: Column | str, *, key: Column | str | None = None) -> Column:
        from leanscore.udfs.engines import engine_for

        with_key = key is not None
        if with_key not in self._udfs:
            engine = engine_for(self.engine)
            self._udfs[with_key] = engine.column_udf(self.kernel, with_key, RETURN_TYPE)
        args = [F.col(text) if isinstance(text, str) else text]
        if with_key:
            args.append((F.col(key) if isinstance(key, str) else key).cast("string"))
        return self._udfs[with_key](*args)


def resolve_engine(engine: str) -> str:
    """The engine name ``engine`` resolves to for the embedding UDF (``leanscore.udfs.engines``
    decides): ``auto`` is the Arrow UDF where Spark has it (no pandas conversion of the
    384-float embeddings: ~75 us a row less), else the pandas UDF. Both give the same rows."""
    from leanscore.udfs.engines import COLUMN, resolve

    return resolve(engine, COLUMN).name


def _load(artifact: Artifact | str | os.PathLike[str]) -> Artifact:
    artifact = load_artifact(artifact)
    spec = artifact.manifest.features
    if spec.text_column is None or spec.tokenizer is None:
        raise ValueError(
            f"artifact {artifact.manifest.name!r} is not a text model (its features have no "
            "text_column/tokenizer); score it with leanscore.udfs.predict.model_udf"
        )
    if artifact.manifest.task != "embedding":
        raise ValueError(
            f"artifact {artifact.manifest.name!r} is a text {artifact.manifest.task} model, not "
            "an embedding model; score it with 'leanscore score' or "
            "leanscore.udfs.score_dataframe"
        )
    return artifact


def text_embedding_udf(
    artifact: Artifact | str | os.PathLike[str],
    *,
    spark: SparkSession | None = None,
    max_length: int | None = None,
    sub_batch_rows: int = 16,
    sort_by_length: bool = True,
    long_text: LongTextPolicy = "truncate",
    max_chars: int = 100_000,
    bad_rows: BadRowPolicy = "fail",
    session_config: SessionConfig | None = None,
    path_threshold_bytes: int = DEFAULT_PATH_THRESHOLD_BYTES,
    engine: str = "auto",
) -> TextEmbeddingUDF:
    """Build the embedding UDF for a text artifact; ``max_length`` defaults to its ``size``.
    ``engine``: ``arrow`` (Spark 4.1+ ``arrow_udf``), ``pandas`` (``pandas_udf``) or ``auto``
    (Arrow where Spark has it); both give the same rows."""
    from leanscore.udfs.options import task_cpus

    engine = resolve_engine(engine)
    artifact = _load(artifact)
    spec = artifact.manifest.features
    max_length = max_length or spec.size
    if max_length > spec.size:
        raise ValueError(
            f"max_length={max_length} is more than the {spec.size} tokens model "
            f"{artifact.manifest.name!r} was built for; use at most {spec.size}"
        )
    options = TextOptions(
        max_length=max_length,
        sub_batch_rows=sub_batch_rows,
        sort_by_length=sort_by_length,
        long_text=long_text,
        max_chars=max_chars,
        bad_rows=bad_rows,
    )
    spark = spark or SparkSession.getActiveSession()
    if spark is None:
        raise RuntimeError("text_embedding_udf needs an active Spark session; start one first")
    kernel = TextKernel(
        source=distribute(spark, artifact, path_threshold_bytes=path_threshold_bytes),
        tokenizer_bytes=artifact.read_file(spec.tokenizer),
        tokenizer_sha256=artifact.manifest.files[spec.tokenizer],
        column=spec.text_column,
        config=session_config or TextSessionConfig(intra_op_threads=task_cpus(spark)),
        options=options,
    )
    return TextEmbeddingUDF(artifact, kernel, engine=engine)


def embed_dataframe(
    df: DataFrame,
    artifact: Artifact | str | os.PathLike[str],
    *,
    text_column: str | None = None,
    key_columns: list[str] | None = None,
    output_column: str = "embedding",
    **udf_options,
) -> DataFrame:
    """``df`` plus ``<output_column>`` (array<float>) and ``<output_column>_error`` (null unless
    the row was flagged). ``text_column`` defaults to the one the artifact names."""
    from leanscore.udfs.prepare import key_expression
    from pyspark.sql.types import StringType

    artifact = _load(artifact)
    column = text_column or artifact.manifest.features.text_column
    types = {f.name: f.dataType for f in df.schema.fields}
    if column not in types:
        raise ValueError(
            f"text column {column!r} is not in the input; it has {', '.join(df.columns)}"
        )
    if not isinstance(types[column], StringType):
        raise TypeError(
            f"text column {column!r} has type {types[column].simpleString()}, the model needs "
            "a string; cast it before embedding"
        )
    for k in key_columns or []:
        if k not in types:
            raise ValueError(
                f"key column {k!r} is not in the input; it has {', '.join(df.columns)}"
            )
    embed = text_embedding_udf(artifact, spark=df.sparkSession, **udf_options)
    key = key_expression(key_columns) if key_columns else None
    tmp = "__leanscore_embedding"
    scored = df.withColumn(tmp, embed(column, key=key))
    return scored.select(
        *[F.col(c) for c in df.columns],
        F.col(f"{tmp}.embedding").alias(output_column),
        F.col(f"{tmp}.{ERROR_FIELD}").alias(f"{output_column}_error"),
    )
