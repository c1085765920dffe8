"""The score job's output written by its scoring tasks and committed by the driver.

Where the scan engine reads the input, the task that reads and scores a slice of the table
also writes the scored rows, lineage included, as a Parquet file of the output's run date
partition (``leanscore.udfs.task_files``); Spark's JVM never converts or encodes the rows.
The driver then has every file's rows and flagged rows before anything is visible, checks
them as ``write_checked`` does, and commits the files in one Delta transaction
(``leanscore.jobs.delta_commit``) only when the checks pass. A failed check deletes the files
and leaves the output as it was: there is nothing to restore.

It applies to a Delta output at a path of the local file system on a local master (a
cluster's executors do not share the driver's disks), with the writer setting ``auto``, no
shadow, the scan engine able to read the input, a Parquet codec pyarrow writes as Spark does,
and a table Delta's commit takes as it is (``delta_commit.table_problem``). Everywhere else,
and with ``writer: spark``, Spark's writer writes the output as before.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyarrow as pa
from leanscore.compression.artifact import Artifact
from leanscore.jobs import delta_commit
from leanscore.jobs.output import (
    RUN_DATE_COLUMN,
    OutputCheckError,
    PhaseClock,
    delta_version,
    output_problems,
    statistics_property,
)
from leanscore.udfs.delta_log import DeltaFiles
from leanscore.udfs.engines import may_read_whole_tables, reads_whole_tables_only
from leanscore.udfs.engines.scan import ScanUnsupported, plan_job
from leanscore.udfs.storage import local_path
from leanscore.udfs.task_files import CODECS, FILE_ARROW_SCHEMA, FILE_SCHEMA, FileSink, TaskFile
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T
from pyspark.sql.types import DateType, StringType, StructField, StructType, TimestampType

log = logging.getLogger(__name__)

# Column types that usually hold few distinct values (labels, codes, dates, text categories),
# written with a dictionary; keys (one value a row), floats and arrays are written plain.
_FEW_VALUES = (T.StringType, T.BooleanType, T.IntegralType, T.DateType, T.TimestampType)


@dataclass(frozen=True)
class TaskWrite:
    """A planned write: ``files`` runs the tasks and yields their files' descriptions."""

    files: DataFrame
    root: str
    day: dt.date
    schema: StructType
    properties: dict[str, str]
    error_column: str
    created_root: bool


def unavailable(spark: SparkSession, config, *, shadowed: bool, whole_input: bool) -> str | None:
    """Why the tasks cannot write this job's output, else None. ``whole_input``: the input is
    a whole table's path (no filter), as the scan engine reads."""
    master = str(spark.conf.get("spark.master", ""))
    why = config_problem(config, master=master, shadowed=shadowed, whole_input=whole_input)
    if why:
        return why
    if _codec(spark) is None:
        codec = spark.conf.get(_CODEC_SETTING, "snappy")
        return f"{_CODEC_SETTING}={codec} is written by Spark only"
    return delta_commit.unavailable(spark)


def config_problem(config, *, master: str, shadowed: bool, whole_input: bool) -> str | None:
    """Why the tasks cannot write this job's output, from its config and Spark master alone
    (no session: it also chooses how a session's JVM starts); else None."""
    output = config.output
    if config.writer == "spark":
        return "writer: spark"
    if shadowed:
        return "a shadow comparison observes the rows Spark writes"
    if output.table or output.format != "delta":
        return "the output is not a Delta path"
    if not may_read_whole_tables(config.engine) or not whole_input:
        return "the scan engine does not read this input"
    if not master.startswith("local"):
        return "a cluster's tasks write where its executors are; this writes local paths only"
    if local_path(output.path) is None:
        return "the output is not on the local file system"
    return None


def prepare(
    source: DataFrame,
    config,
    artifact: Artifact,
    day: dt.date,
    *,
    keep: list[str],
    statistics_columns: Callable[[list[str]], list[str]],
    lineage: dict[str, str],
    scored_at: str,
    error_column: str,
    snapshot: DeltaFiles | None = None,
) -> TaskWrite | None:
    """The write of ``source`` (the input as read), planned: the input's scan, the model's
    scorer, the output's schema and the sink each task writes through; None (logged) where
    Spark's writer must write instead. ``statistics_columns(columns)`` names the output
    columns with file statistics; ``lineage`` maps the constant lineage string columns to
    this run's values, and ``scored_at`` names the column of the run's time. ``snapshot``:
    the Delta input's log as the run counted it, whose files the tasks then read."""
    spark = source.sparkSession
    options = config.scoring_options(keep)
    try:
        job = plan_job(
            source,
            config.input.path,
            format=config.input.format,
            artifact=config.scoring_artifact(artifact),
            options=options,
            snapshot=snapshot,
        )
    except ScanUnsupported as why:
        if reads_whole_tables_only(config.engine):  # the scan engine named: it fails so
            raise
        log.info("writer auto: Spark's writer writes the output, since %s", why)
        return None
    scored, _ = job.output_schema()
    schema = StructType(
        [
            *scored.fields,
            *[StructField(name, StringType(), True) for name in lineage],
            StructField(scored_at, TimestampType(), True),
            StructField(RUN_DATE_COLUMN, DateType(), True),
        ]
    )
    root = os.path.abspath(local_path(config.output.path) or config.output.path)
    table = delta_commit.table_state(spark, root, schema, RUN_DATE_COLUMN)
    if table.problem:
        log.info("writer auto: Spark's writer writes the output, since %s", table.problem)
        return None
    now = dt.datetime.now(dt.UTC)
    constants = tuple(
        [(name, pa.scalar(str(value), pa.string())) for name, value in lineage.items()]
        + [(scored_at, pa.scalar(now, pa.timestamp("us", tz="UTC")))]
    )
    partition = f"{RUN_DATE_COLUMN}={day.isoformat()}"
    created_statistics = statistics_columns([f.name for f in schema.fields])
    indexed = table.indexed_columns if table.exists else created_statistics
    sink = FileSink(
        directory=os.path.join(root, partition),
        relative=partition,
        codec=_codec(spark),
        constants=constants,
        statistics_columns=tuple(indexed),
        error_column=error_column,
        dictionary_columns=dictionary_columns(scored, config.key_columns),
    )
    return TaskWrite(
        files=job.write(spark, sink),
        root=root,
        day=day,
        schema=schema,
        properties=statistics_property(schema, created_statistics),
        error_column=error_column,
        created_root=not os.path.exists(root),
    )


def run(write: TaskWrite, config, *, rows_in: int, phases: PhaseClock) -> dict:
    """Run the tasks, check what they wrote, and commit it; as ``write_checked`` returns."""
    spark = write.files.sparkSession
    before = delta_version(spark, config.output)
    phases.lap("output_version")
    try:
        files = [row.asDict() for row in write.files.collect()]
    except BaseException:
        _clean_up(write, [], before)
        raise
    phases.lap("score_write")
    rows_out = sum(f["rows"] for f in files)
    flagged = sum(f["flagged"] for f in files)
    problems = output_problems(
        rows_out,
        flagged,
        write.day,
        rows_in=rows_in,
        error_column=write.error_column,
        max_flagged_fraction=config.max_flagged_fraction,
    )
    phases.lap("verify")
    if problems:
        _clean_up(write, files, before)
        raise OutputCheckError("; ".join(problems) + "; nothing was committed: output unchanged")
    try:
        version = delta_commit.replace_partition(
            spark,
            write.root,
            RUN_DATE_COLUMN,
            write.day,
            files,
            schema=write.schema,
            new_table_properties=write.properties,
        )
    except BaseException:
        _clean_up(write, files, before)
        raise
    phases.lap("commit")
    return {"rows_out": rows_out, "flagged_rows": flagged, "version": version, "before": before}


def dictionary_columns(schema: StructType, key_columns) -> tuple[str, ...]:
    """The columns of ``schema`` written with a dictionary: those of a type with usually few
    distinct values, keys excepted."""
    return tuple(
        f.name
        for f in schema.fields
        if isinstance(f.dataType, _FEW_VALUES) and f.name not in key_columns
    )


def write_slices(
    spark: SparkSession,
    batches: Callable[[int], Iterator[pa.RecordBatch]],
    slices: int,
    schema: StructType,
    root: str,
    day: dt.date,
    *,
    constants: dict[str, pa.Scalar],
    statistics_columns: list[str],
    properties: dict[str, str],
    error_column: str,
    key_columns,
) -> int:
    """Write ``slices`` tasks' rows as the job's tasks write theirs, task ``i`` writing
    ``batches(i)`` (rows of ``schema``: the output's columns but the ``constants`` and the
    run date), and commit them as ``day``'s partition of a Delta table at ``root``; the
    committed version. For measuring the writing alone (the bench's limit): rows the tasks
    already hold, where the job's tasks write rows they have just scored."""
    import pyspark

    partition = f"{RUN_DATE_COLUMN}={day.isoformat()}"
    sink = FileSink(
        directory=os.path.join(root, partition),
        relative=partition,
        codec=_codec(spark),
        constants=tuple(constants.items()),
        statistics_columns=tuple(statistics_columns),
        error_column=error_column,
        dictionary_columns=dictionary_columns(schema, key_columns),
    )

    def write(indices: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for chunk in indices:
            for index in chunk.column(0).to_pylist():
                out = TaskFile(sink, pyspark.TaskContext.get().partitionId())
                for batch in batches(index):
                    out.write(batch)
                described = out.close()
                if described is not None:
                    yield pa.RecordBatch.from_pylist([described], schema=FILE_ARROW_SCHEMA)

    tasks = spark.range(slices, numPartitions=max(slices, 1))
    files = [row.asDict() for row in tasks.mapInArrow(write, FILE_SCHEMA).collect()]
    full = StructType(
        [
            *schema.fields,
            *[StructField(n, _spark_type(v.type), True) for n, v in constants.items()],
            StructField(RUN_DATE_COLUMN, DateType(), True),
        ]
    )
    return delta_commit.replace_partition(
        spark, root, RUN_DATE_COLUMN, day, files, schema=full, new_table_properties=properties
    )


_CODEC_SETTING = "spark.sql.parquet.compression.codec"


def _codec(spark: SparkSession) -> str | None:
    """pyarrow's name for the session's Parquet codec; None where pyarrow does not write it
    as Spark does."""
    return CODECS.get(str(spark.conf.get(_CODEC_SETTING, "snappy")).lower())


def _spark_type(arrow: pa.DataType):
    from pyspark.sql.pandas.types import from_arrow_type

    return from_arrow_type(arrow)


def _clean_up(write: TaskWrite, files: list[dict], before: int | None) -> None:
    """Delete what a failed write left: the whole output where this run created it, else the
    files described (a task that failed after writing leaves a file no commit names, as
    Spark's writer does; Delta's VACUUM removes such files)."""
    if write.created_root and before is None:
        shutil.rmtree(write.root, ignore_errors=True)
        return
    for f in files:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(write.root, f["path"]))
