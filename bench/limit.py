"""The nightly job's limit: what scoring and writing a table would take if each part cost only
itself, measured on the job's own table, model, output rows and cores.

A job's score+write phase reads the input, runs the model and writes the output, all in one
pass. When it takes much longer than those three parts alone, the time goes to what joins
them (row formats, conversions, task layout), and that is where the next cut is. Each part is
measured here in one warm Spark session, on the job's table, model and output rows:

- read alone: the columns the job reads (features, keys, passthrough), by the job's own
  reader into Spark's noop sink: where the job reads with the scan engine, the scan's tasks
  reading their slices with pyarrow and handing Spark only row counts; else Spark's reader;
- model alone: ONNX Runtime on rows already in memory, one session per core with the job's
  session settings (one intra-op thread per task), in the job's batches, all cores at once;
  measured on up to ``model_rows`` rows of the table and scaled to the whole table;
- write alone: the job's output rows (``score_frame``: keys, passthrough, outputs, lineage)
  held in memory first, then written into a new Delta table as the job writes its run date's
  partition, with the same file statistics property, by the job's writer. Where Spark's writer
  writes the job's output, Spark's writer from rows persisted in Spark's memory. Where the
  job's scoring tasks write it (``leanscore.jobs.task_write``), pyarrow in as many tasks as the
  job's scan has, each writing rows it holds as Arrow (uncompressed Arrow files in the page
  cache, memory-mapped: nothing decoded, nothing crosses from the JVM), the lineage added as
  constants, then one Delta commit.

Each is a warm-up then the median of ``rounds`` runs. The sum is a reference, not a strict
floor: in the job the parts overlap in time, so it may come in under the sum, and the job runs
in a cold process where these run warm.
"""

from __future__ import annotations

import datetime as dt
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
from leanscore.bench.paths import feature_matrix_column, input_matrix
from leanscore.bench.timing import noop_seconds
from leanscore.compression.mlflow_registry import load_artifact
from leanscore.jobs import task_write
from leanscore.jobs.output import RUN_DATE_COLUMN, TableRef, statistics_property, write_partition
from leanscore.jobs.score import (
    SCORE_JOB,
    kept_columns,
    lineage_columns,
    read_input,
    scans_whole_table,
    score_frame,
    statistics_columns,
)
from pyspark import StorageLevel
from pyspark.sql import SparkSession


def median_seconds(action: Callable[[], object], rounds: int) -> tuple[float, list[float]]:
    """A warm-up run of ``action``, then the median wall time of ``rounds`` more (and all)."""
    action()
    walls = []
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        walls.append(time.perf_counter() - start)
    return statistics.median(walls), walls


def model_alone_s(
    model_bytes: bytes,
    session_options,
    matrix: np.ndarray,
    *,
    batch_size: int,
    cores: int,
    rounds: int,
) -> list[float]:
    """Seconds, for each of ``rounds`` runs, for ``cores`` ONNX Runtime sessions, one per thread
    as one per Python worker in the job, to run every row of ``matrix`` in batches of
    ``batch_size``, each its share of the rows (ONNX Runtime releases the GIL while it
    computes, so the threads run side by side). The sessions are built once."""
    import onnxruntime as ort

    sessions = [
        ort.InferenceSession(model_bytes, session_options, providers=["CPUExecutionProvider"])
        for _ in range(cores)
    ]
    name = sessions[0].get_inputs()[0].name
    shares = np.array_split(matrix, cores)

    def run(i: int) -> None:
        rows = shares[i]
        for start in range(0, len(rows), batch_size):
            sessions[i].run(None, {name: rows[start : start + batch_size]})

    walls = []
    with ThreadPoolExecutor(cores) as pool:
        for i in range(cores):  # a warm-up batch each: allocations, first-run kernels
            sessions[i].run(None, {name: shares[i][:batch_size]})
        for _ in range(rounds):
            start = time.perf_counter()
            list(pool.map(run, range(cores)))
            walls.append(time.perf_counter() - start)
    return walls


def arrow_slices(frame, directory: Path, slices: int) -> Callable[[int], Iterator[pa.RecordBatch]]:
    """Hold ``frame``'s rows as uncompressed Arrow files under ``directory``, in their order,
    shared out to ``slices`` tasks in runs of consecutive files; the function giving task
    ``i``'s batches, memory-mapped (from the page cache, nothing decoded): a task's rows in
    memory, as the job's tasks hold theirs once scored."""
    import pyspark

    directory.mkdir(parents=True, exist_ok=True)
    folder = str(directory)

    def hold(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        index = pyspark.TaskContext.get().partitionId()
        path, writer = f"{folder}/part-{index:05d}.arrow", None
        for batch in batches:
            if writer is None:
                writer = pa.ipc.new_file(path, batch.schema)
            writer.write_batch(batch)
        if writer is not None:
            writer.close()
            yield pa.RecordBatch.from_pydict({"index": [index], "path": [path]})

    held = frame.mapInArrow(hold, "index long, path string").collect()
    paths = [row["path"] for row in sorted(held, key=lambda row: row["index"])]
    runs = [list(run) for run in np.array_split(np.array(paths, dtype=object), slices)]

    def batches(task: int) -> Iterator[pa.RecordBatch]:
        for path in runs[task]:
            # not closed here: the batches point into the mapping, which lives while they do
            reader = pa.ipc.open_file(pa.memory_map(path))
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)

    return batches


def scan_read(spark: SparkSession, config, columns: list[str]):
    """Where the job reads its input with the scan engine, a frame of the scan's tasks reading
    ``columns`` with pyarrow and handing Spark only each batch's row count (the job hands it
    only the scored rows, or none where its tasks write): (frame, how it reads); else
    (None, None)."""
    from leanscore.udfs.engines import may_read_whole_tables
    from leanscore.udfs.engines.scan import (
        ScanUnsupported,
        arrow_types,
        plan_reader,
        plan_scan,
        slice_frame,
    )

    if not (may_read_whole_tables(config.engine) and scans_whole_table(config.input)):
        return None, None
    try:
        plan = plan_scan(spark, config.input.path, format=config.input.format, columns=columns)
    except ScanUnsupported:
        return None, None
    timezone = spark.conf.get("spark.sql.session.timeZone")
    read = plan_reader(plan, arrow_types(plan, columns, timezone), config.arrow_batch_rows)

    def counts(descriptors):
        for batch in read(descriptors):
            yield pa.RecordBatch.from_pydict({"rows": [batch.num_rows]})

    return slice_frame(spark, plan).mapInArrow(counts, "rows long"), "pyarrow in the scan's tasks"


def measure_limit(
    spark: SparkSession,
    config,
    run_date: dt.date,
    *,
    cores: int,
    rounds: int = 3,
    model_rows: int = 200_000,
    scratch: str | Path | None = None,
) -> dict:
    """Read, model and write alone for the ``leanscore score`` job ``config`` (a
    ``ScoreConfig``) on ``cores`` task slots; seconds each (medians), their sum, and how."""
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(config.arrow_batch_rows))
    artifact = load_artifact(config.artifact)
    source = read_input(spark, config.input)
    keep = kept_columns(source, config)
    features, _ = feature_matrix_column(artifact)
    rows = source.count()

    read, reader = scan_read(spark, config, [*features, *keep])
    if read is None:
        read, reader = source.select(*dict.fromkeys([*features, *keep])), "Spark's reader"
    read_s, read_all = median_seconds(lambda: noop_seconds(read), rounds)

    matrix = np.ascontiguousarray(input_matrix(source, artifact, min(rows, model_rows)))
    options = config.scoring_options(keep).session_config(spark).session_options()
    model_bytes = artifact.read_model_bytes()
    model_all = [
        wall * rows / len(matrix)
        for wall in model_alone_s(
            model_bytes, options, matrix, batch_size=config.batch_size, cores=cores, rounds=rounds
        )
    ]
    model_s = statistics.median(model_all)
    del matrix

    scored, _ = score_frame(source, config, artifact, run_date)
    output_rows = scored.persist(StorageLevel.MEMORY_AND_DISK)
    written = output_rows.count()
    properties = statistics_property(
        output_rows.schema, statistics_columns(output_rows.columns, config)
    )
    root = Path(tempfile.mkdtemp(prefix="leanscore-limit-", dir=scratch))
    tables = iter(range(rounds + 1))  # a table of its own for each write: none finds another's

    tasks_write = config.writer == "auto" and (
        task_write.unavailable(
            spark, config, shadowed=False, whole_input=scans_whole_table(config.input)
        )
        is None
    )
    constants = lineage_columns(output_rows)
    first = output_rows.select(*constants).first()
    values = {
        c: pa.scalar(first[c], pa.timestamp("us", tz="UTC") if c == "scored_at" else pa.string())
        for c in constants
    }
    rows_alone = output_rows.drop(*constants, RUN_DATE_COLUMN)
    if tasks_write:  # the rows as the job's tasks hold them: Arrow in the Python workers
        slices = read.rdd.getNumPartitions()  # the scan's tasks, as many as the job's
        held = arrow_slices(rows_alone, root / "rows", slices)

    def write() -> None:
        path = str(root / f"output-{next(tables)}")
        if tasks_write:  # as the job's tasks write: pyarrow files, one Delta commit
            task_write.write_slices(
                spark,
                held,
                slices,
                rows_alone.schema,
                path,
                run_date,
                constants=values,
                statistics_columns=statistics_columns(output_rows.columns, config),
                properties=properties,
                error_column=SCORE_JOB.error_column,
                key_columns=config.key_columns,
            )
            return
        write_partition(
            output_rows,
            TableRef(path=path, format="delta"),
            run_date,
            new_table_properties=properties,
            constant_columns=constants,
        )

    try:
        write_s, write_all = median_seconds(write, rounds)
    finally:
        output_rows.unpersist()
        shutil.rmtree(root, ignore_errors=True)
    return {
        "rows": rows,
        "output_rows": written,
        "read_s": read_s,
        "model_s": model_s,
        "write_s": write_s,
        "limit_s": read_s + model_s + write_s,
        "all_s": {"read": read_all, "model": model_all, "write": write_all},
        "model_rows": min(rows, model_rows),
        "cores": cores,
        "how": (
            f"each part alone in one warm Spark session, a warm-up then the median of {rounds}: "
            f"reading the {len(features) + len(keep)} columns the job reads, by {reader}, "
            "into Spark's noop sink; "
            f"ONNX Runtime on {min(rows, model_rows):,} rows in memory, {cores} sessions side "
            f"by side in batches of {config.batch_size}, scaled to the table's rows; the job's "
            "output rows written into a new Delta table's run date partition with the job's "
            "statistics property, by "
            + (
                f"pyarrow in {slices} tasks from Arrow files in the page cache (memory-mapped, "
                "no decoding), and one Delta commit, as the job's tasks write them"
                if tasks_write
                else "Spark's writer from rows persisted in memory, as the job writes them"
            )
        ),
    }
