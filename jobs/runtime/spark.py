"""The one place a Spark session is made.

Where a session already exists (spark-submit, Databricks, Spark Connect, a notebook) it is used
as it is. Otherwise a local session with Delta Lake's extension and catalog, the cached Delta
jars, quiet logs and no UI is started; on a local master S3A (``s3a://``) comes with it when
cached (``python -m leanscore.jobs.runtime.jars --with-s3``), or when the caller says its
paths need it (``s3a=True``: resolved on that first use, cached after).
``LEANSCORE_DRIVER_JAVA_OPTIONS`` sets the driver JVM's options of such a session. On a local
master, unless the user set driver JVM options of their own, its driver JVM starts from a
class-data archive of Spark's and Delta's classes, which the first run writes
(``jobs/runtime/class_archive.py``), and its compilers are set for what the JVM runs per row:
the optimising compiler late where Spark converts and writes the rows
(``LOCAL_DRIVER_JIT_OPTIONS``), the quick compiler alone where the job's Python tasks read and
write them (``LOCAL_DRIVER_QUICK_JIT_OPTIONS``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path

from leanscore.jobs.runtime import class_archive
from leanscore.jobs.runtime.jars import (
    cached_jars,
    delta_coordinates,
    hadoop_aws_coordinates,
    resolve_jars,
)
from pyspark.sql import SparkSession

DEFAULT_MASTER = "local[*]"

LOCAL_DRIVER_JIT_OPTIONS = (
    "-XX:Tier4InvocationThreshold=150000 -XX:Tier4MinInvocationThreshold=18000 "
    "-XX:Tier4CompileThreshold=450000 -XX:Tier4BackEdgeThreshold=1200000"
)
"""HotSpot's thresholds for its optimising compiler (C2), 30 times the JDK's own.

A local job's driver JVM is also its executor. With the JDK's thresholds, C2 compiles thousands
of methods that turn warm once (session start, Delta's log, planning, the commit) and its
compiler threads take cores from the tasks; at 30 times, C2 still compiles the code that runs
for every row (Parquet encoding, Arrow conversion), which the quicker compiler (C1) runs until
then. Measured on the nightly bench's table, 2 cores, against the JDK's thresholds, 3 and 100
times them and C1 alone (docs/data-engineer.md). A user's own driver options replace it;
``LEANSCORE_DRIVER_JAVA_OPTIONS`` comes after it, so a threshold given there wins."""

LOCAL_DRIVER_QUICK_JIT_OPTIONS = "-XX:TieredStopAtLevel=1"
"""HotSpot's quick compiler (C1) alone, for a local job whose Python tasks read and write the
rows (the score job where its tasks write the output: ``leanscore.jobs.task_write``).

Its driver JVM then runs session start, Delta's log, planning and the commit, each once, and
no code per row; the optimising compiler's threads only took cores from the tasks. Measured
(2026-12-06, 2 cores, fresh ``leanscore score`` processes on the user model's 2,000,000-row
table, 3 interleaved rounds): 9.4 to 9.9 s against 11.1 to 11.3 s with
``LOCAL_DRIVER_JIT_OPTIONS``, and 14.5 against 17.2 to 17.8 CPU-s. Where Spark's JVM converts
and writes the rows it is the slower choice (the PyTorch baseline job, ``bench/pytorch_job.py``
on the same table: 44.3 and 46.5 s against 39.3 s), so only jobs that say so get it."""


def default_master() -> str:
    """The master of a session leanscore starts: ``LEANSCORE_SPARK_MASTER``, else local[*]."""
    return os.environ.get("LEANSCORE_SPARK_MASTER", DEFAULT_MASTER)


def active_session() -> SparkSession | None:
    return SparkSession.getActiveSession()


def get_spark(
    app_name: str = "leanscore",
    *,
    master: str | None = None,
    conf: dict[str, str] | None = None,
    s3a: bool = False,
    jvm_log: Path | None = None,
    rows_in_jvm: bool = True,
) -> SparkSession:
    """Return the active session, or start a local one with Delta Lake (and S3A where cached,
    or where ``s3a`` says the job reads or writes ``s3a://``: its jars are fetched then).
    ``rows_in_jvm=False``: the job's Python tasks read and write its rows, so a driver JVM
    this call starts compiles with the quick compiler alone (``LOCAL_DRIVER_QUICK_JIT_OPTIONS``).

    ``jvm_log``: a file that takes everything the JVM this call starts writes to stderr (its
    own warnings, Spark's log4j console output, the Python workers' stderr), so that a
    terminal shows only leanscore's lines; ignored where a session or JVM already exists."""
    existing = active_session()
    if existing is not None:
        return existing
    if os.environ.get("SPARK_REMOTE") or os.environ.get("SPARK_CONNECT_MODE_ENABLED"):
        return SparkSession.builder.appName(app_name).getOrCreate()
    if "PYSPARK_GATEWAY_PORT" in os.environ:
        # Launched by spark-submit: master and jars come from its command line.
        return SparkSession.builder.appName(app_name).getOrCreate()

    # Python workers must run this interpreter (the project's venv), not the PATH's python3.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = _local_builder(app_name, master)
    if builder._options["spark.master"].startswith("local"):
        builder = _with_s3a_jars(builder, fetch=s3a)
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    builder, archive = with_driver_jvm_options(builder, rows_in_jvm=rows_in_jvm)
    _import_while_the_jvm_starts()
    with _stderr_to(jvm_log):
        spark = builder.getOrCreate()
    _quiet_accumulator_hang_up(spark)
    if archive is not None:
        class_archive.attach(archive, spark)
    spark.sparkContext.setLogLevel(os.environ.get("LEANSCORE_SPARK_LOG_LEVEL", "ERROR"))
    return spark


def _import_while_the_jvm_starts() -> None:
    """Import, in the background, the modules PySpark imports on its first call into the new
    JVM: its value converters load ``pyspark.testing.utils`` and with it pandas (about 0.9 s
    here), while this process otherwise only waits for the JVM to start."""

    def load() -> None:
        with contextlib.suppress(Exception):  # PySpark imports it again itself if this failed
            import pyspark.testing.utils  # noqa: F401

    threading.Thread(target=load, name="leanscore-import-pyspark", daemon=True).start()


def with_driver_jvm_options(
    builder: SparkSession.Builder, *, rows_in_jvm: bool = True
) -> tuple[SparkSession.Builder, class_archive.ClassArchive | None]:
    """``builder`` with the driver JVM start options leanscore gives a session it starts:
    ``LEANSCORE_DRIVER_JAVA_OPTIONS`` and, on a local master where the user set no driver JVM
    options, the compiler settings (``LOCAL_DRIVER_JIT_OPTIONS``, or with ``rows_in_jvm=False``
    ``LOCAL_DRIVER_QUICK_JIT_OPTIONS``) and the class archive this key uses or creates (pass it
    to ``class_archive.attach`` once the session runs). The nightly bench's PyTorch job starts
    its JVM through this too, by the same rule (its JVM converts and writes every row), so the
    two jobs differ in the job, not in how their JVMs are chosen to start."""
    java_options = os.environ.get("LEANSCORE_DRIVER_JAVA_OPTIONS", "").strip()
    local = builder._options.get("spark.master", "").startswith("local")
    archive = None
    if local and _may_set_driver_options(builder._options):
        jit = LOCAL_DRIVER_JIT_OPTIONS if rows_in_jvm else LOCAL_DRIVER_QUICK_JIT_OPTIONS
        java_options = f"{jit} {java_options}".strip()
        archive = _class_archive(builder._options, java_options)
    if archive is not None:
        java_options = f"{java_options} {archive.java_options()}".strip()
    if java_options:
        builder = builder.config("spark.driver.extraJavaOptions", java_options)
    return builder, archive


def _local_builder(app_name: str, master: str | None):
    """The session leanscore starts itself: Delta's jars and catalog, Arrow, no UI, and the
    sizes its environment variables may change."""
    jars = cached_jars() or resolve_jars(delta_coordinates())
    return (
        SparkSession.builder.appName(app_name)
        .master(master or default_master())
        .config("spark.jars", ",".join(jars))
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config(
            "spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog"
        )
        .config("spark.ui.enabled", "false")
        .config("spark.pyspark.python", os.environ["PYSPARK_PYTHON"])
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", os.environ.get("LEANSCORE_SHUFFLE_PARTITIONS", "8"))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.databricks.delta.snapshotPartitions", "2")
        .config("spark.driver.memory", os.environ.get("LEANSCORE_DRIVER_MEMORY", "4g"))
        .config("spark.sql.warehouse.dir", os.environ.get("LEANSCORE_WAREHOUSE", "spark-warehouse"))
    )


def _with_s3a_jars(builder, *, fetch: bool):
    """S3A and the AWS SDK on a local driver's class path where cached (fetched first when
    ``fetch``): spark.jars would copy their ~700 MB into every session's work directory. A
    cluster takes them from its own image or --jars/--packages."""
    s3a_jars = cached_jars(hadoop_aws_coordinates())
    if fetch and not s3a_jars:
        s3a_jars = resolve_jars(hadoop_aws_coordinates())
    if not s3a_jars:
        return builder
    return builder.config("spark.driver.extraClassPath", os.pathsep.join(s3a_jars))


@contextlib.contextmanager
def _stderr_to(path: Path | None):
    """Point this process's stderr (file descriptor 2) at ``path`` while a child is started:
    the child keeps it, this process gets its own back."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "ab") as log:
            os.dup2(log.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _quiet_accumulator_hang_up(spark: SparkSession) -> None:
    """PySpark's accumulator server prints an ``EOFError`` traceback when the JVM hangs up on it
    as the process ends; that is a normal end, not an error. Other errors still print."""
    server = getattr(spark.sparkContext, "_accumulatorServer", None)
    if server is None or getattr(server, "_leanscore_quiet", False):
        return
    report = server.handle_error

    def handle_error(request, client_address):
        if not isinstance(sys.exc_info()[1], EOFError):
            report(request, client_address)

    server.handle_error = handle_error
    server._leanscore_quiet = True


def mentions_s3a(config) -> bool:
    """Whether a job's config (a pydantic model) names an ``s3a://`` (or ``s3://``) path."""
    text = config.model_dump_json()
    return any(f'"{scheme}://' in text for scheme in ("s3a", "s3", "s3n"))


def _spark_home() -> str:
    """The Spark home PySpark's launcher runs: ``SPARK_HOME``, else the pyspark package."""
    import pyspark

    return os.environ.get("SPARK_HOME") or os.path.dirname(pyspark.__file__)


def _user_driver_java_options(options: dict[str, str]) -> bool:
    """Whether the user set the driver JVM's options: in this session's conf, through
    ``PYSPARK_SUBMIT_ARGS``, or in ``spark-defaults.conf`` (which our setting would replace)."""
    if "spark.driver.extraJavaOptions" in options or os.environ.get("PYSPARK_SUBMIT_ARGS"):
        return True
    conf_dir = os.environ.get("SPARK_CONF_DIR") or os.path.join(_spark_home(), "conf")
    defaults = os.path.join(conf_dir, "spark-defaults.conf")
    if not os.path.isfile(defaults):
        return False
    with open(defaults) as lines:
        return any(line.split()[:1] == ["spark.driver.extraJavaOptions"] for line in lines)


def _may_set_driver_options(options: dict[str, str]) -> bool:
    """Whether leanscore may add its own driver JVM options: no JVM runs in this process yet and
    the user set none of their own."""
    from pyspark import SparkContext

    try:
        return SparkContext._gateway is None and not _user_driver_java_options(options)
    except OSError:  # an unreadable spark-defaults.conf: leave the JVM's options alone
        return False


def _class_archive(options: dict[str, str], java_options: str) -> class_archive.ClassArchive | None:
    """The class archive this session's driver JVM uses or creates (the caller checked
    ``_may_set_driver_options``); None where none applies."""
    if any(
        flag in java_options for flag in ("SharedArchiveFile", "ArchiveClassesAtExit", "Xshare")
    ):
        return None
    settings = {
        key: options.get(key, "")
        for key in ("spark.driver.extraClassPath", "spark.jars", "spark.driver.memory")
    }
    for name in ("SPARK_DIST_CLASSPATH", "SPARK_CLASSPATH", "SPARK_SUBMIT_OPTS", "SPARK_CONF_DIR"):
        settings[name] = os.environ.get(name, "")
    settings["driver java options"] = java_options
    return class_archive.plan(spark_home=Path(_spark_home()), settings=settings)


def local_connect_session(master: str = "local[2]", *, conf: dict[str, str] | None = None):
    """A Spark Connect session on a local Connect server (pyspark starts it in this process).

    No SparkContext exists on the client side, as on Databricks serverless. Do not mix it with a
    classic session in the same process: the server shares the process's JVM. No Delta jars are
    loaded: score Parquet or in-memory DataFrames here.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # Static confs (UI, Python executable) cannot be set from a Connect client: the server
    # takes PYSPARK_PYTHON from the environment.
    builder = SparkSession.builder.remote(master).config("spark.sql.shuffle.partitions", "2")
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()
