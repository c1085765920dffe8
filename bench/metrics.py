"""What a timed run cost in CPU, and the machine it ran on.

Two CPU figures per run, because neither alone is the whole story:

- ``executor_cpu_s``: Spark's task metric ``executorCpuTime`` summed over the run's stages,
  read from the driver's live status store (it exists with ``spark.ui.enabled=false``). It
  counts the JVM task threads only: time spent inside Python UDF workers is not in it.
- ``process_cpu_s``: on a local master, the CPU time of this driver's whole process tree (the
  JVM, the Python daemon and its UDF workers, finished workers included through their parent's
  ``cutime``), from ``/proc``. That is the CPU the scoring really burnt. Not available on a
  cluster or off Linux (``None``).
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from leanscore.udfs.distribution import is_connect
from pyspark.sql import SparkSession

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, utime + stime + cutime + cstime in seconds) of ``pid``."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    # after the command: state ppid ... utime(11) stime(12) cutime(13) cstime(14), 0-based
    return int(fields[1]), sum(int(f) for f in fields[11:15]) / _TICK


def process_tree_cpu_s(root: int | None = None) -> float | None:
    """CPU seconds of ``root`` (default: this process) and all its live descendants."""
    root = root or os.getpid()
    if not Path("/proc").is_dir():
        return None
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None:
                stats[int(entry)] = stat
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
        todo.extend(children.get(pid, []))
    return total


@dataclass
class CpuMark:
    stage_ids: set[int]
    process_cpu_s: float | None


class CpuMeter:
    """``mark()`` before a run, ``since(mark)`` after it: the run's CPU seconds."""

    def __init__(self, spark: SparkSession):
        self.spark = spark
        self.local = False
        self._store = None
        if not is_connect(spark):
            sc = spark.sparkContext
            self.local = sc.master.startswith("local")
            try:
                self._store = sc._jsc.sc().statusStore()
            except Exception:  # a gateway without the status store: report None, not a guess
                self._store = None

    def _drain(self) -> None:
        # The status store is fed by the listener bus, asynchronously: let it catch up.
        try:
            self.spark.sparkContext._jsc.sc().listenerBus().waitUntilEmpty()
        except Exception:
            time.sleep(0.5)

    def _stages(self) -> dict[int, tuple[float, int]]:
        """stage attempt -> (executor CPU seconds, input records), over the stored stages."""
        if self._store is None:
            return {}
        store = self._store
        # Scala default arguments are explicit over py4j: no status filter, no details.
        stages = store.stageList(
            None,
            getattr(store, "stageList$default$2")(),
            getattr(store, "stageList$default$3")(),
            getattr(store, "stageList$default$4")(),
            getattr(store, "stageList$default$5")(),
        )
        out = {}
        for i in range(stages.size()):
            s = stages.apply(i)
            out[int(s.stageId()) * 1000 + int(s.attemptId())] = (
                s.executorCpuTime() / 1e9,
                int(s.inputRecords()),
            )
        return out

    def mark(self) -> CpuMark:
        self._drain()
        return CpuMark(set(self._stages()), process_tree_cpu_s() if self.local else None)

    def since(self, mark: CpuMark) -> dict[str, float | None]:
        """CPU seconds since ``mark`` and the rows its stages read (task metrics)."""
        self._drain()
        stages = self._stages()
        new = [v for sid, v in stages.items() if sid not in mark.stage_ids]
        executor = sum(cpu for cpu, _ in new) if self._store is not None else None
        rows_read = sum(n for _, n in new) if self._store is not None else None
        process = None
        if mark.process_cpu_s is not None:
            now = process_tree_cpu_s()
            process = None if now is None else now - mark.process_cpu_s
        return {"executor_cpu_s": executor, "process_cpu_s": process, "rows_read": rows_read}


def cpu_info() -> dict:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
            if model and flags:
                break
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
    return {
        "cpu_model": model,
        "cpu_flags": {f: f in flags for f in wanted},
        "avx512_vnni": "avx512_vnni" in flags,
        "amx": "amx_int8" in flags or "amx_tile" in flags,
        "machine_cores": os.cpu_count(),
    }


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def source_commit() -> str | None:
    """The git commit of the leanscore source this run used (an editable checkout), with
    ``+dirty`` where the tree has uncommitted changes; None for an installed wheel."""
    import subprocess

    root = Path(__file__).resolve().parents[1]  # bench/metrics.py -> the checkout
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "") if head else None


def environment(spark: SparkSession, *, cores: int) -> dict:
    master = None if is_connect(spark) else spark.sparkContext.master
    return {
        **cpu_info(),
        "commit": source_commit(),
        "spark_cores": cores,
        "spark_master": master or "spark connect",
        "spark_version": spark.version,
        "task_cpus": spark.conf.get("spark.task.cpus", "1"),
        "arrow_batch_rows": spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch"),
        "python": platform.python_version(),
        "os": platform.platform(),
        "versions": {
            p: _version(p)
            for p in ("leanscore", "pyspark", "delta-spark", "onnxruntime", "onnx", "torch")
        },
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
