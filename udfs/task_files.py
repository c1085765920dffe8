"""Output Parquet files written inside the scoring tasks, for the driver to commit.

A small model's nightly job spends most of its per-row CPU after the model: the JVM turns
each task's Arrow output into rows and Parquet's Java writer encodes them value by value, a
64-character model hash among them on every row. Here the task that scored the rows writes
them itself, with pyarrow, into the output table's run date directory: the constant lineage
columns as one-value dictionaries, the rest as the Arrow arrays the model produced. The task
returns one small row describing its file (path, size, rows, flagged rows, Delta file
statistics); nothing is visible until the driver commits those files in one transaction
(``leanscore.jobs.delta_commit``), and files of a failed task attempt are never committed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import uuid
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

# Spark's spark.sql.parquet.compression.codec values pyarrow writes alike (Spark's "lz4" is
# Hadoop's framing, which pyarrow does not write: such a session keeps Spark's writer).
CODECS = {"snappy": "snappy", "gzip": "gzip", "zstd": "zstd", "none": "none"}
CODECS["uncompressed"] = "none"
# Delta keeps string statistics as 32-character prefixes; shorter values are kept exactly.
_STRING_STATISTICS_CHARS = 32

FILE_SCHEMA = (
    "path string, size long, modification_time long, rows long, flagged long, stats string"
)
FILE_ARROW_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("size", pa.int64()),
        ("modification_time", pa.int64()),
        ("rows", pa.int64()),
        ("flagged", pa.int64()),
        ("stats", pa.string()),
    ]
)


@dataclass(frozen=True)
class FileSink:
    """Where and how a task writes its output file.

    ``directory``: the local directory of the run date's partition; ``relative``: that
    directory relative to the table's root, as the commit names it. ``constants``: columns
    with one value for the whole run (the lineage), appended after the scored columns as
    (name, Arrow scalar). ``statistics_columns``: the columns whose Delta statistics each file
    reports. ``error_column``: the per-row error column, whose non-null rows are counted.
    ``dictionary_columns``: the scored columns worth a dictionary (few distinct values);
    pyarrow, unlike Spark's writer, keeps a dictionary that saves nothing (a unique key, a
    probability), so the others are written plain. The constants always have one."""

    directory: str
    relative: str
    codec: str
    constants: tuple[tuple[str, pa.Scalar], ...]
    statistics_columns: tuple[str, ...]
    error_column: str
    dictionary_columns: tuple[str, ...] = ()


# A row group holds up to this many rows or bytes of scored batches: a narrow output's file
# is then one or a few row groups, as Spark's writer makes it, not one per Arrow batch.
_ROW_GROUP_ROWS = 1024 * 1024
_ROW_GROUP_BYTES = 128 * 1024 * 1024


class TaskFile:
    """One task's output file: opened at its first row group, described at ``close``."""

    def __init__(self, sink: FileSink, task: int) -> None:
        self.sink = sink
        self.name = f"part-{task:05d}-{uuid.uuid4()}.c000.{_extension(sink.codec)}parquet"
        self.writer: pq.ParquetWriter | None = None
        self.pending: list[pa.RecordBatch] = []
        self.rows = 0
        self.flagged = 0
        self.statistics = _Statistics(sink.statistics_columns)

    def write(self, batch: pa.RecordBatch) -> None:
        if not batch.num_rows:
            return
        self.pending.append(batch)
        self.rows += batch.num_rows
        self.flagged += batch.num_rows - batch.column(self.sink.error_column).null_count
        pending = self.pending
        if (
            sum(b.num_rows for b in pending) >= _ROW_GROUP_ROWS
            or sum(b.nbytes for b in pending) >= _ROW_GROUP_BYTES
        ):
            self._flush()

    def _flush(self) -> None:
        """The pending batches as one row group, the constant columns appended."""
        if not self.pending:
            return
        scored = pa.Table.from_batches(self.pending)
        self.pending = []
        self.statistics.add(scored)
        table = scored
        for name, value in self.sink.constants:
            table = table.append_column(name, _constant(value, len(scored)))
            self.statistics.add_constant(name, value, len(scored))
        if self.writer is None:
            os.makedirs(self.sink.directory, exist_ok=True)
            constants = {name for name, _ in self.sink.constants}
            self.writer = pq.ParquetWriter(
                os.path.join(self.sink.directory, self.name),
                table.schema,
                compression=self.sink.codec,
                use_dictionary=[*self.sink.dictionary_columns, *constants],
                # footer statistics, as Spark's writer keeps them, but none on the constants
                write_statistics=[n for n in table.schema.names if n not in constants],
                store_schema=False,  # Spark reads the Parquet types; no Arrow schema to mislead
            )
        self.writer.write_table(table, row_group_size=len(table))

    def close(self) -> dict | None:
        """The file's description for the commit, or None where the task had no rows."""
        self._flush()
        if self.writer is None:
            return None
        self.writer.close()
        path = os.path.join(self.sink.directory, self.name)
        info = os.stat(path)
        return {
            "path": f"{self.sink.relative}/{self.name}",
            "size": info.st_size,
            "modification_time": int(info.st_mtime * 1000),
            "rows": self.rows,
            "flagged": self.flagged,
            "stats": json.dumps(self.statistics.delta_stats(self.rows)),
        }

    def discard(self) -> None:
        """Remove a partly written file (the task failed before describing it)."""
        self.pending = []
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(self.sink.directory, self.name))


def conformed(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` with ``schema``'s types (the table's), cast where a column differs, each
    column as Parquet's writer takes it."""
    arrays = []
    for column, field in zip(batch.columns, schema, strict=True):
        same = column.type == field.type
        arrays.append(_parquet_ready(column if same else column.cast(field.type)))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _parquet_ready(array: pa.Array) -> pa.Array:
    """``array`` as Parquet's writer takes it: a null list (a bad row's outputs) may span
    values in Arrow but not in Parquet, so lists with nulls are rebuilt with empty ones."""
    lists = pa.types.is_list(array.type) or pa.types.is_large_list(array.type)
    if lists and array.null_count:
        return array.take(pa.array(np.arange(len(array))))
    return array


def _extension(codec: str) -> str:
    return "" if codec == "none" else f"{codec}."


def _constant(value: pa.Scalar, rows: int) -> pa.Array:
    """``rows`` copies of one value: a one-entry dictionary for strings (Parquet stores the
    value once and an index per row), the value taken ``rows`` times otherwise."""
    zeros = pa.array(np.zeros(rows, np.int32))
    one = pa.array([value.as_py()], value.type)
    if pa.types.is_string(value.type):
        return pa.DictionaryArray.from_arrays(zeros, one)
    return one.take(zeros)


class _Statistics:
    """Delta's per-file statistics (rows, null counts, minimum and maximum) of some columns,
    gathered batch by batch: numbers whose values are all finite get a minimum and maximum,
    strings their minimum's first 32 characters and their maximum where it has at most 32;
    every column its null count."""

    def __init__(self, columns: tuple[str, ...]) -> None:
        self.columns = columns
        self.nulls: dict[str, int] = {}
        self.low: dict[str, object] = {}
        self.high: dict[str, object] = {}
        self.no_bounds: set[str] = set()
        self.no_maximum: set[str] = set()

    def add(self, batch: pa.Table) -> None:
        for name in self.columns:
            if name not in batch.schema.names:
                continue
            array = batch.column(name)
            self.nulls[name] = self.nulls.get(name, 0) + array.null_count
            if name in self.no_bounds:
                continue
            bounds = _bounds(array)
            if bounds is None:
                self.no_bounds.add(name)
                self.low.pop(name, None)
                self.high.pop(name, None)
            elif bounds[0] is not None:
                low, high = bounds
                self.low[name] = low if name not in self.low else min(self.low[name], low)
                if high is None or name in self.no_maximum:
                    self.no_maximum.add(name)
                    self.high.pop(name, None)
                else:
                    self.high[name] = high if name not in self.high else max(self.high[name], high)

    def add_constant(self, name: str, value: pa.Scalar, rows: int) -> None:
        """A column holding ``value`` on each of ``rows`` rows: its bounds are the value's."""
        if name not in self.columns or not rows:
            return
        if value.is_valid:
            self.add(pa.table({name: pa.array([value.as_py()], value.type)}))
        else:
            self.nulls[name] = self.nulls.get(name, 0) + rows

    def delta_stats(self, rows: int) -> dict:
        return {
            "numRecords": rows,
            "minValues": self.low,
            "maxValues": self.high,
            "nullCount": self.nulls,
        }


def _bounds(array: pa.Array) -> tuple[object, object] | tuple[None, None] | None:
    """(min, max) of ``array``'s non-null values; (None, None) when all are null; None when
    Delta's statistics cannot hold them here (a type without bounds, NaN or infinity); a
    string's max None where it is longer than Delta's 32-character prefix."""
    kind = array.type
    numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind)
    if not (numeric or pa.types.is_string(kind)):
        return None
    if array.null_count == len(array):
        return None, None
    found = pc.min_max(array)
    low, high = found["min"].as_py(), found["max"].as_py()
    finite = not pa.types.is_floating(kind) or (
        all(math.isfinite(v) for v in (low, high)) and not pc.any(pc.is_nan(array)).as_py()
    )
    if not finite:
        return None
    if pa.types.is_string(kind):
        # a prefix is still a lower bound; a longer maximum has no exact stand-in: left out
        high = high if len(high) <= _STRING_STATISTICS_CHARS else None
        return low[:_STRING_STATISTICS_CHARS], high
    return low, high
