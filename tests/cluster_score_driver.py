"""Driver program for tests/test_cluster_faults.py: the nightly job on a standalone cluster.

    python tests/cluster_score_driver.py SPEC.json

SPEC holds ``master``, ``run_date``, ``config`` (a ScoreConfig as a dict), ``phases`` (a list of
``{"name", "output"}``) and ``signal_dir``. For each phase the driver writes
``signal_dir/<name>.started``, runs ``run_score`` into that phase's output, then writes
``signal_dir/<name>.json`` with the run summary and the task failures Spark saw (and retried)
during the phase. One driver serves every phase so the executors start once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _stage_failures(sc, seen: set[int]) -> dict:
    tracker = sc.statusTracker()
    failed = attempts = 0
    for job_id in tracker.getJobIdsForGroup(None):
        info = tracker.getJobInfo(job_id)
        for stage_id in info.stageIds if info else []:
            if stage_id in seen:
                continue
            stage = tracker.getStageInfo(stage_id)
            if stage is None:
                continue
            seen.add(stage_id)
            failed += stage.numFailedTasks
            attempts = max(attempts, stage.currentAttemptId)
    return {"failed_tasks": failed, "max_stage_attempt": attempts}


def main(spec_path: str) -> None:
    from leanscore.jobs.runtime.spark import get_spark
    from leanscore.jobs.score import ScoreConfig, run_score

    spec = json.loads(Path(spec_path).read_text())
    signals = Path(spec["signal_dir"])
    spark = get_spark(
        "leanscore-reliability",
        master=spec["master"],
        conf={
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.executor.memory": "700m",
            "spark.executor.cores": "1",
            "spark.cores.max": "2",
            "spark.task.maxFailures": "4",
            # One forked Python worker per task: any forked worker seen is running a task.
            "spark.python.worker.reuse": "false",
            "spark.sql.files.maxPartitionBytes": str(spec.get("max_partition_bytes", 1 << 20)),
            "spark.sql.shuffle.partitions": "2",
        },
    )
    sc = spark.sparkContext
    seen: set[int] = set()
    _stage_failures(sc, seen)
    for phase in spec["phases"]:
        config = ScoreConfig.model_validate(
            {**spec["config"], "output": {"path": phase["output"], "format": "delta"}}
        )
        (signals / f"{phase['name']}.started").write_text("")
        summary = run_score(spark, config, spec["run_date"])
        executors = sc._jsc.sc().getExecutorMemoryStatus().size() - 1  # minus the driver
        result = {"summary": summary, "executors": executors, **_stage_failures(sc, seen)}
        (signals / f"{phase['name']}.json").write_text(json.dumps(result, default=str))
    spark.stop()


if __name__ == "__main__":
    main(sys.argv[1])
