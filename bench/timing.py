"""Where a variant's time goes, measured inside its tasks.

Each timed path adds the seconds its Python workers spend, per task, to Spark accumulators
(they travel back with the task results, so the driver has the sums when the query returns):

- ``read_s``: waiting for the next input batch. For the scan engine that is pyarrow reading and
  decoding the Parquet slice in the task; over Spark's reader it is the time the Python worker
  waits for the JVM to read, decode and convert the rows to Arrow. ``predict_batch_udf`` hides
  its input iterator, so its reading is taken from a read-only pass of the same columns through
  Spark's reader into a Python task (the same in-task clock), per row, capped at what its tasks
  spent between model calls.
- ``model_s``: inside the model call (ONNX Runtime's ``session.run`` or the PyTorch forward).
- ``python_s``: the task's whole Python timeline (first input to last output); what is neither
  reading nor model is converting the batch to a matrix and the outputs back, and writing them.

Spark's own overhead is the rest of the core-seconds the run had (cores x wall): scheduling,
task start, the JVM side of the output, idle cores at the end. ``breakdown`` turns the sums
into seconds and shares that add up to the variant's core-seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

PARTS = ("read_s", "model_s", "convert_s", "spark_s")
PART_LABELS = {
    "read_s": "reading and decoding",
    "model_s": "model",
    "convert_s": "converting and writing",
    "spark_s": "Spark's own overhead (the rest)",
}


@dataclass(frozen=True)
class TaskClock:
    """Accumulators a variant's tasks add their seconds to; pickled into the task closures."""

    read: object
    model: object
    python: object
    between: object  # predict_batch_udf only: a task's time between two model calls

    @classmethod
    def create(cls, spark) -> TaskClock | None:
        """None on Spark Connect (no accumulators): the breakdown is then left out."""
        from leanscore.udfs.distribution import is_connect

        if is_connect(spark):
            return None
        sc = spark.sparkContext
        return cls(*(sc.accumulator(0.0) for _ in range(4)))

    def values(self) -> dict[str, float]:
        return {
            "read_s": self.read.value,
            "model_s": self.model.value,
            "python_s": self.python.value,
            "between_s": self.between.value,
        }


def noop_seconds(df) -> float:
    """Wall seconds to run ``df`` into Spark's noop sink: every row computed, nothing written
    (how every bench times a query without timing a sink)."""
    start = time.perf_counter()
    df.write.format("noop").mode("overwrite").save()
    return time.perf_counter() - start


def interleaved_noop_seconds(frames: dict, rounds: int) -> dict[object, list[float]]:
    """Each frame once untimed (workers, sessions, first-run code paths warm), then ``rounds``
    rounds that run every frame into the noop sink, in an order rotated by one per round so no
    frame always runs first; ``{key: wall seconds per round}``."""
    for frame in frames.values():
        noop_seconds(frame)
    keys = list(frames)
    walls: dict[object, list[float]] = {key: [] for key in keys}
    for r in range(rounds):
        shift = r % len(keys)
        for key in keys[shift:] + keys[:shift]:
            walls[key].append(noop_seconds(frames[key]))
    return walls


def since(clock: TaskClock | None, before: dict[str, float] | None) -> dict[str, float] | None:
    """The seconds the tasks added since ``before`` (a ``values()`` snapshot)."""
    if clock is None or before is None:
        return None
    now = clock.values()
    return {k: now[k] - before[k] for k in now}


def timed_batches(
    batches: Iterator, score: Callable, clock: TaskClock, *, task_start: float
) -> Iterator:
    """``score`` over ``batches``, adding to ``clock`` the time spent waiting for each input
    batch and the whole Python timeline since ``task_start``."""
    read = 0.0
    it = iter(batches)
    while True:
        t0 = time.perf_counter()
        rb = next(it, None)
        read += time.perf_counter() - t0
        if rb is None:
            break
        yield score(rb)
    clock.read.add(read)
    clock.python.add(time.perf_counter() - task_start)


def _this_task(accumulator):
    """The current task's copy of ``accumulator``. predict_batch_udf builds its predict
    function once per Python worker and reuses it in later tasks, so the accumulator in its
    closure is an earlier task's copy, whose additions are never sent: a worker reports only
    the copies deserialized in the running task (PySpark's accumulator registry, by id)."""
    from pyspark.accumulators import _accumulatorRegistry

    return _accumulatorRegistry.get(accumulator.aid, accumulator)


def timed_predict_fn(make_predict_fn: Callable, clock: TaskClock) -> Callable:
    """A ``predict_batch_udf`` factory whose predict adds its model time to ``clock``, and the
    time between two calls of the same task (reading, converting, writing) to ``between``."""

    def make():
        from pyspark import TaskContext

        predict = make_predict_fn()
        last: dict[str, object] = {"task": None, "end": None}

        def timed(x):
            start = time.perf_counter()
            ctx = TaskContext.get()
            task = ctx.taskAttemptId() if ctx is not None else None
            if last["task"] == task and last["end"] is not None:
                _this_task(clock.between).add(start - last["end"])
            out = predict(x)
            end = time.perf_counter()
            _this_task(clock.model).add(end - start)
            last["task"], last["end"] = task, end
            return out

        return timed

    return make


def breakdown(
    measured: dict[str, float] | None,
    *,
    wall_s: float,
    cores: int,
    rows: int,
    read_s_per_row: float | None = None,
) -> dict | None:
    """Seconds and shares of the run's core-seconds (cores x wall): reading, model,
    converting and writing, and Spark's overhead (the rest). ``read_s_per_row``: the reading
    cost per row from a read-only pass, for paths whose input wait is not measurable
    (``predict_batch_udf``); converting is then what its tasks spent between model calls
    beyond that reading (a task's first batch has no gap before it: its share goes to Spark)."""
    if measured is None:
        return None
    total = cores * wall_s
    model = max(0.0, measured["model_s"])
    # predict_batch_udf's timeline: its model calls and the gaps between them
    python = max(0.0, measured["python_s"] or model + measured.get("between_s", 0.0))
    read = max(0.0, measured["read_s"])
    how = "in-task clock"
    if read_s_per_row is not None:  # predict_batch_udf: its input iterator is not reachable
        read = min(read_s_per_row * rows, max(0.0, total - model))
        # the gaps between its model calls hold the reading of all but each task's first batch
        convert = max(0.0, measured.get("between_s", 0.0) - read)
        how = "model: in-task clock; reading: the read-only pass into Python, per row"
    else:
        convert = max(0.0, python - read - model)
    spark = total - read - model - convert
    parts = {"read_s": read, "model_s": model, "convert_s": convert, "spark_s": max(0.0, spark)}
    return {
        "core_s": round(total, 4),
        **{k: round(v, 4) for k, v in parts.items()},
        "shares": {k: round(v / total, 4) if total > 0 else 0.0 for k, v in parts.items()},
        # more measured than the cores had: the clocks disagree with the wall (the reports
        # print it, and the shares then add up to more than 100%)
        "over_measured_s": round(max(0.0, -spark), 4),
        "over_measured_share": round(max(0.0, -spark) / total, 4) if total > 0 else 0.0,
        "how": how,
    }
