"""The Arrow-native fast path: ``DataFrame.mapInArrow`` with the matrix built from the Arrow
buffers (``leanscore.udfs.arrow_batch``) and the outputs written straight into Arrow arrays.

Only the columns the output keeps, the key columns and the features travel to Python; kept
columns come back as the very Arrow arrays that arrived (no conversion). Available wherever
``mapInArrow`` is (Spark 3.3+, Spark Connect included).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from leanscore.udfs.kernel import ERROR_FIELD, Scored, Scorer
from leanscore.udfs.schema import is_vector
from pyspark.sql import DataFrame
from pyspark.sql.types import (
    ArrayType,
    FloatType,
    LongType,
    StringType,
    StructField,
    StructType,
)

_SPARK_TYPES = {
    "bigint": LongType(),
    "float": FloatType(),
    "string": StringType(),
    "array<float>": ArrayType(FloatType()),
}
_VECTOR_PREFIX = "__leanscore_vector_"


def available(df: DataFrame) -> bool:
    return hasattr(df, "mapInArrow")


def score_with_arrow(
    df: DataFrame,
    scorer: Scorer,
    *,
    fields: list[tuple[str, str]],
    out_names: dict[str, str],
    keep: list[str],
    key_columns: list[str],
) -> DataFrame:
    """``keep`` columns of ``df`` plus the model's outputs, named by ``out_names``."""
    from pyspark.sql import functions as F

    by_name = {f.name: f for f in df.schema.fields}
    features = scorer.family.input_columns()
    sent = list(dict.fromkeys([*keep, *key_columns]))
    feature_refs = []
    extra = []
    for i, name in enumerate(features):
        if is_vector(by_name[name].dataType):
            from pyspark.ml.functions import vector_to_array

            alias = f"{_VECTOR_PREFIX}{i}"
            # vector_to_array refuses nulls; a null vector stays a null (bad) row.
            col = F.col(name)
            extra.append(F.when(col.isNotNull(), vector_to_array(col, "float32")).alias(alias))
            feature_refs.append(alias)
        else:
            feature_refs.append(name)
            if name not in sent:
                sent.append(name)
    projected = df.select(*[F.col(c) for c in sent], *extra)
    schema, names = output_schema(df.schema, keep, fields, out_names, scorer)
    fn = _batches_fn(scorer, feature_refs, features, keep, key_columns, names)
    return projected.mapInArrow(fn, schema)


def output_schema(
    input_schema: StructType,
    keep: list[str],
    fields: list[tuple[str, str]],
    out_names: dict[str, str],
    scorer: Scorer | None = None,
) -> tuple[StructType, list[str]]:
    """The Spark schema of the scored batches (``keep`` columns as in the input, then the
    model's outputs, then a shadowing ``scorer``'s comparison columns) and its column names."""
    from pyspark.sql.pandas.types import from_arrow_type

    by_name = {f.name: f for f in input_schema.fields}
    shadow = [] if scorer is None or scorer.shadow is None else scorer.shadow.fields
    schema = StructType(
        [by_name[c] for c in keep]
        + [StructField(out_names[name], _SPARK_TYPES[ddl], True) for name, ddl in fields]
        + [StructField(name, from_arrow_type(dtype), True) for name, dtype in shadow]
    )
    return schema, [f.name for f in schema.fields]


def _batches_fn(scorer: Scorer, refs, labels, keep, key_columns, names):
    def score_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        score = record_batch_scorer(scorer, refs, labels, keep, key_columns, names)
        for rb in batches:
            yield score(rb)

    return score_batches


def record_batch_scorer(scorer: Scorer, refs, labels, keep, key_columns, names):
    """On an executor: a function from an input ``RecordBatch`` (features under ``refs``) to the
    output batch (``keep`` columns as they arrived, then the model's outputs)."""
    family = scorer.family
    session, input_name = scorer.session()
    shadow = scorer.shadow
    shadow_session = shadow.session() if shadow is not None else None

    def score(rb: pa.RecordBatch) -> pa.RecordBatch:
        batch = family.from_arrow([rb.column(r) for r in refs])
        key_of = _key_reader(rb, key_columns) if key_columns else None
        scored = scorer.score(session, input_name, batch, key_of)
        arrays = [rb.column(c) for c in keep] + to_arrow(scored, scorer)
        if shadow is not None:
            arrays += shadow.columns(rb, refs, scored, shadow_session)
        return pa.RecordBatch.from_arrays(arrays, names=names)

    return score


def column_batches(scorer: Scorer, with_key: bool):
    """The body of an Arrow column UDF (``arrow_udf``): the family's input arrays (then the
    key) in, one struct array of the outputs and ``error`` out: no pandas object per row (an
    embedding leaves as one flat float32 buffer and its offsets)."""

    def score_columns(batches: Iterator[tuple[pa.Array, ...]]) -> Iterator[pa.Array]:
        family = scorer.family
        session, input_name = scorer.session()
        for cols in batches:
            if isinstance(cols, pa.Array | pa.ChunkedArray):
                cols = (cols,)
            keys = cols[-1] if with_key else None
            feats = cols[:-1] if with_key else cols
            batch = family.from_arrow(list(feats))
            key_of = keys.to_pylist().__getitem__ if keys is not None else None
            scored = scorer.score(session, input_name, batch, key_of)
            yield pa.StructArray.from_arrays(to_arrow(scored, scorer), names=list(scorer.fields))

    return score_columns


def _key_reader(rb: pa.RecordBatch, key_columns: list[str]):
    def key_of(i: int) -> str:
        parts = []
        for k in key_columns:
            value = rb.column(k)[i].as_py()
            parts.append(f"{k}={'null' if value is None else value}")
        return ",".join(parts)

    return key_of


def to_arrow(scored: Scored, scorer: Scorer) -> list[pa.Array]:
    n, good, any_bad = scored.n, scored.good, scored.any_bad
    columns = scorer.columns(scored)
    mask = pa.array(~good) if any_bad else None
    arrays = []
    for name in scorer.fields:
        if name == ERROR_FIELD:
            reasons = scored.batch.reasons
            arrays.append(pa.array(reasons, pa.string()) if any_bad else pa.nulls(n, pa.string()))
            continue
        values = columns[name]
        if any_bad:
            full = np.zeros((n, *values.shape[1:]), dtype=values.dtype)
            full[good] = values
            values = full
        if values.ndim == 1:
            arrays.append(pa.array(values, mask=None if mask is None else ~good))
        else:
            width = values.shape[1]
            offsets = pa.array(np.arange(n + 1, dtype=np.int32) * width)
            flat = pa.array(np.ascontiguousarray(values).ravel())
            arrays.append(pa.ListArray.from_arrays(offsets, flat, mask=mask))
    return arrays
