"""A scan task that dies is retried by Spark and rereads only its own slices: the plan's slices
travel as the rows of a small DataFrame, one task each, not in every task's closure.

Retries need ``spark.task.maxFailures`` > 1, which a local master sets only when it starts
(``local[2,2]``), so the Spark side runs in a child process (this file, run as a script)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.spark

ROOT = Path(__file__).resolve().parents[1]


def test_killed_task_rereads_only_its_slices_and_output_is_exact(tmp_path):
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    env.pop("SPARK_REMOTE", None)
    proc = subprocess.run(
        [sys.executable, __file__, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    plan = [[tuple(s) for s in task] for task in result["plan"]]
    attempts = [(a["task"], a["attempt"], [tuple(s) for s in a["slices"]]) for a in result["log"]]
    assert len(plan) >= 4
    assert sorted((t, n) for t, n, _ in attempts) == sorted(
        [(t, 0) for t in range(len(plan))] + [(0, 1)]
    )  # every task once, the killed one twice
    for task, _, slices in attempts:
        assert slices == plan[task]  # each attempt read its own slices, and only those
    assert result["row_ids"] == list(range(result["rows"]))  # exact: no row lost or doubled


def _retry_main(workdir: str) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from leanscore.jobs.runtime.spark import get_spark
    from leanscore.udfs.engines.scan import arrow_types, plan_reader, plan_scan, slice_frame
    from pyspark import TaskContext

    spark = get_spark("leanscore-retry", master="local[2,2]")
    table, rows = Path(workdir) / "t", 2000
    table.mkdir()
    ids = np.arange(rows, dtype=np.int64)
    values = pa.array(list(np.ones((rows, 8), np.float32)), pa.list_(pa.float32()))
    pq.write_table(pa.table({"row_id": ids, "x": values}), table / "p.parquet", row_group_size=50)
    size = (table / "p.parquet").stat().st_size
    plan = plan_scan(
        spark, str(table), format="parquet", columns=["row_id"], max_task_bytes=size // 4
    )
    read = plan_reader(plan, arrow_types(plan, ["row_id"], "UTC"), 64)
    log, marker = Path(workdir) / "attempts.jsonl", Path(workdir) / "killed-once"

    def read_and_die_once(descriptors):
        descriptors = list(descriptors)
        context = TaskContext.get()
        for batch in descriptors:
            for task, slices in zip(
                batch.column("task").to_pylist(), batch.column("slices").to_pylist(), strict=True
            ):
                entry = {
                    "task": task,
                    "attempt": context.attemptNumber(),
                    "slices": [[s["uri"], s["start"], s["length"]] for s in slices],
                }
                with log.open("a") as out:
                    out.write(json.dumps(entry) + "\n")
        batches = list(read(iter(descriptors)))
        if descriptors[0].column("task")[0].as_py() == 0 and not marker.exists():
            marker.touch()
            raise RuntimeError("this task dies on its first attempt, after reading its slices")
        yield from batches

    out = slice_frame(spark, plan).mapInArrow(read_and_die_once, "row_id long")
    result = {
        "plan": [[list(s) for s in task] for task in plan.tasks],
        "row_ids": sorted(r.row_id for r in out.collect()),
        "rows": rows,
        "log": [json.loads(line) for line in log.read_text().splitlines()],
    }
    (Path(workdir) / "result.json").write_text(json.dumps(result))
    spark.stop()


if __name__ == "__main__":
    _retry_main(sys.argv[1])
