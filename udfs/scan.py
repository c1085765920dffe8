"""The scan engine: Parquet and Delta files read by pyarrow inside the Python workers.

For a small model the model is not what a Spark scoring job spends its time on: Spark's reader
decodes the Parquet column into rows, and the JVM then converts each row back into Arrow for
the Python worker. Here Spark still plans the work (one task per Parquet row group or file),
ships the model and receives the outputs, but each task reads its own slice with pyarrow, which
decodes the column straight into the Arrow buffers the model reads as a float32 matrix. Only
the kept columns and the outputs cross back into the JVM. The scoring itself is the Arrow
path's (``leanscore.udfs.arrow_path.record_batch_scorer``), so the results are the same, bad rows
included.

It applies to a whole Parquet directory or Delta table (no filter), unpartitioned, without
Delta deletion vectors or column mapping, on a file system pyarrow can open (local disks,
``/dbfs`` and volumes through FUSE, or an ``s3://``, ``gs://``, ``hdfs://`` URI). ``plan_scan``
raises ``ScanUnsupported`` saying why otherwise, and ``score_table`` then falls back to the
Spark reader.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.parquet as pq
from leanscore.compression.artifact import Artifact
from leanscore.udfs.arrow_path import output_schema, record_batch_scorer
from leanscore.udfs.distribution import DEFAULT_PATH_THRESHOLD_BYTES, is_connect
from leanscore.udfs.kernel import BadRowPolicy, Scorer
from leanscore.udfs.predict import as_artifact, build_scorer, resolve_columns, score_dataframe
from leanscore.udfs.schema import feature_names, is_vector, preview
from leanscore.udfs.session_cache import SessionConfig
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

TableFormat = Literal["delta", "parquet"]
TableEngine = Literal["auto", "scan", "arrow", "pandas"]

# Split files into row groups while there are few of them; past this many files per core,
# whole files are the unit and the driver reads no footers.
_FILES_PER_CORE_FOR_ROW_GROUPS = 4
_UNSUPPORTED_DELTA_FEATURES = ("deletionVectors", "columnMapping")


class ScanUnsupported(ValueError):
    """The table cannot be read by the scan engine; the message says why."""


Unit = tuple[str, int | None]  # (file URI, row group, or None for the whole file)


@dataclass(frozen=True)
class ScanPlan:
    """What each task reads: ``tasks[i]`` is the units task ``i`` reads in turn."""

    path: str
    format: TableFormat
    schema: StructType
    tasks: tuple[tuple[Unit, ...], ...]

    @property
    def units(self) -> list[Unit]:
        return [unit for task in self.tasks for unit in task]


def _local_path(uri: str) -> str | None:
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return unquote(parsed.path)
    if parsed.scheme == "dbfs" and os.path.isdir("/dbfs"):
        return "/dbfs" + unquote(parsed.path)
    return None


def open_parquet(uri: str) -> pq.ParquetFile:
    local = _local_path(uri)
    if local is not None:
        return pq.ParquetFile(local)
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(uri)
    return pq.ParquetFile(filesystem.open_input_file(path))


def _check_delta(spark: SparkSession, path: str) -> None:
    from delta.tables import DeltaTable

    detail = DeltaTable.forPath(spark, path).detail().first().asDict()
    if detail.get("partitionColumns"):
        raise ScanUnsupported(f"Delta table {path} is partitioned by {detail['partitionColumns']}")
    features = set(detail.get("tableFeatures") or [])
    for feature in _UNSUPPORTED_DELTA_FEATURES:
        if feature in features:
            raise ScanUnsupported(f"Delta table {path} uses {feature}")
    mode = (detail.get("properties") or {}).get("delta.columnMapping.mode", "none")
    if mode != "none":
        raise ScanUnsupported(f"Delta table {path} uses column mapping ({mode})")


def plan_scan(
    spark: SparkSession,
    path: str,
    *,
    format: TableFormat,
    columns: list[str],
    tasks_per_core: int = 1,
) -> ScanPlan:
    """The slices of ``path`` the tasks will read, after checking the scan engine applies.

    The file list comes from Spark (for Delta: the current snapshot's files), so the scan reads
    exactly what ``spark.read`` would. Row groups (or whole files, when there are many) are
    dealt to ``tasks_per_core`` tasks per core, balanced by rows (or bytes): a Python task
    costs tens of milliseconds to start, so one wave of long tasks beats many short ones."""
    if tasks_per_core < 1:
        raise ValueError(f"tasks_per_core must be a positive number, got {tasks_per_core}")
    if format not in ("delta", "parquet"):
        raise ScanUnsupported(f"format {format!r} is read by Spark")
    if format == "delta":
        if is_connect(spark):
            raise ScanUnsupported("Delta tables on Spark Connect are read by Spark")
        _check_delta(spark, path)
    df = spark.read.format(format).load(path)
    files = sorted(df.inputFiles())
    if files and format == "parquet":
        # In Delta a column a file lacks is null (the schema grew); in a Parquet directory it
        # is a partition column whose values live in the directory names.
        try:
            file_schema = open_parquet(files[0]).schema_arrow
        except Exception as err:  # no local path, no pyarrow file system for the scheme
            raise ScanUnsupported(f"pyarrow cannot open {files[0]}: {err}") from err
        missing = [c for c in columns if file_schema.get_field_index(c) < 0]
        if missing:  # partition columns live in directory names, not in the files
            raise ScanUnsupported(f"columns {preview(missing)} are not stored in {files[0]}")
    cores = (os.cpu_count() or 2) if is_connect(spark) else spark.sparkContext.defaultParallelism
    weighted: list[tuple[Unit, int]] = []
    if len(files) > _FILES_PER_CORE_FOR_ROW_GROUPS * cores:
        weighted = [((f, None), _file_bytes(f)) for f in files]
    else:
        for f in files:
            meta = open_parquet(f).metadata
            groups = range(meta.num_row_groups)
            weighted.extend(((f, g), meta.row_group(g).num_rows) for g in groups)
    return ScanPlan(path, format, df.schema, deal(weighted, cores * tasks_per_core))


def _file_bytes(uri: str) -> int:
    local = _local_path(uri)
    return os.path.getsize(local) if local is not None and os.path.exists(local) else 1


def deal(weighted: list[tuple[Unit, int]], tasks: int) -> tuple[tuple[Unit, ...], ...]:
    """Units into at most ``tasks`` groups of near-equal weight (largest first, each to the
    lightest group), each group in file order."""
    groups: list[list[tuple[Unit, int]]] = [[] for _ in range(min(tasks, len(weighted)))]
    loads = [0] * len(groups)
    for unit, weight in sorted(weighted, key=lambda uw: -uw[1]):
        lightest = loads.index(min(loads))
        groups[lightest].append((unit, weight))
        loads[lightest] += weight
    order = {unit: i for i, (unit, _) in enumerate(weighted)}
    return tuple(tuple(sorted((u for u, _ in g), key=order.__getitem__)) for g in groups)


def read_unit(
    unit: Unit, types: dict[str, pa.DataType], batch_rows: int
) -> Iterator[pa.RecordBatch]:
    """The columns of one unit of a plan, ``batch_rows`` rows at a time, as the Arrow ``types``
    Spark expects. A column the file lacks (a Delta table's schema grew after it was written)
    is read as nulls, as Spark reads it."""
    uri, group = unit
    parquet = open_parquet(uri)
    stored = set(parquet.schema_arrow.names)
    for rb in parquet.iter_batches(
        batch_size=batch_rows,
        row_groups=None if group is None else [group],
        columns=[c for c in types if c in stored],
        use_threads=False,  # one core per task, as Spark scheduled it
    ):
        arrays = []
        for name, want in types.items():
            if name not in stored:
                arrays.append(pa.nulls(rb.num_rows, want))
                continue
            column = rb.column(name)
            arrays.append(column if _same_values(column.type, want) else column.cast(want))
        yield pa.RecordBatch.from_arrays(arrays, names=list(types))


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
    return {c: _arrow_type(by_name[c], timezone) for c in dict.fromkeys(columns)}


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


def task_ids(spark: SparkSession, plan: ScanPlan) -> DataFrame:
    """One row per task of ``plan``, each in a partition of its own."""
    return spark.range(0, len(plan.tasks), numPartitions=max(1, len(plan.tasks)))


def score_plan(
    spark: SparkSession,
    plan: ScanPlan,
    scorer: Scorer,
    *,
    fields: list[tuple[str, str]],
    out_names: dict[str, str],
    keep: list[str],
    key_columns: list[str],
    arrow_batch_rows: int,
) -> DataFrame:
    """A DataFrame of ``keep`` columns plus the outputs, one Spark task per task of ``plan``."""
    features = list(scorer.features.columns or [scorer.features.array_column])
    timezone = spark.conf.get("spark.sql.session.timeZone")
    types = arrow_types(plan, [*keep, *key_columns, *features], timezone)
    schema, names = output_schema(plan.schema, keep, fields, out_names)
    tasks = plan.tasks

    def score_units(ids: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        score = record_batch_scorer(scorer, features, features, keep, key_columns, names)
        for id_batch in ids:
            for task in id_batch.column(0).to_pylist():
                for unit in tasks[task]:
                    for rb in read_unit(unit, types, arrow_batch_rows):
                        yield score(rb)

    return task_ids(spark, plan).mapInArrow(score_units, schema)


def score_table(
    spark: SparkSession,
    path: str,
    artifact: Artifact | str | os.PathLike[str],
    *,
    format: TableFormat = "delta",
    engine: TableEngine = "auto",
    key_columns: list[str] | None = None,
    keep_columns: list[str] | None = None,
    output_column: str = "prediction",
    batch_size: int = 4096,
    arrow_batch_rows: int = 10_000,
    bad_rows: BadRowPolicy = "fail",
    probabilities: bool = False,
    session_config: SessionConfig | None = None,
    path_threshold_bytes: int = DEFAULT_PATH_THRESHOLD_BYTES,
    on_fallback: Callable[[str], None] | None = None,
) -> DataFrame:
    """Score a whole Parquet directory or Delta table: ``keep_columns`` (default: all) plus
    the model's outputs, as ``leanscore.udfs.score_dataframe`` names them.

    ``engine="auto"`` uses the scan engine where it applies (see the module docstring) and
    otherwise Spark's reader with ``score_dataframe``; ``on_fallback(reason)`` hears why.
    ``engine="scan"`` raises ``ScanUnsupported`` instead of falling back."""
    if engine not in ("auto", "scan", "arrow", "pandas"):
        raise ValueError(f"engine must be 'auto', 'scan', 'arrow' or 'pandas', got {engine!r}")
    if arrow_batch_rows < 1:
        raise ValueError(f"arrow_batch_rows must be a positive number, got {arrow_batch_rows}")
    artifact = as_artifact(artifact)
    options = dict(
        key_columns=key_columns,
        keep_columns=keep_columns,
        output_column=output_column,
        batch_size=batch_size,
        bad_rows=bad_rows,
        probabilities=probabilities,
        session_config=session_config,
        path_threshold_bytes=path_threshold_bytes,
    )
    df = spark.read.format(format).load(path)
    if engine in ("arrow", "pandas"):
        return score_dataframe(df, artifact, engine=engine, **options)
    keys, keep, fields, names = resolve_columns(
        df,
        artifact,
        key_columns=key_columns,
        keep_columns=keep_columns,
        output_column=output_column,
        probabilities=probabilities,
    )
    try:
        features = feature_list(artifact, df)
        plan = plan_scan(spark, path, format=format, columns=[*keep, *keys, *features])
    except ScanUnsupported as why:
        if engine == "scan":
            raise
        if on_fallback is not None:
            on_fallback(str(why))
        return score_dataframe(df, artifact, engine="auto", **options)
    scorer = build_scorer(
        artifact,
        spark=spark,
        batch_size=batch_size,
        bad_rows=bad_rows,
        probabilities=probabilities,
        session_config=session_config,
        path_threshold_bytes=path_threshold_bytes,
    )
    return score_plan(
        spark,
        plan,
        scorer,
        fields=fields,
        out_names=names,
        keep=keep,
        key_columns=keys,
        arrow_batch_rows=arrow_batch_rows,
    )


def feature_list(artifact: Artifact, df: DataFrame) -> list[str]:
    """The stored columns the model reads; ML Vector features are read by Spark."""
    names = feature_names(artifact.manifest)
    types = {f.name: f.dataType for f in df.schema.fields}
    vectors = [n for n in names if is_vector(types[n])]
    if vectors:
        raise ScanUnsupported(f"ML Vector column {vectors[0]!r} is read by Spark")
    return names
