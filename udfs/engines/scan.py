"""The scan engine: Parquet and Delta files read by pyarrow inside the Python workers.

For a small model the model is not what a Spark scoring job spends its time on: Spark's reader
decodes the Parquet column into rows, and the JVM then converts each row back into Arrow for
the Python worker. Here Spark still plans the work and schedules the tasks, ships the model and
receives the outputs, but each task reads its own byte slices of the files with pyarrow, which
decodes the column straight into the Arrow buffers the model reads as a float32 matrix. Only
the kept columns and the outputs cross back into the JVM. The scoring itself is the Arrow
path's (``leanscore.udfs.arrow_path.record_batch_scorer``), so the results are the same, bad rows
included.

Tasks are sized by bytes as Spark sizes its file splits (``spark.sql.files.maxPartitionBytes``)
and each task receives only its own slices, as one row of a small DataFrame, not the whole
plan in its closure: a retried task rereads only its slices. Column names resolve as Spark
resolves them (``spark.sql.caseSensitive``).

It applies to a whole Parquet directory or Delta table (no filter), unpartitioned, without
Delta deletion vectors or column mapping, on a store pyarrow opens with the settings Spark
reads it with (local disks, ``/dbfs`` and ``/Volumes`` through FUSE, ``s3a://`` with the
``fs.s3a.*`` settings: ``leanscore.udfs.storage``). ``plan_scan`` opens the first file as the
tasks will and raises ``ScanUnsupported`` saying why it cannot; under ``engine="auto"`` the
next engine (Spark's reader) then scores the table, a named ``scan`` engine fails with it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq
from leanscore.compression.artifact import Artifact
from leanscore.udfs.arrow_path import output_schema, record_batch_scorer
from leanscore.udfs.delta_log import DeltaFiles, read_delta_log
from leanscore.udfs.distribution import is_connect
from leanscore.udfs.engines.base import Engine, EngineUnavailable, TableInput, Target
from leanscore.udfs.kernel import Scorer
from leanscore.udfs.options import ScoringOptions
from leanscore.udfs.prepare import build_scorer, columns_for
from leanscore.udfs.schema import feature_names, preview
from leanscore.udfs.storage import StoreAccess, StoreUnsupported, store_access
from leanscore.udfs.task_files import FILE_ARROW_SCHEMA, FILE_SCHEMA, FileSink, TaskFile, conformed
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

TableFormat = Literal["delta", "parquet"]

_UNSUPPORTED_DELTA_FEATURES = ("deletionVectors", "columnMapping")
# Spark's own defaults for spark.sql.files.maxPartitionBytes and openCostInBytes.
_SPARK_MAX_PARTITION_BYTES = 128 * 1024 * 1024
_SPARK_OPEN_COST_BYTES = 4 * 1024 * 1024
# Below this many tasks per core the task count is rounded up to whole waves, so a small table
# does not leave cores idle in its last wave; bigger tables are sized by bytes alone.
_WAVES_ROUNDED = 4


class ScanUnsupported(EngineUnavailable):
    """The table cannot be read by the scan engine; the message says why."""


Slice = tuple[
    str, int, int
]  # (file URI, first byte, byte count): row groups whose midpoint is in it


@dataclass(frozen=True)
class ScanPlan:
    """What each task reads: ``tasks[i]`` is the byte slices task ``i`` reads in turn, each
    covering the row groups whose midpoint falls in it (Spark's own rule for Parquet splits,
    so every row group is read by exactly one slice)."""

    path: str
    format: TableFormat
    schema: StructType
    tasks: tuple[tuple[Slice, ...], ...]
    access: StoreAccess = StoreAccess("local")
    case_sensitive: bool = False

    @property
    def units(self) -> list[Slice]:
        return [unit for task in self.tasks for unit in task]

    def task_bytes(self) -> list[int]:
        return [sum(length for _, _, length in task) for task in self.tasks]


def open_parquet(uri: str, access: StoreAccess | None = None) -> pq.ParquetFile:
    return (access or StoreAccess("local")).open_parquet(uri)


def _delta_files(
    spark: SparkSession, path: str, df: DataFrame, snapshot: DeltaFiles | None
) -> list[str]:
    """The current files of the Delta table at ``path`` (those of ``snapshot``, where the
    caller already read its log) after checking the scan engine reads them as they are: from
    its log through Delta Kernel (no Spark job), or from Spark's Delta reader where Kernel
    cannot be used."""
    logged = snapshot or read_delta_log(spark, path)
    if logged is not None:
        _check_delta_layout(
            path,
            list(logged.partition_columns),
            set(logged.reader_features),
            logged.column_mapping,
        )
        return sorted(uri for uri, _ in logged.files)
    from delta.tables import DeltaTable

    detail = DeltaTable.forPath(spark, path).detail().first().asDict()
    _check_delta_layout(
        path,
        list(detail.get("partitionColumns") or []),
        set(detail.get("tableFeatures") or []),
        (detail.get("properties") or {}).get("delta.columnMapping.mode", "none"),
    )
    return sorted(df.inputFiles())


def _check_delta_layout(
    path: str, partition_columns: list[str], features: set[str], column_mapping: str
) -> None:
    if partition_columns:
        raise ScanUnsupported(f"Delta table {path} is partitioned by {partition_columns}")
    for feature in _UNSUPPORTED_DELTA_FEATURES:
        if feature in features:
            raise ScanUnsupported(f"Delta table {path} uses {feature}")
    if column_mapping != "none":
        raise ScanUnsupported(f"Delta table {path} uses column mapping ({column_mapping})")


def _bytes_setting(spark: SparkSession, key: str, default: int) -> int:
    """A Spark size setting (``134217728``, ``128m``, ``128MB``) in bytes."""
    value = spark.conf.get(key, None)
    if not value:
        return default
    text = str(value).strip().lower()
    units = {
        "b": 1,
        "k": 1024,
        "kb": 1024,
        "m": 1024**2,
        "mb": 1024**2,
        "g": 1024**3,
        "gb": 1024**3,
    }
    for suffix in sorted(units, key=len, reverse=True):
        if text.endswith(suffix) and text[: -len(suffix)].strip().isdigit():
            return int(text[: -len(suffix)]) * units[suffix]
    return int(text)


def plan_scan(
    spark: SparkSession,
    path: str,
    *,
    format: TableFormat,
    columns: list[str],
    max_task_bytes: int | None = None,
    table: DataFrame | None = None,
    snapshot: DeltaFiles | None = None,
) -> ScanPlan:
    """The slices of ``path`` the tasks will read, after checking the scan engine applies and
    that pyarrow opens the table's files with the settings Spark reads them with. ``table``:
    the whole table as the caller already read it; ``snapshot``: its Delta log as the caller
    already read it (``read_delta_log``), whose files are then the ones read.

    The file list is what ``spark.read`` would read: for Delta the current snapshot's files,
    from the log (``leanscore.udfs.delta_log``). Tasks are sized by bytes as Spark sizes its
    file splits: at most ``max_task_bytes`` each (default
    ``spark.sql.files.maxPartitionBytes``, 128 MiB), smaller for a table too small to fill every
    core (never under ``spark.sql.files.openCostInBytes``). Files larger than a task are cut
    into byte ranges. The plan depends on the cores present only where a table fills fewer
    than a few waves."""
    if max_task_bytes is not None and max_task_bytes < 1:
        raise ValueError(f"max_task_bytes must be a positive number, got {max_task_bytes}")
    if format not in ("delta", "parquet"):
        raise ScanUnsupported(f"format {format!r} is read by Spark")
    if format == "delta" and is_connect(spark):
        raise ScanUnsupported("Delta tables on Spark Connect are read by Spark")
    df = table if table is not None else spark.read.format(format).load(path)
    files = (
        _delta_files(spark, path, df, snapshot) if format == "delta" else sorted(df.inputFiles())
    )
    case_sensitive = str(spark.conf.get("spark.sql.caseSensitive", "false")).lower() == "true"
    try:
        access = store_access(spark, files[0] if files else path)
    except StoreUnsupported as err:
        raise ScanUnsupported(str(err)) from err
    sizes: list[int] = []
    if files:
        try:  # what the tasks will do, once on the driver: a store pyarrow cannot open falls back
            file_schema = access.open_parquet(files[0]).schema_arrow
            sizes = access.file_sizes(files)
        except Exception as err:
            raise ScanUnsupported(f"pyarrow cannot open {files[0]}: {err}") from err
        if format == "parquet":
            # In Delta a column a file lacks is null (the schema grew); in a Parquet directory
            # it is a partition column whose values live in the directory names.
            stored = stored_names(file_schema.names, columns, case_sensitive=case_sensitive)
            missing = [c for c in columns if stored[c] is None]
            if missing:
                raise ScanUnsupported(f"columns {preview(missing)} are not stored in {files[0]}")
    cores = (os.cpu_count() or 2) if is_connect(spark) else spark.sparkContext.defaultParallelism
    largest = max_task_bytes or _bytes_setting(
        spark, "spark.sql.files.maxPartitionBytes", _SPARK_MAX_PARTITION_BYTES
    )
    smallest = _bytes_setting(spark, "spark.sql.files.openCostInBytes", _SPARK_OPEN_COST_BYTES)
    sized = list(zip(files, sizes, strict=True))
    tasks = size_tasks(sized, max_task_bytes=largest, min_task_bytes=smallest, cores=cores)
    return ScanPlan(path, format, df.schema, tasks, access, case_sensitive)


def size_tasks(
    files: list[tuple[str, int]], *, max_task_bytes: int, min_task_bytes: int, cores: int
) -> tuple[tuple[Slice, ...], ...]:
    """Byte slices of ``files`` dealt into tasks of at most ``max_task_bytes`` (as Spark's
    ``maxSplitBytes``: smaller when the table is too small to give every core one, never under
    ``min_task_bytes`` unless ``max_task_bytes`` is). A table of fewer than a few waves gets a
    whole number of waves of tasks."""
    total = sum(size for _, size in files)
    if total == 0:
        return ()
    target = min(max_task_bytes, max(min_task_bytes, -(-total // max(cores, 1))))
    slices: list[tuple[Slice, int]] = []
    for uri, size in files:
        pieces = max(1, -(-size // target))
        step = -(-size // pieces)
        slices.extend(
            ((uri, start, min(step, size - start)), min(step, size - start))
            for start in range(0, max(size, 1), max(step, 1))
        )
    count = -(-total // target)
    if 1 < count < _WAVES_ROUNDED * cores:
        count = -(-count // cores) * cores
    while True:  # balanced by weight; more tasks until none holds more than the target
        tasks = deal(slices, count)
        loads = [sum(length for _, _, length in task) for task in tasks]
        if max(loads) <= target or count >= len(slices):
            return tasks
        count += cores if count < _WAVES_ROUNDED * cores else 1


def deal(weighted: list[tuple[Slice, int]], tasks: int) -> tuple[tuple[Slice, ...], ...]:
    """Units into at most ``tasks`` groups of near-equal weight (largest first, each to the
    lightest group), each group in file order."""
    groups: list[list[tuple[Slice, int]]] = [[] for _ in range(min(tasks, len(weighted)))]
    loads = [0] * len(groups)
    for unit, weight in sorted(weighted, key=lambda uw: -uw[1]):
        lightest = loads.index(min(loads))
        groups[lightest].append((unit, weight))
        loads[lightest] += weight
    order = {unit: i for i, (unit, _) in enumerate(weighted)}
    return tuple(tuple(sorted((u for u, _ in g), key=order.__getitem__)) for g in groups)


def row_groups_in(metadata: pq.FileMetaData, start: int, length: int) -> list[int]:
    """The row groups whose midpoint lies in ``[start, start + length)``: Spark's rule, so
    byte slices that cover a file read each of its row groups exactly once."""
    chosen = []
    for g in range(metadata.num_row_groups):
        group = metadata.row_group(g)
        chunks = [group.column(c) for c in range(group.num_columns)]
        first = min(
            c.dictionary_page_offset if c.has_dictionary_page else c.data_page_offset
            for c in chunks
        )
        middle = first + sum(c.total_compressed_size for c in chunks) // 2
        if start <= middle < start + length:
            chosen.append(g)
    return chosen


def stored_names(
    stored: list[str], wanted: list[str], *, case_sensitive: bool
) -> dict[str, str | None]:
    """Each wanted column's name in a file, resolved as Spark resolves it: exactly, or (the
    default, ``spark.sql.caseSensitive=false``) ignoring case; None when the file lacks it."""
    exact = set(stored)
    folded: dict[str, list[str]] = {}
    for name in stored:
        folded.setdefault(name.lower(), []).append(name)
    found: dict[str, str | None] = {}
    for name in wanted:
        if case_sensitive or name in exact:
            found[name] = name if name in exact else None
            continue
        matches = folded.get(name.lower(), [])
        if len(matches) > 1:
            raise ValueError(
                f"column {name!r} matches {matches} when case is ignored; Spark refuses the "
                "file too: rename one, or set spark.sql.caseSensitive=true"
            )
        found[name] = matches[0] if matches else None
    return found


def read_slice(
    unit: Slice,
    types: dict[str, pa.DataType],
    batch_rows: int,
    *,
    access: StoreAccess | None = None,
    case_sensitive: bool = False,
) -> Iterator[pa.RecordBatch]:
    """The columns of one slice of a plan, ``batch_rows`` rows at a time, as the Arrow
    ``types`` Spark expects. A column the file lacks (a Delta table's schema grew after it was
    written) is read as nulls, as Spark reads it."""
    uri, start, length = unit
    parquet = open_parquet(uri, access)
    groups = row_groups_in(parquet.metadata, start, length)
    if not groups:
        return
    stored = stored_names(parquet.schema_arrow.names, list(types), case_sensitive=case_sensitive)
    for rb in parquet.iter_batches(
        batch_size=batch_rows,
        row_groups=groups,
        columns=list(dict.fromkeys(s for s in stored.values() if s is not None)),
        use_threads=False,  # one core per task, as Spark scheduled it
    ):
        arrays = []
        for name, want in types.items():
            if stored[name] is None:
                arrays.append(pa.nulls(rb.num_rows, want))
                continue
            column = rb.column(stored[name])
            arrays.append(column if _same_values(column.type, want) else column.cast(want))
        yield pa.RecordBatch.from_arrays(arrays, names=list(types))


def plan_reader(
    plan: ScanPlan, types: dict[str, pa.DataType], batch_rows: int
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """For ``mapInArrow`` over ``slice_frame(plan)``: the record batches of the slices each
    row describes. Only the store settings travel in the closure; the slices are the data."""
    access, case_sensitive = plan.access, plan.case_sensitive

    def read(descriptors: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in descriptors:
            for slices in batch.column("slices").to_pylist():
                for s in slices:
                    unit = (s["uri"], s["start"], s["length"])
                    yield from read_slice(
                        unit, types, batch_rows, access=access, case_sensitive=case_sensitive
                    )

    return read


def _same_values(have: pa.DataType, want: pa.DataType) -> bool:
    """Equal types, or lists of the same values whose item fields are named differently
    (Parquet's ``element``, Spark's ``element`` or ``item``): no cast, no copy."""
    if have == want:
        return True
    lists = pa.types.is_list(have) and pa.types.is_list(want)
    return lists and have.value_type == want.value_type


def arrow_types(plan: ScanPlan, columns: list[str], timezone: str) -> dict[str, pa.DataType]:
    """Each column's Arrow type as Spark hands it to Python (timestamps in the session zone)."""
    by_name = {f.name: f.dataType for f in plan.schema.fields}
    folded = {f.name.lower(): f.dataType for f in plan.schema.fields}

    def spark_type(name: str):
        if name in by_name or plan.case_sensitive:
            return by_name[name]
        return folded[name.lower()]

    return {c: _arrow_type(spark_type(c), timezone) for c in dict.fromkeys(columns)}


def _arrow_type(data_type, timezone: str) -> pa.DataType:
    import inspect

    from pyspark.sql.pandas.types import to_arrow_type

    if "timezone" in inspect.signature(to_arrow_type).parameters:  # Spark 4.1+
        return to_arrow_type(data_type, timezone=timezone)
    # Spark 4.0 names no zone here, but hands Python its timestamps in the session zone.
    arrow = to_arrow_type(data_type)
    if pa.types.is_timestamp(arrow) and arrow.tz is not None:
        return pa.timestamp(arrow.unit, tz=timezone)
    return arrow


SLICE_SCHEMA = "task int, slices array<struct<uri: string, start: long, length: long>>"


def slice_frame(spark: SparkSession, plan: ScanPlan) -> DataFrame:
    """One row per task of ``plan`` (its id and its slices), each in a partition of its own:
    a task receives its own slices as data, and a retried task rereads only those."""
    rows = [
        (i, [{"uri": u, "start": s, "length": n} for u, s, n in task])
        for i, task in enumerate(plan.tasks)
    ]
    if not rows:
        return spark.createDataFrame([], SLICE_SCHEMA)
    if is_connect(spark):
        frame = spark.createDataFrame(rows, SLICE_SCHEMA)
        # every key sampled, so the range bounds put exactly one task in each partition
        return frame.repartitionByRange(len(rows), "task") if len(rows) > 1 else frame
    # Parallelized in the JVM as JSON lines, one to a partition: a Python RDD here would start
    # a second kind of Python worker (its own daemon, its own imports) in every scoring task's
    # first wave, only to pickle each task's slices into a row.
    lines = [json.dumps({"task": i, "slices": slices}) for i, slices in rows]
    context, session = spark.sparkContext, spark._jsparkSession
    texts = session.createDataset(
        context._jsc.parallelize(lines, len(lines)).rdd(),
        context._jvm.org.apache.spark.sql.Encoders.STRING(),
    )
    return DataFrame(session.read().schema(SLICE_SCHEMA).json(texts), spark)


@dataclass(frozen=True)
class ScanJob:
    """A planned scan-engine job (``plan_job``): the input's slices, the model's scorer and the
    output's columns, for the tasks to score (``score``) or to score and write (``write``)."""

    plan: ScanPlan
    scorer: Scorer
    fields: list[tuple[str, str]]
    out_names: dict[str, str]
    keep: list[str]
    key_columns: list[str]
    arrow_batch_rows: int

    def output_schema(self) -> tuple[StructType, list[str]]:
        """The Spark schema of the scored batches (``keep`` columns, then the outputs)."""
        return output_schema(self.plan.schema, self.keep, self.fields, self.out_names, self.scorer)

    def score(self, spark: SparkSession) -> DataFrame:
        """A DataFrame of ``keep`` columns plus the outputs, one Spark task per task of the
        plan."""
        schema, scored = self._scored_slices(spark)
        return slice_frame(spark, self.plan).mapInArrow(scored, schema)

    def write(self, spark: SparkSession, sink: FileSink) -> DataFrame:
        """As ``score``, but each task writes its scored rows into a Parquet file of its own
        through ``sink`` (``leanscore.udfs.task_files``) and returns only that file's
        description (``FILE_SCHEMA``), for the driver to commit: the rows never cross into the
        JVM."""
        schema, scored = self._scored_slices(spark)
        timezone = spark.conf.get("spark.sql.session.timeZone")
        written = pa.schema([(f.name, _arrow_type(f.dataType, timezone)) for f in schema.fields])

        def write_slices(descriptors: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            from pyspark import TaskContext

            out = TaskFile(sink, TaskContext.get().partitionId())
            try:
                for batch in scored(descriptors):
                    out.write(conformed(batch, written))
                described = out.close()
            except BaseException:
                out.discard()
                raise
            if described is not None:
                yield pa.RecordBatch.from_pylist([described], schema=FILE_ARROW_SCHEMA)

        return slice_frame(spark, self.plan).mapInArrow(write_slices, FILE_SCHEMA)

    def _scored_slices(self, spark: SparkSession):
        """(the scored batches' Spark schema, the function a task runs from its slice
        descriptors to its scored batches)."""
        features = self.scorer.family.input_columns()
        timezone = spark.conf.get("spark.sql.session.timeZone")
        types = arrow_types(self.plan, [*self.keep, *self.key_columns, *features], timezone)
        schema, names = self.output_schema()
        read = plan_reader(self.plan, types, self.arrow_batch_rows)
        scorer, keep, key_columns = self.scorer, self.keep, self.key_columns

        def scored(descriptors: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            score = record_batch_scorer(scorer, features, features, keep, key_columns, names)
            for rb in read(descriptors):
                yield score(rb)

        return schema, scored


def plan_job(
    df: DataFrame,
    path: str,
    *,
    format: TableFormat,
    artifact: Artifact,
    options: ScoringOptions,
    snapshot: DeltaFiles | None = None,
) -> ScanJob:
    """The scan-engine job scoring the table at ``path`` (read as ``df``; for Delta, the files
    of ``snapshot`` where the caller read its log) with ``artifact``; ``ScanUnsupported``
    where the scan cannot read it (``plan_scan``)."""
    spark = df.sparkSession
    keys, keep, fields, names = columns_for(df, artifact, options)
    # an ML Vector column is read as its stored struct (arrow_batch.vector_values)
    features = feature_names(artifact.manifest)
    plan = plan_scan(
        spark,
        path,
        format=format,
        columns=[*keep, *keys, *features],
        max_task_bytes=options.max_task_bytes,
        table=df,
        snapshot=snapshot,
    )
    scorer = build_scorer(artifact, spark=spark, options=options)
    return ScanJob(plan, scorer, fields, names, keep, keys, options.arrow_batch_rows)


class ScanEngine(Engine):
    """Reads a whole Parquet directory or Delta table with pyarrow inside the tasks: ``auto``
    tries it first wherever the input is such a path, and falls back when ``plan_scan`` says
    it cannot read it (``ScanUnsupported``)."""

    name = "scan"
    auto_rank = 10
    reads_whole_tables = True

    def unavailable(self, target: Target) -> str | None:
        if not isinstance(target, TableInput):
            return "it reads whole Parquet/Delta tables; a column expression is not one"
        if target.path is None:
            return (
                "it reads a whole Parquet/Delta path, and this input is a DataFrame, a catalog "
                "table, or filtered"
            )
        return None

    def score(self, table: TableInput, artifact: Artifact, options: ScoringOptions) -> DataFrame:
        df = table.df
        job = plan_job(df, table.path, format=table.format, artifact=artifact, options=options)
        return job.score(df.sparkSession)
