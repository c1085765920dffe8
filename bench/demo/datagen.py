"""Labelled feature tables: augmented copies of scikit-learn's real digits, and the generated
rows of the wide tabular workload (``compression.wide_data``).

Rows are generated on the executors (``mapInArrow`` over ``spark.range``), so a table of
millions of rows never passes through the driver. The same seed gives the same table.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
import pyarrow as pa
from leanscore.compression.data import DIGITS_FEATURES, augment, digits_splits
from pyspark.sql import DataFrame, SparkSession

Layout = Literal["array", "columns"]
FEATURE_COLUMN = "features"


def feature_column_names(n: int = DIGITS_FEATURES) -> list[str]:
    return [f"pixel_{i}" for i in range(n)]


def digits_frame(
    spark: SparkSession,
    rows: int,
    *,
    split: Literal["train", "held_out"] = "held_out",
    seed: int = 7,
    layout: Layout = "array",
    partitions: int | None = None,
) -> DataFrame:
    """A DataFrame of ``rows`` augmented digits: ``row_id``, ``label`` and the features, either
    one ``features`` array<float> column or 64 ``pixel_i`` float columns."""
    if rows < 1:
        raise ValueError(f"rows must be positive, got {rows}")
    if layout == "array":
        schema = f"row_id long, label int, {FEATURE_COLUMN} array<float>"
    else:
        schema = "row_id long, label int, " + ", ".join(
            f"{c} float" for c in feature_column_names()
        )
    use_held_out = split == "held_out"

    def make(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        train, held_out = digits_splits()
        source = held_out if use_held_out else train
        for batch in batches:
            ids = batch.column("id").to_numpy()
            if len(ids) == 0:
                continue
            rng = np.random.default_rng([seed, int(ids[0])])
            features, labels = augment(source, len(ids), rng)
            arrays = [pa.array(ids, pa.int64()), pa.array(labels.astype(np.int32))]
            names = ["row_id", "label"]
            if layout == "array":
                arrays.append(_list(features))
                names.append(FEATURE_COLUMN)
            else:
                arrays += [pa.array(features[:, j]) for j in range(features.shape[1])]
                names += feature_column_names()
            yield pa.RecordBatch.from_arrays(arrays, names=names)

    parts = partitions or max(2, rows // 250_000)
    return spark.range(0, rows, numPartitions=parts).mapInArrow(make, schema)


def write_digits_table(
    spark: SparkSession,
    path: str,
    rows: int,
    *,
    fmt: Literal["delta", "parquet"] = "delta",
    **options,
) -> int:
    """Write the table (overwriting) and return its Delta version (0 for Parquet)."""
    return _write(digits_frame(spark, rows, **options), path, fmt)


def wide_frame(
    spark: SparkSession,
    rows: int,
    *,
    seed: int = 0,
    partitions: int | None = None,
    features: int | None = None,
) -> DataFrame:
    """A DataFrame of ``rows`` rows of the wide workload's ``table`` split (rows no recipe
    trains, calibrates or is gated on): ``row_id``, ``label`` and a ``features``
    array<float> of 256 values (or ``features``); row ``i`` is the same whatever the
    partitioning."""
    from leanscore.bench.wide_data import WIDE_FEATURES, wide_rows

    width = features or WIDE_FEATURES

    if rows < 1:
        raise ValueError(f"rows must be positive, got {rows}")
    schema = f"row_id long, label int, {FEATURE_COLUMN} array<float>"

    def make(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            ids = batch.column("id").to_numpy()
            if len(ids) == 0:
                continue
            start, stop = int(ids[0]), int(ids[-1]) + 1
            if stop - start != len(ids):  # spark.range hands each task a contiguous run
                raise RuntimeError(f"row ids {start}..{stop} are not contiguous")
            x, labels = wide_rows("table", start, stop, seed=seed, features=width)
            yield pa.RecordBatch.from_arrays(
                [pa.array(ids, pa.int64()), pa.array(labels.astype(np.int32)), _list(x)],
                names=["row_id", "label", FEATURE_COLUMN],
            )

    parts = partitions or max(2, rows // 100_000)
    return spark.range(0, rows, numPartitions=parts).mapInArrow(make, schema)


def write_wide_table(
    spark: SparkSession,
    path: str,
    rows: int,
    *,
    fmt: Literal["delta", "parquet"] = "delta",
    seed: int = 0,
    features: int | None = None,
) -> int:
    """Write the wide workload's table (overwriting); return its Delta version (0: Parquet)."""
    return _write(wide_frame(spark, rows, seed=seed, features=features), path, fmt)


def _list(features: np.ndarray) -> pa.ListArray:
    offsets = pa.array(np.arange(0, features.size + 1, features.shape[1], dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(features.ravel()))


def _write(df: DataFrame, path: str, fmt: str) -> int:
    df.write.format(fmt).mode("overwrite").save(path)
    if fmt != "delta":
        return 0
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(df.sparkSession, path).history(1).select("version").first()[0])


def write_fashion_table(spark: SparkSession, path: str, rows: int) -> int:
    """Fashion-MNIST's test photos as PNG bytes with labels, repeated to ``rows`` rows (the
    first ``rows`` of the test split where fewer): ``row_id``, ``example_id`` (the test image),
    ``image``, ``label``. No recipe sees the test split, so every row is held out; where
    ``rows`` is not a multiple of the distinct images, the first ones appear once more.
    Returns the table's Delta version."""
    from leanscore.bench.fashion_data import load_split, photo_frame, repeated_photos

    images, labels = load_split("test")
    distinct = fashion_distinct_examples(rows)
    photos = photo_frame(spark, images[:distinct], labels[:distinct], np.arange(distinct))
    frame = repeated_photos(photos, distinct, rows).repartition(max(2, rows // 100_000))
    return _write(frame, path, "delta")


def fashion_distinct_examples(rows: int) -> int:
    """The distinct test photos behind ``write_fashion_table``'s ``rows`` rows."""
    from leanscore.bench.fashion_data import TEST_IMAGES

    return min(rows, TEST_IMAGES)
