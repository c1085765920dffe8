"""A real Spark standalone cluster on loopback for tests: one master and N workers.

Started with the ``sbin/spark-daemon.sh`` that the pyspark wheel bundles (``SPARK_HOME`` is the
pyspark package folder), on free ports, with pid, log and work folders under a directory of the
caller's. Everything is stopped by the pids recorded at start, never by name.

    cluster = start_cluster(tmp_path, workers=1)
    ... spark-submit --master cluster.master_url ...
    stop_worker(cluster, cluster.worker_pids[0])   # fault injection: kill one worker
    ensure_workers(cluster, 1)                     # a fresh worker in its place
    stop_cluster(cluster)

The test session shares one cluster (conftest's ``standalone_cluster`` fixture): each test that
uses it first calls ``ensure_workers``, so a worker another test killed is replaced.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pyspark

SPARK_HOME = Path(pyspark.__file__).resolve().parent
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
HOST = "127.0.0.1"


@dataclass
class StandaloneCluster:
    master_url: str
    master_pid: int
    worker_pids: list[int]
    master_webui: str
    root: Path
    env: dict[str, str] = field(repr=False)
    cores_per_worker: int = 1
    worker_memory: str = "1g"
    # Each worker's RPC port by pid: how the master's JSON names the worker.
    worker_ports: dict[int, int] = field(default_factory=dict)
    workers_started: int = 0  # spark-daemon instance numbers used so far
    stopped: bool = False

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    def state(self) -> dict:
        """The master's JSON status (workers, active and completed applications)."""
        with urllib.request.urlopen(f"{self.master_webui}/json/", timeout=5) as resp:
            return json.load(resp)

    def alive_workers(self) -> int:
        return int(self.state().get("aliveworkers", 0))

    def alive_worker_ports(self) -> set[int]:
        return {w["port"] for w in self.state().get("workers", []) if w.get("state") == "ALIVE"}

    def logs(self) -> str:
        """Every daemon log, for a failing test's message."""
        return "\n".join(
            f"== {p.name}\n{p.read_text(errors='replace')[-4000:]}"
            for p in sorted(self.log_dir.glob("*.out"))
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _daemon_env(root: Path, python: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SPARK_REMOTE", None)
    env.update(
        {
            "SPARK_HOME": str(SPARK_HOME),
            "SPARK_PID_DIR": str(root / "pids"),
            "SPARK_LOG_DIR": str(root / "logs"),
            # A unique ident keeps pid files apart from any other cluster on this machine.
            "SPARK_IDENT_STRING": f"leanscore-{uuid.uuid4().hex[:8]}",
            "SPARK_LOCAL_IP": HOST,
            "SPARK_MASTER_HOST": HOST,
            "SPARK_DAEMON_MEMORY": "512m",
            # The executors' Python workers must run the project's interpreter.
            "PYSPARK_PYTHON": python,
        }
    )
    return env


def _daemon_command(cls: str, instance: int, args: list[str]) -> list[str]:
    return [str(SPARK_HOME / "sbin" / "spark-daemon.sh"), "start", cls, str(instance), *args]


def _pid_of(env: dict[str, str], cls: str, instance: int) -> int:
    pid_file = (
        Path(env["SPARK_PID_DIR"]) / f"spark-{env['SPARK_IDENT_STRING']}-{cls}-{instance}.pid"
    )
    return int(pid_file.read_text().strip())


def _start_daemon(env: dict[str, str], cls: str, instance: int, args: list[str]) -> int:
    subprocess.run(
        _daemon_command(cls, instance, args),
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    return _pid_of(env, cls, instance)


def start_cluster(
    root: str | Path,
    *,
    workers: int = 1,
    cores_per_worker: int = 1,
    worker_memory: str = "1g",
    python: str = sys.executable,
    timeout_s: float = 90.0,
) -> StandaloneCluster:
    """Start a master and ``workers`` workers; return once every worker has registered."""
    root = Path(root).resolve()
    for sub in ("pids", "logs", "work"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    env = _daemon_env(root, python)
    port, webui = free_port(), free_port()
    master_pid = _start_daemon(
        env, MASTER_CLASS, 1, ["--host", HOST, "--port", str(port), "--webui-port", str(webui)]
    )
    cluster = StandaloneCluster(
        master_url=f"spark://{HOST}:{port}",
        master_pid=master_pid,
        worker_pids=[],
        master_webui=f"http://{HOST}:{webui}",
        root=root,
        env=env,
        cores_per_worker=cores_per_worker,
        worker_memory=worker_memory,
    )
    try:
        # Workers start once the master answers: a worker that misses it retries only after
        # 5-15 s.
        _wait(lambda: _answers(cluster), timeout_s, "the master to answer", cluster)
        ensure_workers(cluster, workers, timeout_s=timeout_s)
    except BaseException:
        stop_cluster(cluster)
        raise
    return cluster


def ensure_workers(cluster: StandaloneCluster, workers: int, *, timeout_s: float = 90.0) -> None:
    """Start workers until ``workers`` of the cluster's own are running (one another test
    stopped or killed is replaced by a new one on new ports), and return once the master lists
    every one of them as alive."""
    if cluster.stopped:
        raise RuntimeError(f"the cluster of {cluster.master_url} was stopped")
    cluster.worker_pids[:] = [p for p in cluster.worker_pids if _alive(p)]
    missing = workers - len(cluster.worker_pids)
    # Every spark-daemon.sh call sleeps about 2.5 s and starts a launcher JVM before the
    # worker's own: the new workers start side by side.
    starts = []
    for _ in range(max(missing, 0)):
        cluster.workers_started += 1
        instance, port = cluster.workers_started, free_port()
        args = [
            "--host", HOST,
            "--port", str(port),
            "--webui-port", str(free_port()),
            "--cores", str(cluster.cores_per_worker),
            "--memory", cluster.worker_memory,
            "--work-dir", str(cluster.root / "work" / f"worker-{instance}"),
            cluster.master_url,
        ]  # fmt: skip
        proc = subprocess.Popen(
            _daemon_command(WORKER_CLASS, instance, args),
            env=cluster.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        starts.append((instance, port, proc))
    failures = []
    for instance, port, proc in starts:
        output, _ = proc.communicate(timeout=60)
        if proc.returncode != 0:
            failures.append(f"worker {instance} (rc {proc.returncode}): {output.decode()}")
            continue
        # Recorded before any error is raised, so that stop_cluster stops it.
        pid = _pid_of(cluster.env, WORKER_CLASS, instance)
        cluster.worker_pids.append(pid)
        cluster.worker_ports[pid] = port
    if failures:
        raise RuntimeError("spark-daemon.sh could not start " + "\n".join(failures))
    ports = {cluster.worker_ports[p] for p in cluster.worker_pids}
    _wait(
        lambda: ports <= cluster.alive_worker_ports(),
        timeout_s,
        f"{workers} worker(s) to register",
        cluster,
    )


def _answers(cluster: StandaloneCluster) -> bool:
    try:
        cluster.alive_workers()
        return True
    except OSError:
        return False


def _wait(check, timeout_s: float, what: str, cluster: StandaloneCluster) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(cluster.master_pid):
            raise RuntimeError(
                f"the Spark master exited while waiting for {what}:\n{cluster.logs()}"
            )
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}:\n{cluster.logs()}")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _children(pid: int) -> list[int]:
    """Descendants of ``pid`` (a worker's executors and their Python workers)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            child = int(stat.parent.name)
            found += [child, *_children(child)]
    return found


def _terminate(pids: list[int], timeout_s: float = 20.0) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def stop_worker(cluster: StandaloneCluster, pid: int, *, sig: int = signal.SIGTERM) -> None:
    """Stop one worker (and the executors it launched) by pid; ``sig=SIGKILL`` simulates a crash
    of the worker alone (its executors are left to notice)."""
    if pid not in cluster.worker_pids:
        raise ValueError(f"pid {pid} is not a worker of this cluster: {cluster.worker_pids}")
    if sig == signal.SIGKILL:
        os.kill(pid, sig)
    else:
        _stop_tree(pid)
    cluster.worker_pids.remove(pid)


def _stop_tree(pid: int) -> None:
    # The worker stops its executors on SIGTERM; whatever outlives it is stopped by pid after.
    children = _children(pid)
    _terminate([pid])
    _terminate([c for c in children if _alive(c)], timeout_s=5.0)


def stop_cluster(cluster: StandaloneCluster) -> None:
    """Stop the workers (with their executors), then the master; all by recorded pid. A second
    call does nothing (the pids may belong to other processes by then)."""
    if cluster.stopped:
        return
    for pid in list(cluster.worker_pids):
        _stop_tree(pid)
        cluster.worker_pids.remove(pid)
    _terminate([cluster.master_pid])
    cluster.stopped = True


# ---- fault injection helpers ---------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid``: a worker's executor JVMs and their Python processes."""
    return [p for p in _children(pid) if _alive(p)]


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def python_workers(cluster: StandaloneCluster) -> dict[int, list[int]]:
    """The Python worker processes running tasks, by the worker JVM they descend from.

    Spark's ``pyspark.daemon`` forks one worker per task; a forked worker has the daemon's
    command line and the daemon as its parent, so the daemon itself is never listed."""
    found: dict[int, list[int]] = {}
    for worker in cluster.worker_pids:
        for pid in descendants(worker):
            parent = _ppid(pid)
            if (
                "pyspark.daemon" in _cmdline(pid)
                and parent is not None
                and "pyspark.daemon" in _cmdline(parent)
            ):
                found.setdefault(worker, []).append(pid)
    return found


def kill_worker_jvm(cluster: StandaloneCluster, pid: int) -> list[int]:
    """SIGKILL one worker JVM (a crash: its executors are left to notice the loss and exit).
    Returns the pids that descended from it, for ``stop_pids`` once the test is done."""
    orphans = descendants(pid)
    stop_worker(cluster, pid, sig=signal.SIGKILL)
    return orphans


def stop_pids(pids: list[int]) -> None:
    """Stop leftover processes (an orphaned executor and its Python daemon) by pid."""
    _terminate([p for p in pids if _alive(p)], timeout_s=5.0)
