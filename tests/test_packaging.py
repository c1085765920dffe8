"""The package as users install it: the built wheel, on a cluster-like runtime and outside the
repository.

- The wheel holds one top-level package, ``leanscore``, with the default configs as data.
- A "runtime" virtual environment that already holds a Spark release and its Delta (as a
  Databricks runtime does, Spark 4.0 and 4.1) gets the core wheel: ``pip install`` changes none
  of the packages already there, and ``leanscore score`` scores a Delta table with an artifact
  made by the full install, with the same predictions. The runtime runs Python 3.12, as
  Databricks Runtime 17.x does, where pyenv has a 3.12; the test's id names the Python used.
- Inside a running UDF no compression, text or charting library is imported.
- ``leanscore demo`` runs from the installed wheel outside the repository, with the network
  denied to the JVM: the second start of leanscore needs nothing from Maven.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import TEST_JVM_OPTIONS, held_out_frame

ROOT = Path(__file__).resolve().parents[1]
RUN_DATE = "2026-11-28"

# What a Databricks runtime brings, per Spark line (DBR 17.3 LTS runs Spark 4.0).
RUNTIMES = {
    "spark-4.0": [
        "pyspark==4.0.1",
        "delta-spark==4.0.0",
        "numpy==2.1.3",
        "pandas==2.2.3",
        "pyarrow==19.0.1",
    ],
    "spark-4.1": [
        "pyspark==4.1.1",
        "delta-spark==4.3.0",
        "numpy==2.1.3",
        "pandas==2.2.3",
        "pyarrow==19.0.1",
    ],
}
HEAVY_MODULES = ("torch", "transformers", "sklearn", "matplotlib", "torch_pruning", "mlflow")
# A runtime costs a minute of the suite on 2 cores (its own JVMs): by default the oldest Spark
# line leanscore supports (the main environment covers the newest); LEANSCORE_TEST_RUNTIMES=all
# (or a comma-separated list) runs the others too.
_chosen = os.environ.get("LEANSCORE_TEST_RUNTIMES", "spark-4.0")
TESTED_RUNTIMES = sorted(RUNTIMES) if _chosen == "all" else _chosen.split(",")
assert set(TESTED_RUNTIMES) <= set(RUNTIMES), f"LEANSCORE_TEST_RUNTIMES: known {sorted(RUNTIMES)}"


def _runtime_python() -> tuple[Path, str]:
    """The runtime's interpreter: the newest Python 3.12 under ~/.pyenv/versions (Databricks
    Runtime 17.x runs 3.12), or the one running the tests where there is none."""
    found = Path.home().glob(".pyenv/versions/3.12*/bin/python3.12")
    newest = max(
        found, key=lambda p: [int(n) for n in re.findall(r"\d+", p.parts[-3])], default=None
    )
    if newest is not None:
        return newest, "3.12"
    return Path(sys.executable), f"{sys.version_info.major}.{sys.version_info.minor}"


RUNTIME_PYTHON, RUNTIME_PYTHON_VERSION = _runtime_python()
# The JVM may not reach any repository: Ivy would fail at once instead of hanging.
NO_NETWORK_JVM = (
    "-Dhttp.proxyHost=127.0.0.1 -Dhttp.proxyPort=9 -Dhttps.proxyHost=127.0.0.1 -Dhttps.proxyPort=9"
)


def _run(cmd, *, cwd=None, env=None, timeout=600) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _freeze(python: Path) -> dict[str, str]:
    out = _run([str(python), "-m", "pip", "freeze", "--all"]).stdout
    pins = dict(line.split("==", 1) for line in out.splitlines() if "==" in line)
    return {name.lower().replace("_", "-"): v for name, v in pins.items()}


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_", "SPARK_"))}
    env.pop("PYTHONPATH", None)
    env["SPARK_SUBMIT_OPTS"] = TEST_JVM_OPTIONS  # the drivers' JVM options only (conftest)
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    proc = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(ROOT)])
    assert "Warning" not in proc.stderr, proc.stderr  # no deprecation warnings of ours
    (found,) = out.glob("leanscore-*.whl")
    return found


def test_the_wheel_holds_one_namespace_and_its_configs(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert top == {"leanscore"}
    for shipped in ("pricing.yaml", "nightly.yaml", "bench.yaml", "recipes/digits-mlp-demo.yaml"):
        assert f"leanscore/conf/{shipped}" in names
    # every module of the repository's package folders, subpackages included, is in the wheel
    root = Path(__file__).resolve().parents[1]
    modules = [
        f"leanscore/{path.relative_to(root).as_posix()}"
        for folder in ("compression", "udfs", "jobs", "conf")
        for path in (root / folder).rglob("*.py")
    ]
    assert len(modules) > 50
    assert [m for m in modules if m not in names] == []
    metadata = (
        zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    )
    core = [
        line
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    assert not any(
        heavy in line for line in core for heavy in ("torch", "pyspark", "matplotlib", "mlflow")
    )
    assert "Requires-Python: <3.14,>=3.11" in metadata


@pytest.fixture(scope="module")
def full_install_scores(spark, digits, artifact, tmp_path_factory):
    """The rows every runtime scores (as Parquet) and what the full install predicts for them."""
    from leanscore.udfs import score_dataframe

    frame = held_out_frame(spark, digits, n=300)
    src = tmp_path_factory.mktemp("runtime-input") / "features.parquet"
    frame.write.parquet(str(src))
    expected = (
        score_dataframe(frame, str(artifact.path), key_columns=["row_id"])
        .select("row_id", "prediction", "probability")
        .orderBy("row_id")
        .toPandas()
    )
    return src, expected


# Run by the runtime's interpreter: its own Spark writes the input Delta table, waits (JVM up)
# while `leanscore score` runs in a process of its own, then reads the scored table back. One
# runtime JVM does both ends instead of one per end.
RUNTIME_TABLES = """
import json, sys
from leanscore.jobs.runtime.spark import get_spark
src, delta_in, delta_out, dump = sys.argv[1:]
spark = get_spark()
spark.read.parquet(src).write.format("delta").save(delta_in)
print("input written", flush=True)
sys.stdin.readline()
rows = (
    spark.read.format("delta").load(delta_out)
    .select("row_id", "prediction", "probability", "prediction_error", "model_sha256")
    .orderBy("row_id").collect()
)
json.dump([r.asDict() for r in rows], open(dump, "w"))
"""


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.parametrize(
    "runtime", TESTED_RUNTIMES, ids=[f"{r}-python{RUNTIME_PYTHON_VERSION}" for r in TESTED_RUNTIMES]
)
def test_core_wheel_on_a_cluster_runtime_changes_nothing_and_scores_the_same(
    runtime, wheel, full_install_scores, artifact, tmp_path
):
    src, expected = full_install_scores
    venv = tmp_path / "runtime"
    _run([str(RUNTIME_PYTHON), "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    version = _run([str(python), "-c", "import sys; print(*sys.version_info[:2], sep='.')"])
    assert version.stdout.strip() == RUNTIME_PYTHON_VERSION
    # --no-compile: no .pyc for thousands of modules the test never imports (versions and the
    # freeze comparison are unaffected; Python compiles what it imports).
    _run([str(python), "-m", "pip", "install", "-q", "--no-compile", *RUNTIMES[runtime]])
    before = _freeze(python)
    _run([str(python), "-m", "pip", "install", "-q", "--no-compile", str(wheel)])
    after = _freeze(python)
    changed = {n: (v, after.get(n)) for n, v in before.items() if after.get(n) != v}
    assert changed == {}, f"installing leanscore changed the runtime's packages: {changed}"

    env = _clean_env(
        LEANSCORE_SPARK_MASTER="local[2]",
        LEANSCORE_SHUFFLE_PARTITIONS="2",
        LEANSCORE_DRIVER_MEMORY="1g",
    )
    delta_in, delta_out, dump = tmp_path / "in", tmp_path / "out", tmp_path / "scored.json"
    tables_log = tmp_path / "runtime-tables.log"
    with tables_log.open("w") as log:
        tables = subprocess.Popen(
            [str(python), "-c", RUNTIME_TABLES, str(src), str(delta_in), str(delta_out), str(dump)],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    try:
        ready, _, _ = select.select([tables.stdout], [], [], 600)
        line = tables.stdout.readline() if ready else ""
        assert line.strip() == "input written", (
            f"the runtime did not write the input table:\n{tables_log.read_text()[-3000:]}"
        )
        _score_in_runtime(venv, artifact, delta_in, delta_out, env)
        _, _ = tables.communicate("\n", timeout=600)
    finally:
        if tables.poll() is None:
            tables.kill()
            tables.wait()
    assert tables.returncode == 0, f"reading back failed:\n{tables_log.read_text()[-3000:]}"
    scored = json.loads(dump.read_text())
    assert [r["row_id"] for r in scored] == expected["row_id"].tolist()
    assert [r["prediction"] for r in scored] == expected["prediction"].tolist()
    np.testing.assert_array_equal(
        np.array([r["probability"] for r in scored], dtype=np.float32),
        expected["probability"].to_numpy(dtype=np.float32),
    )
    assert {r["model_sha256"] for r in scored} == {artifact.sha256}
    assert all(r["prediction_error"] is None for r in scored)


def _score_in_runtime(venv: Path, artifact, delta_in: Path, delta_out: Path, env) -> None:
    """``leanscore score`` (the runtime's console script) from the input Delta table."""
    config = delta_in.parent / "nightly.json"
    config.write_text(
        json.dumps(
            {
                "artifact": str(artifact.path),
                "input": {"path": str(delta_in), "format": "delta"},
                "output": {"path": str(delta_out), "format": "delta"},
                "key_columns": ["row_id"],
            }
        )
    )
    leanscore = venv / "bin" / "leanscore"
    _run([str(leanscore), "score", "--config", str(config), "--run-date", RUN_DATE], env=env)


def test_a_running_udf_imports_no_compression_text_or_charting_library(spark, digits, artifact):
    """The scoring UDF runs in a Python worker that imports only what scoring needs. The UDF
    reports its own process's modules after scoring a batch with the real model."""
    from leanscore.compression.tabular_inputs import from_array
    from leanscore.udfs.api import as_artifact, build_scorer

    frame = held_out_frame(spark, digits, n=64).repartition(2)
    scorer = build_scorer(
        as_artifact(artifact.path),
        spark=spark,
        batch_size=16,
        bad_rows="fail",
        probabilities=False,
        session_config=None,
        path_threshold_bytes=1 << 30,
    )
    heavy = HEAVY_MODULES

    def score_then_report(batches):
        import pandas as pd

        session, input_name = scorer.session()
        for batch in batches:
            scored = scorer.score(
                session, input_name, from_array(batch["features"], "features", 64), None
            )
            loaded = sorted(m for m in heavy if m in sys.modules)
            yield pd.DataFrame({"loaded": [",".join(loaded)], "rows": [scored.n]})

    # Spark reuses a Python worker across tasks, and this session's workers have run other
    # tests' UDFs (PyTorch ones among them). Spark keeps one pool of workers per environment,
    # so a variable of this test's own gives its UDF workers that have run nothing else.
    environment = spark.sparkContext.environment
    environment["LEANSCORE_TEST_FRESH_WORKERS"] = uuid.uuid4().hex
    try:
        reports = frame.mapInPandas(score_then_report, "loaded string, rows long").collect()
    finally:
        del environment["LEANSCORE_TEST_FRESH_WORKERS"]
    assert sum(r["rows"] for r in reports) == 64
    assert {r["loaded"] for r in reports} == {""}


@pytest.mark.slow
@pytest.mark.spark
def test_demo_from_the_installed_wheel_outside_the_repository_offline(wheel, tmp_path):
    """The wheel installed (without its dependencies: this interpreter's tested set serves
    them) into a fresh environment runs ``leanscore demo`` from a folder outside the
    repository, on the configs it ships, with the JVM cut off from any repository."""
    venv = tmp_path / "wheel-env"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    site = next((venv / "lib").glob("python3.*/site-packages"))
    deps = next(p for p in sys.path if p.endswith("site-packages") and Path(p, "torch").is_dir())
    (site / "00-tested-dependencies.pth").write_text(deps + "\n")
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), wheel])
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    python = venv / "bin" / "python"
    env = _clean_env(
        LEANSCORE_SPARK_MASTER="local[2]",
        LEANSCORE_SHUFFLE_PARTITIONS="2",
        LEANSCORE_DRIVER_MEMORY="1g",
        JAVA_TOOL_OPTIONS=NO_NETWORK_JVM,
    )
    where = _run(
        [str(python), "-c", "import leanscore.jobs.cli as c, sys; print(c.__file__)"],
        cwd=outside,
        env=env,
    ).stdout
    assert where.strip().startswith(str(site)), where
    for bare in ("compression", "jobs", "udfs"):
        probe = subprocess.run(
            [str(python), "-c", f"import {bare}"], cwd=outside, env=env, capture_output=True
        )
        assert probe.returncode != 0, f"{bare} is importable as a top-level module"
    proc = _run(
        [
            str(python),
            "-m",
            "leanscore.jobs.cli",
            "demo",
            "--workdir",
            "demo",
            "--rows",
            "2000",
            "--workload",
            "digits-mlp",
        ],
        cwd=outside,
        env=env,
        timeout=900,
    )
    report = json.loads((outside / "demo" / "report.json").read_text())
    assert report, proc.stdout
    assert (outside / "demo" / "artifacts" / "digits-mlp-pruned-int8" / "model.onnx").is_file()
