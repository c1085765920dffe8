"""The nightly job on a real standalone cluster (a master and two workers on loopback, each
worker with its own executor JVM and Python workers), with faults injected mid-job.

One driver process (tests/cluster_score_driver.py) runs three phases against the cluster, each
into its own Delta table for the same run date:

1. fault-free;
2. one Python worker (a ``pyspark.daemon`` child running a task) is SIGKILLed mid-stage;
3. one worker JVM is SIGKILLed mid-stage (its executor loses the worker and exits).

Spark retries the lost tasks (spark.task.maxFailures=4). Every phase must end with exactly the
fault-free rows (count, distinct keys and a hash over keys and predictions), which must in turn
be exactly what local mode writes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CLUSTER_WORKERS
from leanscore.jobs.score import ScoreConfig, run_score
from pyspark.testing import assertDataFrameEqual
from reliability_support import ROOT, checksum, predictions
from standalone_cluster import ensure_workers, kill_worker_jvm, python_workers, stop_pids

RUN_DATE = "2026-04-01"
ROWS = 24_000
FILES = 8


@pytest.fixture(scope="module")
def scoring_input(spark, digits, tmp_path_factory):
    """ROWS real digit rows (the held-out set, tiled) in FILES Parquet files of a Delta table."""
    _, held_out = digits
    reps = -(-ROWS // len(held_out.features))
    feats = np.tile(held_out.features, (reps, 1))[:ROWS].astype(np.float32)
    labels = np.tile(held_out.labels, reps)[:ROWS].astype(np.int32)
    pdf = pd.DataFrame(
        {"row_id": np.arange(ROWS, dtype=np.int64), "label": labels, "features": list(feats)}
    )
    path = str(tmp_path_factory.mktemp("cluster-input") / "features")
    df = spark.createDataFrame(pdf, "row_id long, label int, features array<float>")
    df.repartition(FILES).write.format("delta").save(path)
    return path


def _config(artifact, src: str, out: str) -> dict:
    return {
        "artifact": str(artifact.path),
        "input": {"path": src, "format": "delta"},
        "output": {"path": out, "format": "delta"},
        "key_columns": ["row_id"],
        "passthrough_columns": ["label"],
        # Small batches make each task take a few seconds, so a fault lands mid-stage.
        "batch_size": 8,
        "arrow_batch_rows": 64,
    }


def _wait_for(what: str, check, proc, timeout_s: float = 240.0, every: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc.poll() is not None:
            raise AssertionError(f"the driver exited (rc {proc.returncode}) before {what}")
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def cluster_runs(spark, artifact, scoring_input, standalone_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster-runs")
    signals = root / "signals"
    signals.mkdir()
    phases = [
        {"name": name, "output": str(root / f"out-{name}")}
        for name in ("clean", "python_kill", "worker_kill")
    ]
    spec = {
        "master": None,
        "run_date": RUN_DATE,
        "config": _config(artifact, scoring_input, "unused"),
        "phases": phases,
        "signal_dir": str(signals),
    }
    cluster = standalone_cluster  # the session's: two 1-core workers (conftest)
    ensure_workers(cluster, CLUSTER_WORKERS)
    injected: dict = {}
    orphans: list[int] = []
    log = (root / "driver.log").open("w")
    try:
        spec["master"] = cluster.master_url
        (root / "spec.json").write_text(json.dumps(spec))
        proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "tests" / "cluster_score_driver.py"),
                str(root / "spec.json"),
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            # Phase 2: SIGKILL exactly one Python worker while it runs a task.
            _wait_for("python_kill to start", (signals / "python_kill.started").exists, proc)
            by_worker = _wait_for("a Python worker", lambda: python_workers(cluster), proc)
            victim = next(iter(by_worker.values()))[0]
            cmd = Path(f"/proc/{victim}/cmdline").read_bytes()
            os.kill(victim, signal.SIGKILL)
            injected["python_worker"] = {"pid": victim, "cmdline": cmd.decode(errors="replace")}

            # Phase 3: SIGKILL the worker JVM whose executor is running a task.
            _wait_for("worker_kill to start", (signals / "worker_kill.started").exists, proc)
            by_worker = _wait_for("a task on a worker", lambda: python_workers(cluster), proc)
            worker = next(iter(by_worker))
            orphans = kill_worker_jvm(cluster, worker)
            injected["worker_jvm"] = {"pid": worker, "alive_workers_before": 2}
            proc.wait(timeout=420)
        except AssertionError as err:  # say why: the driver's and the cluster's own logs
            driver_log = (root / "driver.log").read_text(errors="replace")
            raise AssertionError(f"{err}\n{driver_log[-6000:]}\n{cluster.logs()}") from None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        log.close()
        # The killed worker's executor and its Python daemon; the next test that uses the
        # cluster starts a worker in its place.
        stop_pids(orphans)
    driver_log = (root / "driver.log").read_text(errors="replace")
    assert proc.returncode == 0, f"driver failed:\n{driver_log[-6000:]}\n{cluster.logs()}"
    results = {p["name"]: json.loads((signals / f"{p['name']}.json").read_text()) for p in phases}
    return {"phases": phases, "results": results, "injected": injected, "log": driver_log}


def test_cluster_result_equals_local_mode(spark, artifact, scoring_input, cluster_runs, tmp_path):
    local_out = str(tmp_path / "local")
    config = ScoreConfig.model_validate(_config(artifact, scoring_input, local_out))
    summary = run_score(spark, config, RUN_DATE)
    assert summary["rows_out"] == ROWS

    clean = cluster_runs["results"]["clean"]
    assert clean["executors"] == 2, "the cluster run should have had one executor per worker"
    assert clean["summary"]["rows_in"] == clean["summary"]["rows_out"] == ROWS
    cluster_out = cluster_runs["phases"][0]["output"]
    cols = ["row_id", "label", "prediction", "probability", "model_sha256"]
    assertDataFrameEqual(
        predictions(spark, cluster_out, RUN_DATE).select(*cols),
        predictions(spark, local_out, RUN_DATE).select(*cols),
    )
    assert checksum(spark, cluster_out, RUN_DATE) == checksum(spark, local_out, RUN_DATE)


@pytest.mark.parametrize("phase", ["python_kill", "worker_kill"])
def test_fault_mid_job_loses_and_duplicates_nothing(spark, cluster_runs, phase):
    result = cluster_runs["results"][phase]
    assert result["failed_tasks"] >= 1, (
        f"the {phase} fault did not fail any task, so it proved nothing: {result}"
    )
    clean_out = cluster_runs["phases"][0]["output"]
    out = next(p["output"] for p in cluster_runs["phases"] if p["name"] == phase)
    expected = checksum(spark, clean_out, RUN_DATE)
    got = checksum(spark, out, RUN_DATE)
    assert got == expected, f"{phase}: {got} != fault-free {expected}"
    assert got["rows"] == got["keys"] == ROWS  # nothing lost, nothing duplicated
    assert got["key_sum"] == ROWS * (ROWS - 1) // 2
    assert result["summary"]["rows_in"] == result["summary"]["rows_out"] == ROWS
    assertDataFrameEqual(
        predictions(spark, out, RUN_DATE).drop("run_date"),
        predictions(spark, clean_out, RUN_DATE).drop("run_date"),
    )
    # One Delta commit per run: the retried tasks did not append a second write.
    from delta.tables import DeltaTable

    history = DeltaTable.forPath(spark, out).history().collect()
    assert [h["operation"] for h in history] == ["WRITE"]


def test_faults_were_injected_as_described(cluster_runs):
    injected = cluster_runs["injected"]
    assert "pyspark.daemon" in injected["python_worker"]["cmdline"]
    assert injected["worker_jvm"]["pid"] > 0
    # After the worker JVM died, its executor was lost and the job finished on the other one.
    assert cluster_runs["results"]["worker_kill"]["executors"] == 1
