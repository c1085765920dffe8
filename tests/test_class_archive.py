"""The driver JVM's class-data archive: created once by a real JVM, checked before it gets its
name, used by later starts, and skipped (never a broken start) when invalid or mismatched.
Real ``java`` processes on a one-jar class path: seconds, no Spark."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from leanscore.jobs.runtime import class_archive as ca

pytestmark = pytest.mark.skipif(ca.launcher_java() is None, reason="no java")

SLEEPER = """
public class Sleeper {
    public static void main(String[] args) throws Exception {
        Class.forName("org.apache.spark.annotation.Stable");  // a class of the other jar
        System.in.read();  // runs until its input closes, as Spark's gateway does
    }
}
"""


@pytest.fixture(autouse=True)
def archives_on(monkeypatch):
    """On, as outside the tests (the suite turns it off for its other JVMs)."""
    monkeypatch.setenv(ca.SWITCH_ENV, "1")


@pytest.fixture(scope="module")
def sleeper_jar(tmp_path_factory):
    """A jar whose main class runs until its input closes (compiled once)."""
    import zipfile

    if shutil.which("javac", path=str(ca.launcher_java().parent)) is None:
        pytest.skip("no javac next to java")
    build = tmp_path_factory.mktemp("sleeper")
    (build / "Sleeper.java").write_text(SLEEPER)
    subprocess.run(
        [str(ca.launcher_java().parent / "javac"), "Sleeper.java"], cwd=build, check=True
    )
    jar = build / "sleeper.jar"
    with zipfile.ZipFile(jar, "w") as z:
        z.write(build / "Sleeper.class", "Sleeper.class")
    return jar


@pytest.fixture
def spark_home(tmp_path, sleeper_jar):
    """A Spark home whose launcher class path is a real jar of pyspark's and the sleeper."""
    import pyspark

    jars = tmp_path / "spark" / "jars"
    jars.mkdir(parents=True)
    source = sorted((Path(pyspark.__file__).parent / "jars").glob("spark-tags_*.jar"))[0]
    shutil.copy2(source, jars / source.name)
    shutil.copy2(sleeper_jar, jars / sleeper_jar.name)
    return tmp_path / "spark"


def class_path(home: Path) -> str:
    return os.pathsep.join(str(p) for p in sorted((home / "jars").glob("*.jar")))


def start_jvm(archive: ca.ClassArchive, home: Path, *, options: str | None = None):
    """A JVM with the archive's options that runs until its input closes, as Spark's gateway."""
    options = archive.java_options() if options is None else options
    return subprocess.Popen(
        [str(archive.java), *shlex.split(options), "-cp", class_path(home), "Sleeper"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def plan(home: Path, directory: Path, **settings) -> ca.ClassArchive | None:
    return ca.plan(
        spark_home=home, settings={"driver memory": "2g", **settings}, directory=directory
    )


def test_created_once_checked_then_used_and_mapped(spark_home, tmp_path):
    store = tmp_path / "archives"
    first = plan(spark_home, store)
    assert first.action == "create"
    assert plan(spark_home, store) is None  # claimed: a concurrent run starts without one
    jvm = start_jvm(first, spark_home)
    assert ca.finish_creating(first, jvm, class_path(spark_home))
    assert first.path.is_file() and not first.claim.exists()
    assert not list(store.glob("*.part"))
    later = plan(spark_home, store)
    assert (later.action, later.path) == ("use", first.path)
    jvm = start_jvm(later, spark_home)
    try:
        time.sleep(0.5)
        assert ca.confirm_mapped(later, jvm.pid) is True
    finally:
        jvm.stdin.close()
        jvm.wait(timeout=60)
    assert jvm.returncode == 0 and b"warning" not in jvm.stdout.read().lower()


def test_a_truncated_archive_never_gets_its_name(spark_home, tmp_path, monkeypatch):
    """Java 17 crashes on a truncated archive: the check finds it, the key is marked unusable
    and later runs start without an archive; the crash leaves no error file behind."""
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "archives"
    first = plan(spark_home, store)
    jvm = start_jvm(first, spark_home)
    jvm.stdin.close()
    jvm.wait(timeout=60)
    whole = first.writing.read_bytes()
    assert ca.loads_cleanly(first.java, first.writing, class_path(spark_home))
    first.writing.write_bytes(whole[: len(whole) // 3])
    assert not ca.finish_creating(first, jvm, class_path(spark_home))
    assert not first.path.exists() and not first.writing.exists() and first.unusable.exists()
    assert plan(spark_home, store) is None
    assert list(tmp_path.glob("hs_err_pid*.log")) == []


def test_a_changed_class_path_gets_another_archive(spark_home, tmp_path):
    store = tmp_path / "archives"
    first = plan(spark_home, store)
    jvm = start_jvm(first, spark_home)
    assert ca.finish_creating(first, jvm, class_path(spark_home))
    # the archive does not fit another class path: a trial JVM warns, so it is refused
    tags_only = str(next((spark_home / "jars").glob("spark-tags_*.jar")))
    assert not ca.loads_cleanly(first.java, first.path, tags_only)
    jar = next((spark_home / "jars").glob("*.jar"))
    os.utime(jar, ns=(jar.stat().st_atime_ns, jar.stat().st_mtime_ns + 10**9))
    changed = plan(spark_home, store)
    assert changed.action == "create" and changed.path != first.path
    other_options = plan(spark_home, store, **{"driver java options": "-Xss4m"})
    assert other_options.path not in (first.path, changed.path)


def test_a_jvm_that_did_not_map_the_archive_marks_it_unusable(spark_home, tmp_path):
    store = tmp_path / "archives"
    first = plan(spark_home, store)
    assert ca.finish_creating(first, start_jvm(first, spark_home), class_path(spark_home))
    used = plan(spark_home, store)
    jvm = start_jvm(used, spark_home, options="-Xshare:off")
    try:
        time.sleep(0.5)
        assert ca.confirm_mapped(used, jvm.pid) is False
    finally:
        jvm.stdin.close()
        jvm.wait(timeout=60)
    assert used.unusable.exists() and plan(spark_home, store) is None


def test_turned_off_unsafe_directories_and_stale_claims(spark_home, tmp_path, monkeypatch):
    store = tmp_path / "archives"
    monkeypatch.setenv(ca.SWITCH_ENV, "0")
    assert plan(spark_home, store) is None
    monkeypatch.setenv(ca.SWITCH_ENV, "1")
    assert plan(spark_home, tmp_path / "with space") is None  # Spark splits options on spaces
    first = plan(spark_home, store)
    (store / f"{first.path.stem}.999.part").write_bytes(b"left by a run that died")
    old = time.time() - ca.CLAIM_EXPIRES_S - 60
    os.utime(first.claim, (old, old))
    again = plan(spark_home, store)
    assert again is not None and again.action == "create"
    assert not list(store.glob("*.part"))


def test_prune_keeps_the_most_recently_used(tmp_path):
    for i in range(5):
        archive = tmp_path / f"{i}.jsa"
        archive.write_bytes(b"x")
        os.utime(archive, (1000 + i, 1000 + i))
    ca.prune(tmp_path, keep=3)
    assert sorted(p.name for p in tmp_path.glob("*.jsa")) == ["2.jsa", "3.jsa", "4.jsa"]


def test_user_driver_options_are_never_replaced(tmp_path, monkeypatch):
    from leanscore.jobs.runtime.spark import _user_driver_java_options

    monkeypatch.delenv("PYSPARK_SUBMIT_ARGS", raising=False)
    monkeypatch.setenv("SPARK_CONF_DIR", str(tmp_path))
    assert not _user_driver_java_options({})
    assert _user_driver_java_options({"spark.driver.extraJavaOptions": "-Xss4m"})
    (tmp_path / "spark-defaults.conf").write_text("spark.driver.extraJavaOptions  -Xss4m\n")
    assert _user_driver_java_options({})


def test_a_local_driver_leaves_c2_to_per_row_code_unless_the_user_set_its_options(
    tmp_path, monkeypatch
):
    from leanscore.jobs.runtime.spark import (
        LOCAL_DRIVER_JIT_OPTIONS,
        LOCAL_DRIVER_QUICK_JIT_OPTIONS,
        with_driver_jvm_options,
    )
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    monkeypatch.delenv("PYSPARK_SUBMIT_ARGS", raising=False)
    monkeypatch.setenv("SPARK_CONF_DIR", str(tmp_path))
    monkeypatch.setenv("LEANSCORE_CLASS_ARCHIVE", "0")
    monkeypatch.setattr(SparkContext, "_gateway", None)  # as in a process with no JVM yet
    monkeypatch.setenv("LEANSCORE_DRIVER_JAVA_OPTIONS", "-XX:Tier4InvocationThreshold=5000")

    builder, _ = with_driver_jvm_options(SparkSession.Builder().master("local[2]"))
    options = builder._options["spark.driver.extraJavaOptions"].split()
    assert options[: len(LOCAL_DRIVER_JIT_OPTIONS.split())] == LOCAL_DRIVER_JIT_OPTIONS.split()
    assert options[-1] == "-XX:Tier4InvocationThreshold=5000"  # the user's, last, wins

    mine = SparkSession.Builder().master("local[2]").config("spark.driver.extraJavaOptions", "x")
    builder, _ = with_driver_jvm_options(mine)
    assert builder._options["spark.driver.extraJavaOptions"] == "-XX:Tier4InvocationThreshold=5000"

    monkeypatch.delenv("LEANSCORE_DRIVER_JAVA_OPTIONS")
    cluster, _ = with_driver_jvm_options(SparkSession.Builder().master("spark://host:7077"))
    assert "spark.driver.extraJavaOptions" not in cluster._options

    # where the Python tasks read and write the rows, the quick compiler alone, C2 nowhere
    quick, _ = with_driver_jvm_options(SparkSession.Builder().master("local[2]"), rows_in_jvm=False)
    assert quick._options["spark.driver.extraJavaOptions"] == LOCAL_DRIVER_QUICK_JIT_OPTIONS
