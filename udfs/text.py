"""Text embeddings in Spark: the ``text_embedding`` scoring family behind two short functions.

    from leanscore.udfs.text import text_embedding_udf, embed_dataframe
    embed = text_embedding_udf("/dbfs/models/minilm-int8")
    df.withColumn("e", embed("text", key="doc_id"))       # struct<embedding, error>
    embed_dataframe(df, "/dbfs/models/minilm-int8", key_columns=["doc_id"])

Nothing here scores: both build the same ``Scorer`` as every other family
(``leanscore.udfs.families.text_embedding``: the tokenizer, length-sorted calls, bad-row
reasons) under one ``ScoringOptions``, and hand it to an engine. ``text_embedding_udf`` is a
column expression (the Arrow UDF on Spark 4.1+, whose embeddings leave as one flat float32
buffer; else the pandas UDF); ``embed_dataframe`` scores a DataFrame with ``mapInArrow`` (or
the engine named), like ``score_dataframe``. The options are ``ScoringOptions``' fields as
keyword-only arguments (``batch_size`` texts per ONNX Runtime call, ``max_length``,
``long_text``, ``max_chars``, ``sort_by_length``, ``bad_rows``...).
"""

from __future__ import annotations

import copy
import os
from typing import Any

from leanscore.compression.artifact import Artifact
from leanscore.compression.mlflow_registry import load_artifact
from leanscore.udfs.engines import COLUMN, TableInput, check_name, reads_whole_tables_only, resolve
from leanscore.udfs.engines.pandas import ModelUDF
from leanscore.udfs.kernel import BadRowError
from leanscore.udfs.options import ScoringOptions
from leanscore.udfs.prepare import build_scorer
from pyspark.sql import DataFrame, SparkSession

__all__ = [
    "BadTextError",
    "TextEmbeddingUDF",
    "column_engine",
    "embed_dataframe",
    "resolve_engine",
    "text_embedding_udf",
]

BadTextError = BadRowError  # a text that cannot be embedded under bad_rows='fail'
TextEmbeddingUDF = ModelUDF  # ``embed(text_col, key=None) -> Column``


def resolve_engine(engine: str) -> str:
    """The engine ``engine`` resolves to for the embedding column UDF: ``auto`` is the Arrow UDF
    where Spark has it (no pandas conversion of the 384-float embeddings: ~75 us a row less),
    else the pandas UDF. Both give the same rows."""
    return resolve(column_engine(engine), COLUMN).name


def column_engine(name: str) -> str:
    """``name`` when it is a registered engine that can make a column UDF (or ``auto``)."""
    if reads_whole_tables_only(check_name(name)):
        raise ValueError(
            f"engine {name!r} reads whole Parquet/Delta tables; a column expression needs "
            "arrow, pandas or auto"
        )
    return name


def embedding_artifact(
    artifact: Artifact | str | os.PathLike[str], *, text_column: str | None = None
) -> Artifact:
    """The loaded text embedding artifact, reading its texts from ``text_column`` when given
    (default: the column the artifact names)."""
    artifact = load_artifact(artifact)
    manifest = artifact.manifest
    if manifest.features.text_column is None or manifest.task != "embedding":
        raise ValueError(
            f"artifact {manifest.name!r} is not a text embedding model (task {manifest.task!r}, "
            f"text column {manifest.features.text_column!r}); score it with "
            "leanscore.udfs.score_dataframe or 'leanscore score'"
        )
    if text_column is None or text_column == manifest.features.text_column:
        return artifact
    features = manifest.features.model_copy(update={"text_column": text_column})
    relabelled = copy.copy(artifact)
    relabelled.manifest = manifest.model_copy(update={"features": features})
    return relabelled


def text_embedding_udf(
    artifact: Artifact | str | os.PathLike[str],
    *,
    spark: SparkSession | None = None,
    engine: str = "auto",
    options: ScoringOptions | None = None,
    **option_fields: Any,
) -> ModelUDF:
    """The embedding column UDF of a text artifact: ``embed(text_col, key=None)`` gives
    ``struct<embedding: array<float>, error: string>``. ``engine``: ``arrow`` (Spark 4.1+
    ``arrow_udf``), ``pandas`` (``pandas_udf``) or ``auto`` (Arrow where Spark has it).
    ``options`` and ``option_fields`` are ``ScoringOptions``' (``max_length`` defaults to the
    artifact's ``size``)."""
    engine = resolve_engine(engine)
    options = ScoringOptions.of(options, **option_fields)
    artifact = embedding_artifact(artifact)
    scorer = build_scorer(artifact, spark=spark, options=options)
    return ModelUDF(artifact, scorer, probabilities=False, engine=engine)


def embed_dataframe(
    df: DataFrame,
    artifact: Artifact | str | os.PathLike[str],
    *,
    text_column: str | None = None,
    key_columns: list[str] | None = None,
    output_column: str = "embedding",
    engine: str = "auto",
    options: ScoringOptions | None = None,
    **option_fields: Any,
) -> DataFrame:
    """``df`` plus ``<output_column>`` (array<float>) and ``<output_column>_error`` (null unless
    the row was flagged). ``text_column`` defaults to the one the artifact names; the other
    options are ``ScoringOptions``'. ``engine="auto"``: ``mapInArrow`` over ``df``."""
    from leanscore.udfs.engines import score_with

    check_name(engine)
    artifact = embedding_artifact(artifact, text_column=text_column)
    options = ScoringOptions.of(
        options,
        key_columns=key_columns,
        keep_columns=list(df.columns),
        output_column=output_column,
        **option_fields,
    )
    scored, _ = score_with(engine, TableInput(df), artifact, options)
    if output_column != "embedding":
        scored = scored.withColumnRenamed("embedding", output_column)
    return scored
