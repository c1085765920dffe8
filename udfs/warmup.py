"""Spark's Python workers started while the driver is still planning, not when scoring begins.

A nightly job's first scoring tasks otherwise find no Python worker: each one is forked, then
imports pyarrow, numpy, pandas, onnxruntime and leanscore's scoring modules before it scores a
row, while the driver, which spent the seconds before reading the Delta log and planning the
scan, left those cores idle. Spark keeps its Python workers for the next task
(``spark.python.worker.reuse``, on by default), so one tiny ``mapInArrow`` job per core, run in
a background thread as soon as the session exists, leaves workers that already hold those
modules for the scoring tasks (the scoring runs ``mapInArrow`` too, which hands tasks the same
kind of worker). It changes no result: a failed warm-up is logged and the job goes on cold.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pyarrow as pa
from leanscore.udfs.distribution import is_connect
from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


def _import_scoring_modules(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    import leanscore.udfs.api  # noqa: F401  (the scoring path: onnxruntime, kernel)
    import pandas  # noqa: F401  (pyarrow imports it on a batch's first conversion to numpy)

    yield from batches


def start_warming_workers(spark: SparkSession) -> threading.Thread | None:
    """Start one Python worker per task slot in the background; None where Spark has no
    SparkContext to schedule it with (Spark Connect starts its workers its own way)."""
    if is_connect(spark) or spark.conf.get("spark.python.worker.reuse", "true") == "false":
        return None
    slots = int(spark.sparkContext.defaultParallelism)

    def warm() -> None:
        try:
            spark.range(slots, numPartitions=slots).mapInArrow(
                _import_scoring_modules, "id long"
            ).collect()
        except Exception as err:  # only a head start: the scoring starts its own workers
            log.info("warming Python workers failed (%s); scoring starts them cold", err)

    thread = threading.Thread(target=warm, name="leanscore-warm-python-workers", daemon=True)
    thread.start()
    return thread
