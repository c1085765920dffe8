"""Where the nightly jobs read and write: table references, the run date's partition, and the
checked write that makes a partition count only once it passed its checks.

A rerun for the same ``run_date`` replaces exactly that date's rows and nothing else (Delta
``replaceWhere``, or dynamic partition overwrite for Parquet). A failure leaves the previous
output as it was: Delta commits the whole write or nothing, and when the write committed but
its check fails (rows written differ from rows read, because the input changed during the run;
or more rows flagged than ``max_flagged_fraction``), the same run restores the table's previous
version (Delta ``RESTORE``) before it raises. The rows written and flagged are counted while
they are written (a Spark ``Observation``), so checking costs no pass over the output.

A write that must be judged on figures only the write itself produces (the shadow's agreement,
under ``on_breach: fail``) goes to a ``Staging`` table first and is published into the output
only when the judgement passes, so the output never holds, even for a moment, rows that fail.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from leanscore.compression.errors import LeanscoreError
from leanscore.udfs.distribution import is_connect
from pydantic import BaseModel, ConfigDict, model_validator
from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

log = logging.getLogger(__name__)

RUN_DATE_COLUMN = "run_date"
STAGING_DIR = "_leanscore_staging"
"""The folder under a path output that holds writes waiting for their judgement; Spark and
Delta skip names that start with an underscore when they list a table."""


class PhaseClock:
    """Seconds per step of a run, each lap measured from the end of the previous one."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = round(self.seconds.get(phase, 0.0) + now - self._last, 3)
        self._last = now


class TableRef(BaseModel):
    """A Parquet or Delta path, or a catalog table name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = None
    table: str | None = None
    format: Literal["delta", "parquet"] = "delta"

    @model_validator(mode="after")
    def _one_location(self):
        if (self.path is None) == (self.table is None):
            raise ValueError("give exactly one of 'path' or 'table'")
        return self

    def describe(self) -> str:
        return self.table or f"{self.format} path {self.path}"


def read_table(spark: SparkSession, ref: TableRef) -> DataFrame:
    if ref.table:
        return spark.read.table(ref.table)
    if ref.format == "delta":
        from delta.tables import DeltaTable

        if not DeltaTable.isDeltaTable(spark, ref.path):
            raise FileNotFoundError(
                f"input {ref.path} is not a Delta table (no _delta_log); check the path, or set "
                "input.format: parquet for a Parquet directory"
            )
    elif not Path(ref.path).exists() and "://" not in ref.path:
        raise FileNotFoundError(f"input Parquet path {ref.path} does not exist")
    return spark.read.format(ref.format).load(ref.path)


def check_output_location(ref: TableRef) -> None:
    """Refuse, before any work, an output path that cannot be written or that holds another
    kind of table: a failed or mixed write there would be found only after the scoring."""
    if ref.table or "://" in (ref.path or ""):
        return
    path = Path(ref.path)
    holds_other_files = path.is_dir() and any(p.name != STAGING_DIR for p in path.iterdir())
    if ref.format == "delta" and holds_other_files and not (path / "_delta_log").is_dir():
        raise ValueError(
            f"output {path} exists but is not a Delta table (no _delta_log); use an empty "
            "path, or set output.format: parquet to write Parquet there"
        )
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(
            f"cannot write output {path}: {ancestor} is a file, not a directory; choose another "
            "output.path"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write output {path}: {ancestor} is not writable")


# Column types Delta keeps min/max statistics for.
_STATISTICS_TYPES = (
    T.NumericType,
    T.StringType,
    T.BooleanType,
    T.DateType,
    T.TimestampType,
    T.TimestampNTZType,
)


def statistics_property(schema: T.StructType, columns: list[str] | None) -> dict[str, str]:
    """The table property a Delta output this run creates starts with: file statistics on
    ``columns`` alone (those of a type Delta keeps statistics for), where Delta's default is
    every one of the first 32. Delta computes each indexed column's min and max row by row as
    it writes; on a small model the statistics of the constant lineage strings and copied
    passthrough columns were a fifth of the writing tasks' CPU, and no reader skips files on
    them (the run date's partition already holds one model's rows). None: Delta's default."""
    if columns is None:
        return {}
    fields = {f.name: f.dataType for f in schema.fields}
    kept = [c for c in columns if isinstance(fields.get(c), _STATISTICS_TYPES)]
    if not kept:
        return {"delta.dataSkippingNumIndexedCols": "0"}
    quoted = ",".join("`" + c.replace("`", "``") + "`" for c in kept)
    return {"delta.dataSkippingStatsColumns": quoted}


def write_partition(
    df: DataFrame,
    ref: TableRef,
    run_date: dt.date,
    *,
    whole_table: bool = False,
    new_table_properties: dict[str, str] | None = None,
    constant_columns: Sequence[str] = (),
) -> None:
    """Replace the ``run_date`` partition of ``ref`` with ``df``; with ``whole_table``, replace
    the table, schema too (a staging table, whatever an earlier run left there).
    ``new_table_properties``: the properties of the Delta table this write creates (the caller
    knows there is none yet); an existing table keeps its own. ``constant_columns``: columns
    holding one value in the whole write (the lineage), written without Parquet footer
    statistics (``write_settings``)."""
    properties = new_table_properties if ref.format == "delta" else None
    spark = df.sparkSession
    with session_settings(spark, write_settings(spark, constant_columns)):
        if ref.table:
            _write_catalog_table(df, ref, run_date, whole_table=whole_table, properties=properties)
        else:
            _write_path(df, ref, run_date, whole_table=whole_table, properties=properties)


# At most this many files open at once in a writing task (Spark's setting; 0, its default,
# means none and a sort). A run's write holds one date, so one file per task is open.
_OPEN_FILES_PER_TASK = "2"


def write_settings(spark: SparkSession, constant_columns: Sequence[str]) -> dict[str, str]:
    """The session settings a job's write runs under (``session_settings``), each measured on
    writing a small model's 4,000,000 output rows alone into a run date's partition:

    - ``parquet.column.statistics.enabled#<column>`` off for ``constant_columns``: Parquet's
      writer compared every lineage value (a 64-character hash among them) with its column's
      running min and max, for footer statistics that let a reader skip nothing inside one
      run's partition (2.72 -> 2.27 s, medians of 3);
    - ``spark.sql.maxConcurrentOutputFileWriters``: with it at 0 Spark sorts every row by the
      partition column before writing, though all of a run's rows have the same date; with a
      few writers allowed it writes rows as they come, and sorts only if a task meets more
      dates than that (2.42 -> 2.07 s, medians of 6). A value the session already has is kept.
    """
    settings = {f"parquet.column.statistics.enabled#{c}": "false" for c in constant_columns}
    writers = "spark.sql.maxConcurrentOutputFileWriters"
    if str(spark.conf.get(writers, "0")).strip() in ("", "0"):
        settings[writers] = _OPEN_FILES_PER_TASK
    return settings


@contextlib.contextmanager
def session_settings(spark: SparkSession, settings: dict[str, str]) -> Iterator[None]:
    """``settings`` on the session inside the block, the session's own values after it. A
    runtime that refuses one (a serverless one allows only listed settings) runs without it:
    these change how fast a write is, never what it writes."""
    changed: dict[str, str | None] = {}
    try:
        for key, value in settings.items():
            before = spark.conf.get(key, None)
            spark.conf.set(key, value)
            changed[key] = before
    except Exception as err:
        log.debug("write settings left as they were: %s", err)
    try:
        yield
    finally:
        for key, before in changed.items():
            if before is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, before)


def _write_path(
    df: DataFrame,
    ref: TableRef,
    run_date: dt.date,
    *,
    whole_table: bool,
    properties: dict[str, str] | None,
) -> None:
    writer = df.write.format(ref.format).mode("overwrite").partitionBy(RUN_DATE_COLUMN)
    for key, value in (properties or {}).items():
        writer = writer.option(key, value)
    if whole_table:
        writer = writer.option("overwriteSchema", "true")
    elif ref.format == "delta":
        writer = writer.option("replaceWhere", f"{RUN_DATE_COLUMN} = DATE'{run_date.isoformat()}'")
    else:
        writer = writer.option("partitionOverwriteMode", "dynamic")
    writer.save(ref.path)


def _write_catalog_table(
    df: DataFrame,
    ref: TableRef,
    run_date: dt.date,
    *,
    whole_table: bool,
    properties: dict[str, str] | None = None,
):
    """A catalog table is created empty when missing, then its date's partition overwritten
    (Delta: an overwrite by the date; Parquet: a dynamic partition overwrite). Spark reports no
    ``Observation`` metrics for a create-as-select, nor for an overwrite through
    ``saveAsTable``, and the checks need those metrics."""
    spark = df.sparkSession
    if whole_table:
        spark.sql(f"DROP TABLE IF EXISTS {ref.table}")
    if not spark.catalog.tableExists(ref.table):
        empty = spark.createDataFrame([], df.schema).writeTo(ref.table).using(ref.format)
        for key, value in (properties or {}).items():
            empty = empty.tableProperty(key, value)
        empty.partitionedBy(F.col(RUN_DATE_COLUMN)).create()
    if ref.format == "delta":
        df.writeTo(ref.table).overwrite(F.col(RUN_DATE_COLUMN) == F.lit(run_date))
    else:
        columns = spark.read.table(ref.table).columns  # insertInto matches by position
        mode = "spark.sql.sources.partitionOverwriteMode"  # insertInto ignores the option
        previous = spark.conf.get(mode)
        spark.conf.set(mode, "dynamic")
        try:
            df.select(*columns).write.insertInto(ref.table, overwrite=True)
        finally:
            spark.conf.set(mode, previous)


class OutputCheckError(LeanscoreError, RuntimeError):
    """The written partition failed its check; the message says whether it was restored."""


def _sql_name(ref: TableRef) -> str:
    return ref.table if ref.table else "delta.`" + ref.path.replace("`", "``") + "`"


def delta_version(spark: SparkSession, ref: TableRef) -> int | None:
    """The output's current Delta version, or None when there is no Delta table there yet.
    A path's is read from Delta's log object in the driver JVM, refreshed from the log's
    listing (another writer's commit included), without a query; a catalog table's, Spark
    Connect's or where that internal API differs, by ``DESCRIBE HISTORY``."""
    if ref.format != "delta":
        return None
    if ref.path and not is_connect(spark):
        try:
            return _log_version(spark, ref.path, refresh=True)
        except Exception as err:  # an internal API: any change falls back to the query
            log.debug("reading the version from Delta's log object failed: %s", err)
    if ref.table:
        if not spark.catalog.tableExists(ref.table):
            return None
    else:
        from delta.tables import DeltaTable

        if not DeltaTable.isDeltaTable(spark, ref.path):
            return None
    return int(spark.sql(f"DESCRIBE HISTORY {_sql_name(ref)} LIMIT 1").first()["version"])


def committed_version(spark: SparkSession, ref: TableRef) -> int | None:
    """The Delta version this session's write to ``ref`` just committed. Delta's log object in
    the driver JVM already holds the snapshot its commit produced, so no log is read (a
    ``DESCRIBE HISTORY`` query is the fallback: a catalog table, Spark Connect, another Delta)."""
    if ref.format == "delta" and ref.path and not is_connect(spark):
        try:
            return _log_version(spark, ref.path, refresh=False)
        except Exception as err:  # an internal API: any change falls back to the query
            log.debug("reading the committed version from Delta's log object failed: %s", err)
    return delta_version(spark, ref)


def _log_version(spark: SparkSession, path: str, *, refresh: bool) -> int | None:
    """The version of the Delta table at ``path`` as the driver's ``DeltaLog`` knows it (None:
    no table there); ``refresh`` lists the log first, as ``DeltaLog.update()`` with its
    defaults does."""
    delta_log = spark._jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, path)
    if refresh:
        defaults = [getattr(delta_log, f"update$default${i}")() for i in (1, 2, 3)]
        snapshot = delta_log.update(*defaults)
    else:
        snapshot = delta_log.unsafeVolatileSnapshot()
    version = int(snapshot.version())
    return version if version >= 0 else None


def write_checked(
    df: DataFrame,
    ref: TableRef,
    run_date: dt.date,
    *,
    rows_in: int,
    error_column: str,
    max_flagged_fraction: float | None = None,
    phases: PhaseClock | None = None,
    staging: Staging | None = None,
    statistics_columns: list[str] | None = None,
    constant_columns: Sequence[str] = (),
) -> dict:
    """Write ``df`` as the ``run_date`` partition, counting rows and flagged rows as they are
    written, and check them: as many rows as were read, and no more flagged than allowed. When
    a check fails on Delta output, restore the version that was current before the write (or,
    for a table this run created, delete the date's rows) and raise ``OutputCheckError``.
    With ``staging``, the rows go to the staging table instead and a failed check discards
    it; the output is not touched. A Delta output this write creates keeps file statistics
    on ``statistics_columns`` alone (``statistics_property``; None: Delta's default);
    ``constant_columns`` are written without Parquet footer statistics (``write_partition``).
    Returns ``{"rows_out", "flagged_rows", "version", "before"}`` (the versions after and
    before the write); ``phases`` hears the laps
    ``output_version`` (the version before), ``score_write`` and ``verify``."""
    phases = phases or PhaseClock()
    spark = df.sparkSession
    before = None if staging else delta_version(spark, ref)
    phases.lap("output_version")
    observed = Observation("leanscore_output_check")
    counted = df.observe(
        observed,
        F.count(F.lit(1)).alias("rows"),
        F.count(F.col(error_column)).alias("flagged"),
    )
    if staging:
        write_partition(
            counted, staging.ref, run_date, whole_table=True, constant_columns=constant_columns
        )
    else:
        created = statistics_property(df.schema, statistics_columns) if before is None else None
        write_partition(
            counted,
            ref,
            run_date,
            new_table_properties=created,
            constant_columns=constant_columns,
        )
    phases.lap("score_write")
    metrics = observed.get
    rows_out, flagged = int(metrics["rows"]), int(metrics["flagged"])
    problems = output_problems(
        rows_out,
        flagged,
        run_date,
        rows_in=rows_in,
        error_column=error_column,
        max_flagged_fraction=max_flagged_fraction,
    )
    version = None if staging else committed_version(spark, ref)
    phases.lap("verify")
    if problems:
        done = staging.discard() if staging else _undo(spark, ref, run_date, before)
        raise OutputCheckError("; ".join(problems) + "; " + done)
    return {"rows_out": rows_out, "flagged_rows": flagged, "version": version, "before": before}


def output_problems(
    rows_out: int,
    flagged: int,
    run_date: dt.date,
    *,
    rows_in: int,
    error_column: str,
    max_flagged_fraction: float | None,
) -> list[str]:
    """What is wrong with a written partition of ``rows_out`` rows, ``flagged`` of them
    flagged: fewer or more rows than were read, or more flagged than allowed."""
    problems = []
    if rows_out != rows_in:
        problems.append(
            f"wrote {rows_out} rows for {run_date} but counted {rows_in} in the input before "
            "scoring: the input changed during the run (another writer)"
        )
    if max_flagged_fraction is not None and flagged > max_flagged_fraction * rows_out:
        problems.append(
            f"{flagged} of {rows_out} rows were flagged ({error_column} not null), more than "
            f"max_flagged_fraction={max_flagged_fraction}"
        )
    return problems


def _undo(spark: SparkSession, ref: TableRef, run_date: dt.date, before: int | None) -> str:
    """Put the output back as it was before this run's write; say what was done."""
    if ref.format != "delta":
        return (
            "the Parquet partition was already replaced and Parquet keeps no earlier version: "
            "rerun the date once the input is settled"
        )
    name = _sql_name(ref)
    if before is None:
        spark.sql(f"DELETE FROM {name} WHERE {RUN_DATE_COLUMN} = DATE'{run_date.isoformat()}'")
        return f"the table was new, so this run deleted the rows it wrote for {run_date}"
    latest = delta_version(spark, ref)
    if latest != before + 1:
        return (
            f"NOT restored: the table moved from version {before} to {latest} during the run, so "
            "another writer committed too; check its history before rerunning"
        )
    spark.sql(f"RESTORE TABLE {name} TO VERSION AS OF {before}")
    return f"restored the output to version {before}, as it was before the run"


@dataclass(frozen=True)
class Staging:
    """Where one run's rows wait for their judgement before they count: beside a path output,
    Parquet files under ``<output>/_leanscore_staging/<run_date>`` (the same store and
    credentials; plain Parquet, since a staging table needs no log, and writes and reads back
    faster than Delta); beside a catalog table, the table ``<name>_leanscore_staging_<yyyymmdd>``
    in its schema and format (Unity Catalog manages Delta tables only). Publishing costs one
    more pass over the run's output rows (not its input), in exchange for an output that never
    holds rows that failed."""

    spark: SparkSession
    output: TableRef
    ref: TableRef

    @classmethod
    def beside(cls, spark: SparkSession, output: TableRef, run_date: dt.date) -> Staging:
        if output.table:
            name = f"{output.table}_leanscore_staging_{run_date:%Y%m%d}"
            return cls(spark, output, TableRef(table=name, format=output.format))
        path = f"{output.path.rstrip('/')}/{STAGING_DIR}/{run_date.isoformat()}"
        return cls(spark, output, TableRef(path=path, format="parquet"))

    def read(self, schema) -> DataFrame:
        """The staged rows; Parquet is read with the schema they were written with (a
        partition value would otherwise be inferred back as another type)."""
        if self.ref.table:
            return self.spark.read.table(self.ref.table)
        reader = self.spark.read.format(self.ref.format)
        if self.ref.format == "parquet":
            reader = reader.schema(schema)
        return reader.load(self.ref.path)

    def publish(
        self,
        schema,
        run_date: dt.date,
        *,
        rows: int,
        error_column: str,
        statistics_columns: list[str] | None = None,
        constant_columns: Sequence[str] = (),
    ) -> dict:
        """Copy the staged rows into the output's ``run_date`` partition, checked as any write
        (the same row count, else the output's previous version is restored), then discard
        the staging table. Returns ``write_checked``'s dict for the output."""
        written = write_checked(
            self.read(schema),
            self.output,
            run_date,
            rows_in=rows,
            error_column=error_column,
            statistics_columns=statistics_columns,
            constant_columns=constant_columns,
        )
        self.discard()
        return written

    def discard(self) -> str:
        """Remove the staging table; say that the output was not touched. Under Spark Connect
        a staging path cannot be deleted from the client: it stays, and the next run of the
        date overwrites it."""
        if self.ref.table:
            self.spark.sql(f"DROP TABLE IF EXISTS {self.ref.table}")
        elif is_connect(self.spark):
            log.info("staging %s stays (Spark Connect cannot delete paths)", self.ref.path)
        else:
            jvm = self.spark._jvm
            path = jvm.org.apache.hadoop.fs.Path(self.ref.path)
            fs = path.getFileSystem(self.spark._jsc.hadoopConfiguration())
            fs.delete(path, True)
            parent = path.getParent()
            if fs.exists(parent) and not fs.listStatus(parent):
                fs.delete(parent, False)
        return "the output was not touched"
