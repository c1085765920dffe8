"""The driver JVM's class-data archive (Java's AppCDS), so a local job's JVM starts with Spark's
and Delta's classes already parsed and verified.

A short nightly job spends much of its fixed cost in the driver JVM's start: it loads and verifies
some 20,000 classes of Spark, Delta and their libraries from jar files, every run. Java (13 and
newer) can write the classes a run loaded into an archive when the JVM exits
(``-XX:ArchiveClassesAtExit``) and map that archive on later starts (``-XX:SharedArchiveFile``),
which skips the parsing and verification: a fixed cost of every process's start, nothing per
row (the nightly-process bench, ``leanscore bench-nightly``, measures it).

Rules, because an archive must never break a job:

- one archive per key: the java binary and its version, every jar of the class path Spark's
  launcher builds (name, size, modification time), the class-path settings and the JVM options.
  A changed class path or JVM gets another key, so it never maps a stale archive;
- the first local run of a key creates it: it claims the key (a lock file, so concurrent runs do
  not all write one), the JVM writes the archive under a temporary name when this process closes
  it, then a trial JVM must map it without a warning before it gets its final name (Java 17
  crashes on a truncated archive, so nothing partial ever has that name). A failure marks the
  key unusable: later runs start without an archive, as before;
- a run that maps it checks the JVM really did (``/proc/<pid>/maps``); one that did not marks it
  unusable;
- only sessions leanscore starts itself on a local master, and only where the user set no driver
  JVM options of their own (``spark.driver.extraJavaOptions``): a cluster's or a user's settings
  are never replaced;
- ``LEANSCORE_CLASS_ARCHIVE=0`` turns it off; ``LEANSCORE_CLASS_ARCHIVE_DIR`` moves it (default
  ``jvm/`` in leanscore's cache, next to the jars). The three most recently used archives are
  kept (each is about 150 MB).
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from leanscore.jobs.runtime.jars import cache_root

log = logging.getLogger(__name__)

SWITCH_ENV = "LEANSCORE_CLASS_ARCHIVE"
DIR_ENV = "LEANSCORE_CLASS_ARCHIVE_DIR"
KEEP_ARCHIVES = 3
CLAIM_EXPIRES_S = 15 * 60  # a claim older than this was left by a run that died
DUMP_WAIT_S = 300
QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off"  # a refused archive warns on the job's output
MIN_JAVA = 13  # the first Java with dynamic archives


@dataclass(frozen=True)
class ClassArchive:
    """What one JVM start does with the archive of its key: ``use`` it or ``create`` it."""

    action: str  # "use" or "create"
    path: Path  # the archive's final name
    java: Path

    @property
    def writing(self) -> Path:
        return self.path.with_name(f"{self.path.stem}.{os.getpid()}.part")

    @property
    def claim(self) -> Path:
        return self.path.with_suffix(".creating")

    @property
    def unusable(self) -> Path:
        return self.path.with_suffix(".unusable")

    def java_options(self) -> str:
        if self.action == "use":
            return f"-XX:SharedArchiveFile={self.path} -Xshare:auto {QUIET}"
        return f"-XX:ArchiveClassesAtExit={self.writing} {QUIET}"


def archive_dir() -> Path:
    return Path(os.environ.get(DIR_ENV) or cache_root() / "jvm")


def launcher_java() -> Path | None:
    """The java Spark's launcher runs (``spark-class``): ``$JAVA_HOME/bin/java``, else the
    PATH's."""
    home = os.environ.get("JAVA_HOME")
    found = Path(home, "bin", "java") if home else shutil.which("java")
    if not found or not Path(found).is_file():
        return None
    return Path(found).resolve()


def java_version(java: Path) -> str | None:
    """``JAVA_VERSION`` from the JDK's ``release`` file (no JVM started), e.g. ``17.0.15``."""
    release = java.parent.parent / "release"
    try:
        text = release.read_text()
    except OSError:
        return None
    found = re.search(r'^JAVA_VERSION="([^"]+)"', text, re.MULTILINE)
    return found.group(1) if found else None


def _major(version: str) -> int:
    first = version.split(".")[0]
    if first == "1":  # 1.8.0_x
        return int(version.split(".")[1])
    return int(re.match(r"\d+", first).group(0))


def _stat_line(path: Path) -> str:
    try:
        st = path.stat()
    except OSError:
        return f"{path} missing"
    return f"{path} {st.st_size} {st.st_mtime_ns}"


def _class_path_entries(spark_home: Path, extra: list[str]) -> list[Path]:
    entries = [Path(e) for e in extra if e]
    jars = spark_home / "jars"
    if jars.is_dir():
        entries += sorted(jars.glob("*.jar"))
    return entries


def archive_key(*, java: Path, version: str, spark_home: Path, settings: dict[str, str]) -> str:
    """A digest of everything that decides whether an archive fits a JVM start: the java binary
    and version, the jars Spark's launcher puts on the class path (name, size, modification
    time), and ``settings`` (class-path settings, JVM options, driver memory)."""
    extra = [
        p
        for key in ("spark.driver.extraClassPath", "SPARK_DIST_CLASSPATH", "SPARK_CLASSPATH")
        for p in settings.get(key, "").split(os.pathsep)
    ]
    lines = [f"java {java} {version}", _stat_line(java)]
    lines += [_stat_line(p) for p in _class_path_entries(spark_home, extra)]
    lines += [f"{k}={settings[k]}" for k in sorted(settings)]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:20]


def plan(
    *, spark_home: Path, settings: dict[str, str], directory: Path | None = None
) -> ClassArchive | None:
    """What the next driver JVM start does with its class archive, or None: turned off, no
    usable java, a key marked unusable, or another run creating it right now."""
    if os.environ.get(SWITCH_ENV, "1").strip().lower() in ("0", "false", "off", "no"):
        return None
    try:
        java = launcher_java()
        version = java_version(java) if java else None
        if java is None or version is None or _major(version) < MIN_JAVA:
            return None
        directory = directory or archive_dir()
        if re.search(r"[\s'\"\\]", str(directory)):
            return None  # Spark splits the JVM options on spaces; never risk a broken option
        key = archive_key(java=java, version=version, spark_home=spark_home, settings=settings)
        archive = ClassArchive("use", directory / f"{key}.jsa", java)
        if archive.unusable.exists():
            return None
        if archive.path.is_file():
            os.utime(archive.path)  # most recently used: kept by the pruning
            return archive
        directory.mkdir(parents=True, exist_ok=True)
        if not _claim(archive.claim):
            return None
        return ClassArchive("create", archive.path, java)
    except Exception as err:  # the archive is only a head start
        log.debug("no class archive for the driver JVM: %s", err)
        return None


def _claim(claim: Path) -> bool:
    """Take the right to create an archive; a claim older than ``CLAIM_EXPIRES_S`` is stale."""
    try:
        if time.time() - claim.stat().st_mtime > CLAIM_EXPIRES_S:
            claim.unlink(missing_ok=True)
            for stale in claim.parent.glob(f"{claim.stem}.*.part"):
                stale.unlink(missing_ok=True)
    except FileNotFoundError:
        pass
    try:
        fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def loads_cleanly(java: Path, archive: Path, class_path: str) -> bool:
    """Whether a trial JVM with ``class_path`` maps ``archive`` without a warning or a crash
    (a truncated archive crashes Java 17; a mismatched class path only warns)."""
    try:
        trial = subprocess.run(
            # a crash (a truncated archive) writes no hs_err file into the working directory
            [str(java), f"-XX:SharedArchiveFile={archive}", "-Xshare:auto"]
            + ["-XX:ErrorFile=/dev/null", "-XX:-CreateCoredumpOnCrash"]
            + ["-cp", class_path, "-version"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    said = (trial.stdout + trial.stderr).lower()
    return trial.returncode == 0 and "warning" not in said and "error" not in said


def finish_creating(archive: ClassArchive, jvm, class_path: str | None) -> bool:
    """At this process's exit: close the driver JVM (it writes the archive as it exits), check
    the archive with a trial JVM, and give it its final name; else mark the key unusable.
    ``jvm`` is the launched JVM's ``Popen``. Returns whether the archive is in place."""
    written = archive.writing
    try:
        if jvm.poll() is None:
            if jvm.stdin is not None:
                jvm.stdin.close()  # Spark's gateway exits on end of input, as at process exit
            try:
                jvm.wait(timeout=DUMP_WAIT_S)
            except subprocess.TimeoutExpired:
                log.info("the driver JVM took over %d s to write its class archive", DUMP_WAIT_S)
                return False  # the claim expires; a later run cleans up
        ok = (
            jvm.returncode == 0
            and class_path is not None
            and written.is_file()
            and loads_cleanly(archive.java, written, class_path)
        )
        if ok:
            os.replace(written, archive.path)
            prune(archive.path.parent)
        else:
            written.unlink(missing_ok=True)
            archive.unusable.touch()
            log.info("the driver JVM's class archive failed its check; runs go on without one")
        archive.claim.unlink(missing_ok=True)
        return ok
    except Exception as err:
        log.debug("finishing the class archive failed: %s", err)
        return False


def confirm_mapped(archive: ClassArchive, jvm_pid: int) -> bool | None:
    """Whether the running JVM mapped ``archive`` (Linux ``/proc``; None where unknown). One
    that was not mapped is marked unusable, so later runs do not offer it again."""
    maps = Path(f"/proc/{jvm_pid}/maps")
    try:
        mapped = str(archive.path) in maps.read_text()
    except OSError:
        return None
    if not mapped:
        archive.unusable.touch()
        log.info("the driver JVM did not map its class archive %s; not offered again", archive.path)
    return mapped


def prune(directory: Path, keep: int = KEEP_ARCHIVES) -> None:
    """Keep the ``keep`` most recently used archives."""
    archives = sorted(directory.glob("*.jsa"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in archives[keep:]:
        old.unlink(missing_ok=True)


def attach(archive: ClassArchive, spark) -> None:
    """After the session started: confirm a used archive is mapped, or arrange for a created one
    to be finished at this process's exit."""
    try:
        jvm = spark.sparkContext._gateway.proc
        if archive.action == "use":
            if confirm_mapped(archive, jvm.pid):
                log.info("driver JVM started from the class archive %s", archive.path)
            return
        class_path = spark._jvm.java.lang.System.getProperty("java.class.path")
        log.info("driver JVM writes a class archive for later runs at exit: %s", archive.path)
        atexit.register(finish_creating, archive, jvm, class_path)
    except Exception as err:
        log.debug("class archive not attached: %s", err)
