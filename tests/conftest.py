"""Shared fixtures: one real local Spark session with Delta (and S3A), a real S3-compatible
server on loopback, one standalone Spark cluster on loopback, and small real artifacts (the
MiniLM export among them), each made once per session where tests can share it."""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("LEANSCORE_SHUFFLE_PARTITIONS", "2")
os.environ.setdefault("LEANSCORE_DRIVER_MEMORY", "2g")
# The Spark drivers the tests start live for seconds to minutes on small data. The C1 compiler
# alone (no C2 tier) runs the same code for about half the JVM CPU on these short runs, and two
# cores are shared by everything a test starts. Every driver (this session, every job, notebook
# and spark-submit process, the local Connect server) takes it from SPARK_SUBMIT_OPTS. The
# standalone cluster's executors keep the default: their tasks run for minutes.
TEST_JVM_OPTIONS = "-XX:TieredStopAtLevel=1"
os.environ.setdefault("SPARK_SUBMIT_OPTS", TEST_JVM_OPTIONS)
# No driver class-data archive by default: this process's session would claim writing one and
# dump every class the whole suite loaded at exit. The archive has tests of its own
# (test_class_archive.py, and a real job process in test_bench_nightly.py).
os.environ.setdefault("LEANSCORE_CLASS_ARCHIVE", "0")


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from leanscore.jobs.runtime.jars import hadoop_aws_coordinates, resolve_jars
    from leanscore.jobs.runtime.spark import get_spark

    resolve_jars(hadoop_aws_coordinates())  # cached after the first run: s3a:// in the session
    warehouse = tmp_path_factory.mktemp("warehouse")
    session = get_spark(
        "leanscore-tests",
        master="local[2]",
        conf={"spark.sql.warehouse.dir": str(warehouse), "spark.default.parallelism": "2"},
    )
    yield session
    session.stop()


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory):
    """One SQLite MLflow registry and artifact root per test module (creating the schema
    takes seconds); each test registers models under its own names."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri, registry_uri=uri).create_experiment(
        "leanscore-tests", artifact_location=(root / "artifacts").as_uri()
    )
    return uri


@pytest.fixture
def registry(mlflow_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", mlflow_store)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "leanscore-tests")
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return mlflow_store


S3_KEYS = {"access.key": "leanscore-test", "secret.key": "leanscore-test-secret"}


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on 127.0.0.1 and a free port, for the whole session."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def s3(spark, s3_endpoint):
    """Spark's S3A pointed at the loopback server (as ``spark.hadoop.fs.s3a.*`` would), and a
    boto3 client to make buckets with."""
    import boto3

    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    for key, value in {
        "endpoint": s3_endpoint,
        "path.style.access": "true",
        "connection.ssl.enabled": "false",
        "endpoint.region": "us-east-1",
        **S3_KEYS,
    }.items():
        hadoop.set(f"fs.s3a.{key}", value)
    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=S3_KEYS["access.key"],
        aws_secret_access_key=S3_KEYS["secret.key"],
    )


@pytest.fixture(scope="session")
def digits():
    from leanscore.compression.data import digits_splits

    return digits_splits()


@pytest.fixture(scope="session")
def small_model(digits):
    """A small MLP trained for a few epochs on real digits (seconds on a CPU)."""
    from leanscore.compression.models import MLP, train_classifier

    train, _ = digits
    torch.manual_seed(0)
    model = MLP(64, [64, 32], 10)
    return train_classifier(model, train.features, train.labels, epochs=15, lr=3e-3)


def make_artifact(model, out_dir, *, name="digits-small", features=None, recipe_steps=None):
    from leanscore.compression.build import compress_to_artifact
    from leanscore.compression.data import digits_splits
    from leanscore.compression.recipe import LabelledData, Recipe

    train, held_out = digits_splits()
    recipe = Recipe.model_validate(
        {"name": name, "max_accuracy_drop": 100.0, "steps": recipe_steps or [{"step": "export"}]}
    )
    return compress_to_artifact(
        recipe,
        model,
        out_dir,
        example_input=torch.from_numpy(held_out.features[:4]),
        train=LabelledData(train.features, train.labels),
        evaluation=LabelledData(held_out.features, held_out.labels),
        features=features or {"array_column": "features", "size": 64},
    )


@pytest.fixture(scope="session")
def artifact(small_model, tmp_path_factory):
    return make_artifact(small_model, tmp_path_factory.mktemp("artifacts") / "fp32")


@pytest.fixture(scope="session")
def columns_artifact(small_model, tmp_path_factory):
    from leanscore.bench.demo.datagen import feature_column_names

    return make_artifact(
        small_model,
        tmp_path_factory.mktemp("artifacts") / "fp32-columns",
        name="digits-small-columns",
        features={"columns": feature_column_names(), "size": 64},
    )


# The session's one small demo run (see the ``demo_run`` fixture).
DEMO_ROWS = 4000
DEMO_RUN_DATE = "2026-01-15"
DEMO_TIMEOUT_S = 1200


class SharedDemo:
    """The session's one ``leanscore demo`` process, shared by every pytest worker through
    files in the directory above the workers' own: the first worker to ask starts it (under a
    file lock), any worker waits for the exit status the process leaves beside its output.
    Started as the session starts, not when its first test is reached, so both workers run
    other files while it trains (its baseline training keeps one core)."""

    def __init__(self, tmp_path_factory, worker_id):
        base = tmp_path_factory.getbasetemp()
        self.shared = base if worker_id == "master" else base.parent
        self.workdir = self.shared / "demo"
        self.stdout, self.stderr = self.shared / "demo.stdout", self.shared / "demo.stderr"
        self.status = self.shared / "demo.returncode"
        self.pid = self.shared / "demo.pid"

    def args(self) -> list[str]:
        import sys
        from pathlib import Path

        leanscore = str(Path(sys.executable).parent / "leanscore")
        return [leanscore, "demo", "--workdir", str(self.workdir)] + [
            "--rows",
            str(DEMO_ROWS),
            "--run-date",
            DEMO_RUN_DATE,
        ]

    def start(self) -> bool:
        """Start the demo unless a worker did; says whether this call started it."""
        import shlex
        import subprocess

        from filelock import FileLock

        with FileLock(str(self.shared / "demo.lock")):
            if self.pid.is_file():
                return False
            self.workdir.mkdir()
            # a terminal 100 columns wide, as rich sees it
            env = {**os.environ, "TTY_COMPATIBLE": "1", "COLUMNS": "100"}
            # the shell writes the demo's exit status last, through a rename: a worker that
            # did not start it reads a whole status or none
            status, part = (shlex.quote(str(p)) for p in (self.status, f"{self.status}.part"))
            script = (
                f"{shlex.join(self.args())} >{shlex.quote(str(self.stdout))} "
                f"2>{shlex.quote(str(self.stderr))}; echo $? >{part} && mv {part} {status}"
            )
            proc = subprocess.Popen(
                ["sh", "-c", script], cwd=self.workdir, env=env, start_new_session=True
            )
            self.pid.write_text(str(proc.pid))
            return True

    def stop(self) -> None:
        """Stop the demo's process group if it still runs."""
        import signal

        if not self.status.is_file():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(self.pid.read_text()), signal.SIGTERM)

    def wait(self):
        """The finished process (its arguments, exit status and output); stopped and failed
        after DEMO_TIMEOUT_S."""
        import subprocess
        import time

        deadline = time.monotonic() + DEMO_TIMEOUT_S
        while not self.status.is_file():
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"the shared demo ran past {DEMO_TIMEOUT_S} s; stopped")
            time.sleep(1)
        return subprocess.CompletedProcess(
            self.args(),
            int(self.status.read_text()),
            self.stdout.read_text(),
            self.stderr.read_text(),
        )


@pytest.fixture(scope="session", autouse=True)
def demo_started_early(request, tmp_path_factory, worker_id):
    """Start the shared demo with the session when any collected test needs it. The worker
    that started it waits for it at its end (another worker may still need it) unless the
    session is stopping early, and stops it then."""
    demo = SharedDemo(tmp_path_factory, worker_id)
    started = any("demo_run" in i.fixturenames for i in request.session.items) and demo.start()
    yield
    if started:
        if request.session.shouldstop or request.session.shouldfail:
            demo.stop()
        else:
            demo.wait()


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, worker_id):
    """One small ``leanscore demo`` (train, compress, write Delta, score, compare), run once as
    a user runs it: a process of its own, its terminal output kept. test_demo checks the run and
    what it printed; its digits artifacts and Delta table are the inputs of the notebook and
    spark-submit tests. One process for the whole session, however many pytest workers need it
    (a demo is minutes of two busy cores). Returns the workdir, the report and the finished
    process."""
    import json

    demo = SharedDemo(tmp_path_factory, worker_id)
    demo.start()  # already started, unless this test was not collected with the session
    proc = demo.wait()
    assert proc.returncode == 0, f"demo failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return demo.workdir, json.loads((demo.workdir / "report.json").read_text()), proc


@pytest.fixture(scope="session")
def minilm_onnx() -> bytes:
    """all-MiniLM-L6-v2 (the offline copy the project installs) exported to fp32 ONNX once per
    session, for every text test that starts from the unmodified export."""
    from leanscore.compression.text_model import baseline_onnx

    return baseline_onnx()


# The shared standalone cluster's shape: test_cluster_faults needs two 1-core workers (one
# executor each, then one of them killed); the spark-submit test runs on the same two.
CLUSTER_WORKERS = 2


@pytest.fixture(scope="session")
def standalone_cluster(tmp_path_factory):
    """One real standalone cluster (a master and CLUSTER_WORKERS 1-core, 1 GB workers on
    loopback) for every test that runs jobs on one, started when the first of them needs it:
    each start is a master and worker JVMs, tens of seconds on two shared cores. A test calls
    ``ensure_workers(cluster, CLUSTER_WORKERS)`` first (a worker killed by an earlier test is
    replaced). Stopped by pid after the last test that uses it, or at the session's end."""
    from standalone_cluster import start_cluster, stop_cluster

    cluster = start_cluster(
        tmp_path_factory.mktemp("standalone-cluster"),
        workers=CLUSTER_WORKERS,
        cores_per_worker=1,
        worker_memory="1g",
    )
    _started_clusters.append(cluster)
    yield cluster
    stop_cluster(cluster)


_started_clusters: list = []


def held_out_frame(spark, digits, n=200):
    import pandas as pd

    _, held_out = digits
    pdf = pd.DataFrame(
        {
            "row_id": np.arange(n, dtype=np.int64),
            "label": held_out.labels[:n].astype(np.int32),
            "features": list(held_out.features[:n]),
        }
    )
    return spark.createDataFrame(pdf, "row_id long, label int, features array<float>")


# Rows every scoring path must flag the same way: null array, wrong length, NaN, inf, null element.
BAD_ROWS = [
    (1000, None),
    (1001, [1.0] * 63),
    (1002, [float("nan")] + [0.0] * 63),
    (1003, [float("inf")] * 64),
    (1004, [0.5] * 10 + [None] + [0.5] * 53),
]


# The longest modules, run first: ``make test`` hands whole modules to two pytest workers as
# they free up, so a long module collected last would run alone at the end.
LONGEST_FIRST = (
    "test_text.py",
    "test_notebooks.py",
    "test_packaging.py",
    "test_cluster_faults.py",
    "test_bench.py",
    "test_bench_nightly.py",
    "test_text_classifier.py",
    "test_spark_submit.py",
)


def pytest_collection_modifyitems(items):
    """Tests that use the Spark session are marked ``spark``: ``make test-fast`` leaves them out.
    The longest modules go first (the others keep their order)."""
    for item in items:
        if "spark" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.spark)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """Stops the standalone cluster once the last test that uses it is done, so that its JVMs
    do not idle through the rest of the session (the fixture's own stop then does nothing)."""
    yield
    if not _started_clusters:
        return
    users = [
        i for i in item.session.items if "standalone_cluster" in getattr(i, "fixturenames", ())
    ]
    if users and users[-1] is item:
        from standalone_cluster import stop_cluster

        for cluster in _started_clusters:
            stop_cluster(cluster)


def _free_gb(path: str) -> float:
    import shutil

    return shutil.disk_usage(path).free / 1e9


def pytest_sessionstart(session):
    import tempfile

    session.config.stash[_FREE_AT_START] = {
        "temp folder": (tempfile.gettempdir(), _free_gb(tempfile.gettempdir())),
        "checkout": (str(session.config.rootpath), _free_gb(str(session.config.rootpath))),
    }


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Free disk at the start and the end of the run, last in the output: a run needs a few GB
    (tables, venvs, clusters' work folders), and a full disk fails tests far from its cause."""
    start = config.stash.get(_FREE_AT_START, None)
    if start is None:
        return
    parts = [
        f"{name} {path}: {before:.1f} GB free at the start, {_free_gb(path):.1f} GB at the end"
        for name, (path, before) in start.items()
    ]
    terminalreporter.write_line("disk: " + "; ".join(parts))


_FREE_AT_START = pytest.StashKey[dict]()


def score_config(artifact, src, out, **extra):
    """A score job's config from the Delta table ``src`` into ``out``, keyed by ``row_id``
    with ``label`` passed through; ``extra`` keys added."""
    from leanscore.jobs.score import ScoreConfig

    return ScoreConfig.model_validate(
        {
            "artifact": str(artifact.path),
            "input": {"path": src, "format": "delta"},
            "output": {"path": out, "format": "delta"},
            "key_columns": ["row_id"],
            "passthrough_columns": ["label"],
            **extra,
        }
    )
