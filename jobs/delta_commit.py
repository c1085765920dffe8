"""Files the scoring tasks wrote, committed to a Delta table in one transaction of the
session's own Delta Lake.

The commit goes through Delta Lake's transaction in the driver JVM (``DeltaLog``,
``OptimisticTransaction``), not a second implementation of the log: the same log store,
conflict checks, protocol and checkpoints as every other write to the table. It replaces a
run date's partition as Spark's ``replaceWhere`` write does (the partition's current files
removed, the new ones added, one version, operation ``WRITE``), and creates the table with
its schema and properties where there is none yet. These are Delta Lake's internal Scala
classes: ``unavailable`` checks they are there (open-source Delta Lake 4.0 to 4.4 on a
classic session), and the job keeps Spark's writer wherever they are not.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from dataclasses import dataclass

from leanscore.compression.errors import LeanscoreError
from leanscore.udfs.delta_log import partition_files
from pyspark.sql import SparkSession
from pyspark.sql.types import StructType

log = logging.getLogger(__name__)

_CLASSES = (
    "org.apache.spark.sql.delta.DeltaLog",
    "org.apache.spark.sql.delta.DeltaOperations$Write",
    "org.apache.spark.sql.delta.actions.Action$",
)


class CommitRefused(LeanscoreError, RuntimeError):
    """The table changed between the check and the commit; the message says how."""


def unavailable(spark: SparkSession) -> str | None:
    """Why files cannot be committed through this session's Delta Lake, else None."""
    from leanscore.udfs.distribution import is_connect

    if is_connect(spark):
        return "a Spark Connect session has no driver JVM to commit through"
    loader = spark._jvm.java.lang.Thread.currentThread().getContextClassLoader()
    for name in _CLASSES:
        try:
            loader.loadClass(name)
        except Exception:  # noqa: BLE001 - py4j wraps the JVM's ClassNotFoundException
            return f"this runtime's Delta Lake has no {name}"
    return None


@dataclass(frozen=True)
class TableState:
    """The Delta table at a path as a commit of new files finds it: ``exists``; ``problem``,
    why the files cannot be committed as they are (None: they can); ``indexed_columns``, the
    columns its files keep statistics on (None where there is no table yet)."""

    exists: bool
    problem: str | None = None
    indexed_columns: list[str] | None = None


def table_state(spark: SparkSession, path: str, schema: StructType, partition: str) -> TableState:
    """The Delta table at ``path`` against files of ``schema`` partitioned by ``partition``.
    Spark's writer handles everything refused (a schema it would change or refuse,
    constraints and generated columns it checks row by row, column mapping)."""
    # a transaction only to read the latest version; it is never committed
    txn = _delta_log(spark, path).startTransaction()
    if txn.readVersion() < 0:
        return TableState(exists=False)
    metadata = txn.metadata()
    return TableState(
        exists=True,
        problem=_metadata_problem(metadata, schema, partition),
        indexed_columns=_indexed_columns(_configuration(metadata), schema, partition),
    )


def _indexed_columns(
    configuration: dict[str, str], schema: StructType, partition: str
) -> list[str]:
    """The columns Delta keeps file statistics on, by the table's settings: those
    ``delta.dataSkippingStatsColumns`` names, else the first
    ``delta.dataSkippingNumIndexedCols`` (32 by default, -1 for all) data columns."""
    named = configuration.get("delta.dataSkippingStatsColumns")
    if named:  # Delta resolves these names ignoring case
        by_lower = {f.name.lower(): f.name for f in schema.fields}
        return [by_lower.get(n.lower(), n) for n in _column_names(named)]
    count = int(configuration.get("delta.dataSkippingNumIndexedCols", "32"))
    data = [f.name for f in schema.fields if f.name != partition]
    return data if count < 0 else data[:count]


def _column_names(listed: str) -> list[str]:
    """Names from a comma-separated list, each plain or in backquotes (a doubled backquote
    inside stands for one)."""
    names, current, quoted, i = [], "", False, 0
    while i < len(listed):
        char = listed[i]
        if char == "`" and quoted and listed[i + 1 : i + 2] == "`":
            current, i = current + "`", i + 2
            continue
        if char == "`":
            quoted = not quoted
        elif char == "," and not quoted:
            names.append(current.strip())
            current = ""
        else:
            current += char
        i += 1
    return [n for n in [*names, current.strip()] if n]


def replace_partition(
    spark: SparkSession,
    path: str,
    partition: str,
    day: dt.date,
    files: list[dict],
    *,
    schema: StructType,
    new_table_properties: dict[str, str],
) -> int:
    """Commit ``files`` (``leanscore.udfs.task_files`` descriptions, paths relative to the
    table) as the ``day`` partition of the Delta table at ``path``, replacing what it held,
    in one transaction; create the table (``schema``, partitioned by ``partition``, with
    ``new_table_properties``) where there is none. Returns the committed version."""
    txn = _delta_log(spark, path).startTransaction()
    if txn.readVersion() < 0:
        metadata = _metadata(schema, partition, new_table_properties)
        txn.updateMetadataForNewTable(_action(spark, {"metaData": metadata}))
    else:
        problem = _metadata_problem(txn.metadata(), schema, partition)
        if problem:
            raise CommitRefused(f"delta path {path} changed during the run: {problem}")
    predicate = f"{_quoted(partition)} = DATE'{day.isoformat()}'"
    actions = _removals(spark, txn, path, partition, day, predicate)
    for f in files:
        add = {
            "path": f["path"],
            "partitionValues": {partition: day.isoformat()},
            "size": f["size"],
            "modificationTime": f["modification_time"],
            "dataChange": True,
            "stats": f["stats"],
        }
        actions.append(_action(spark, {"add": add}))
    _record_metrics(spark, txn, files)
    return int(txn.commit(_seq(spark, actions), _write_operation(spark, partition, predicate)))


def _record_metrics(spark: SparkSession, txn, files: list[dict]) -> None:
    """The commit's operation metrics, as Spark's writer records them for a ``WRITE`` (files,
    rows and bytes written) and ``DESCRIBE HISTORY`` shows them."""
    jvm = spark._jvm
    counts = {
        "numFiles": len(files),
        "numOutputRows": sum(f["rows"] for f in files),
        "numOutputBytes": sum(f["size"] for f in files),
        "numCopiedRows": 0,
        "numAddedChangeFiles": 0,
    }
    metrics = jvm.java.util.HashMap()
    for name, value in counts.items():
        metric = jvm.org.apache.spark.sql.execution.metric.SQLMetrics.createMetric(
            spark.sparkContext._jsc.sc(), name
        )
        metric.set(value)
        metrics.put(name, metric)
    scala_map = jvm.org.apache.spark.api.python.PythonUtils.toScalaMap(metrics)
    txn.registerSQLMetrics(spark._jsparkSession, scala_map)


def _removals(spark: SparkSession, txn, path: str, partition: str, day: dt.date, predicate: str):
    """Removals of the files ``day``'s partition holds in ``txn``'s snapshot. Delta Kernel
    lists them from the log in the driver, at the transaction's version, and the transaction
    then counts the partition as read, so a concurrent write to it fails this commit rather
    than mix with it. Where Kernel cannot (a runtime without it), the transaction's
    own ``filterFiles`` finds them, which rebuilds the table's state with Spark jobs: in a
    fresh process, rewriting a date of a 2,000,000-row output here, the whole commit took
    4.0 to 4.2 s that way (4 runs) and 0.73 to 0.79 s with Kernel (3 runs)."""
    version = txn.readVersion()
    if version < 0:
        return []
    condition = _seq(
        spark, [spark._jsparkSession.sessionState().sqlParser().parseExpression(predicate)]
    )
    try:
        found = partition_files(spark, path, version, partition, day)
    except Exception as err:  # noqa: BLE001 - no Kernel classes, a log Kernel cannot read
        log.debug("Delta Kernel did not list %s (%s); the transaction does", path, err)
        return [file.remove() for file in _items(txn.filterFiles(condition, False))]
    # the partition counts as read: a concurrent write to it fails this commit, one to
    # another date does not
    txn.trackReadPredicates(condition, True, True)
    now = int(time.time() * 1000)
    return [
        _action(
            spark,
            {
                "remove": {
                    "path": file_path,
                    "deletionTimestamp": now,
                    "dataChange": True,
                    "extendedFileMetadata": True,
                    "partitionValues": {partition: day.isoformat()},
                    "size": size,
                }
            },
        )
        for file_path, size in found
    ]


def _delta_log(spark: SparkSession, path: str):
    return spark._jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, path)


def _metadata_problem(metadata, schema: StructType, partition: str) -> str | None:
    table = StructType.fromJson(json.loads(metadata.schemaString()))
    columns = _items(metadata.partitionColumns())
    if columns != [partition]:
        return f"it is partitioned by {columns}, the job writes {partition!r} partitions"
    if _shape(table) != _shape(schema):
        return "its columns differ from the job's output"
    if any(f.metadata for f in table.fields):
        return "a column carries Delta metadata (generated, identity, default or invariant)"
    configuration = _configuration(metadata)
    if any(key.startswith("delta.constraints.") for key in configuration):
        return "it has CHECK constraints, which Spark's writer checks row by row"
    if configuration.get("delta.columnMapping.mode", "none") != "none":
        return "it maps column names (delta.columnMapping.mode)"
    return None


def _configuration(metadata) -> dict[str, str]:
    return {pair._1(): pair._2() for pair in _items(metadata.configuration())}


def _shape(schema: StructType) -> list[tuple[str, str]]:
    """Names and types, not nullability: Delta stores every written column as nullable."""
    return [(f.name.lower(), f.dataType.simpleString()) for f in schema.fields]


def _metadata(schema: StructType, partition: str, properties: dict[str, str]) -> dict:
    nullable = StructType(
        [f.__class__(f.name, f.dataType, True, f.metadata) for f in schema.fields]
    )
    return {
        "id": str(uuid.uuid4()),
        "format": {"provider": "parquet", "options": {}},
        "schemaString": nullable.json(),
        "partitionColumns": [partition],
        "configuration": properties,
        "createdTime": int(time.time() * 1000),
    }


def _action(spark: SparkSession, action: dict):
    actions = getattr(spark._jvm.org.apache.spark.sql.delta.actions, "Action$")
    return actions.__getattr__("MODULE$").fromJson(json.dumps(action))


def _write_operation(spark: SparkSession, partition: str, predicate: str):
    """Delta's ``WRITE`` operation as a ``replaceWhere`` overwrite records it; its constructor
    grew optional arguments across Delta Lake 4.x, all None here past the first three."""
    jvm = spark._jvm
    name = "org.apache.spark.sql.delta.DeltaOperations$Write"
    loader = jvm.java.lang.Thread.currentThread().getContextClassLoader()
    arguments = loader.loadClass(name).getConstructors()[0].getParameterCount()
    mode = jvm.org.apache.spark.sql.SaveMode.Overwrite
    first = [mode, jvm.scala.Some(_seq(spark, [partition])), jvm.scala.Some(predicate)]
    return jvm.org.apache.spark.sql.delta.DeltaOperations.Write(
        *first, *[_none(spark)] * (arguments - len(first))
    )


def _items(collection) -> list:
    """A Scala collection's items (a map's as key/value pairs)."""
    found, entries = [], collection.iterator()
    while entries.hasNext():
        found.append(entries.next())
    return found


def _seq(spark: SparkSession, items: list):
    values = spark._jvm.java.util.ArrayList()
    for item in items:
        values.add(item)
    return spark._jvm.scala.jdk.javaapi.CollectionConverters.asScala(values).toSeq()


def _none(spark: SparkSession):
    return getattr(spark._jvm.scala, "None$").__getattr__("MODULE$")


def _quoted(name: str) -> str:
    """``name`` as SQL reads it: plain where it is a simple identifier, else in backquotes."""
    if name.isidentifier() and name.isascii():
        return name
    return "`" + name.replace("`", "``") + "`"
