"""Spark's extra JVM jars (Delta Lake, S3A, Delta's Connect plugin), resolved from Maven Central
once into a local cache.

Spark resolves ``spark.jars.packages`` with Ivy on every start, which needs the network. We let
it resolve once into a cache directory of our own, record the jar files it fetched, and from
then on hand Spark those local files through ``spark.jars``, so later runs start offline.

``python -m leanscore.jobs.runtime.jars`` does the one-time resolution (``make`` runs it):
Delta, then ``org.apache.hadoop:hadoop-aws`` for the Hadoop version pyspark ships (``s3a://``
paths; the AWS SDK bundle it pulls is about 700 MB, so it is optional: ``--with-s3``, and a
local session resolves it on first use of an ``s3a://`` path), and Delta's Connect server plugin
where Maven Central serves one for this Spark/Delta pair (``--with-connect``).

Each set is resolved by a JVM of its own, in a child process: PySpark starts one JVM per Python
process and reuses it, so a second session built with new ``spark.jars.packages`` in the same
process resolves nothing.
"""

from __future__ import annotations

import json
import os
import re
from importlib.metadata import version
from pathlib import Path

JARS_RECORD = "jars.json"


def delta_coordinates() -> list[str]:
    """The Maven coordinates matching the installed pyspark and delta-spark."""
    import pyspark

    spark_major_minor = ".".join(pyspark.__version__.split(".")[:2])
    delta_version = version("delta-spark")
    # From Delta 4.1 on, the artifact names the Spark line it was built for (as delta-spark's
    # own configure_spark_with_delta_pip does); Delta 4.0.x has one artifact for Spark 4.0.
    delta_major_minor = tuple(int(p) for p in re.findall(r"\d+", delta_version)[:2])
    suffix = f"_{spark_major_minor}" if delta_major_minor >= (4, 1) else ""
    return [
        f"io.delta:delta-spark{suffix}_2.13:{delta_version}",
        f"io.delta:delta-storage:{delta_version}",
    ]


def spark_hadoop_version() -> str:
    """The Hadoop version of the client jars pyspark ships (``hadoop-client-api-<version>.jar``):
    S3A must match it exactly, whatever the Spark release notes say."""
    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    for jar in jars.glob("hadoop-client-api-*.jar"):
        return jar.name.removeprefix("hadoop-client-api-").removesuffix(".jar")
    raise RuntimeError(f"no hadoop-client-api jar in {jars}: this pyspark ships no Hadoop")


def hadoop_aws_coordinates() -> list[str]:
    """S3A (``s3a://``) for the Hadoop that pyspark ships; it brings the AWS SDK bundle."""
    return [f"org.apache.hadoop:hadoop-aws:{spark_hadoop_version()}"]


def delta_connect_coordinates() -> list[str]:
    """Delta's Spark Connect server plugin for the installed pyspark and delta-spark, named as
    Delta publishes its Spark-dependent artifacts (``_<spark major.minor>_2.13``)."""
    import pyspark

    spark_major_minor = ".".join(pyspark.__version__.split(".")[:2])
    return [f"io.delta:delta-connect-server_{spark_major_minor}_2.13:{version('delta-spark')}"]


def cache_root() -> Path:
    return Path(os.environ.get("LEANSCORE_CACHE", Path.home() / ".cache" / "leanscore"))


def _cache_dir(coordinates: list[str]) -> Path:
    tag = coordinates[0].split(":", 1)[1].replace(":", "-")
    return cache_root() / "jars" / tag


def cached_jars(coordinates: list[str] | None = None) -> list[str] | None:
    """Local jar paths from an earlier resolution, or None when not resolved yet."""
    coordinates = coordinates or delta_coordinates()
    record = _cache_dir(coordinates) / JARS_RECORD
    if not record.is_file():
        return None
    data = json.loads(record.read_text())
    jars = data.get("jars", [])
    if data.get("coordinates") != coordinates or not jars:
        return None
    if not all(Path(j).is_file() for j in jars):
        return None
    return jars


def resolve_jars(coordinates: list[str] | None = None) -> list[str]:
    """Resolve ``coordinates`` with Spark's own Ivy into the cache (network needed once)."""
    coordinates = coordinates or delta_coordinates()
    found = cached_jars(coordinates)
    if found:
        return found
    ivy_dir = _cache_dir(coordinates) / "ivy"
    _resolve_in_child(coordinates, ivy_dir)
    jars = _not_bundled_with_spark(sorted((ivy_dir / "jars").glob("*.jar")))
    if not jars:
        raise RuntimeError(
            f"Spark resolved no jars for {coordinates} into {ivy_dir}; check that Maven "
            "Central is reachable for this one-time set-up"
        )
    (_cache_dir(coordinates) / JARS_RECORD).write_text(
        json.dumps({"coordinates": coordinates, "jars": jars}, indent=2)
    )
    return jars


def _resolve_in_child(coordinates: list[str], ivy_dir: Path) -> None:
    """Let Spark's Ivy fetch ``coordinates`` into ``ivy_dir`` from a JVM started for this alone:
    in this process a JVM may already run (a session, an earlier resolution), and it would
    ignore the new ``spark.jars.packages``."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from pyspark.sql import SparkSession\n"
        "SparkSession.builder.master('local[1]').appName('leanscore-resolve-jars')"
        ".config('spark.jars.packages', sys.argv[1]).config('spark.jars.ivy', sys.argv[2])"
        ".config('spark.ui.enabled', 'false').getOrCreate().stop()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, ",".join(coordinates), str(ivy_dir)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise RuntimeError(
            f"resolving {coordinates} from Maven Central into {ivy_dir} failed "
            f"(exit {done.returncode}); this one-time set-up needs the network:\n{tail}"
        )


def _artifact_id(jar_name: str) -> str:
    """``org.apache.parquet_parquet-column-1.16.0.jar`` -> ``parquet-column``."""
    stem = jar_name.removesuffix(".jar").split("_", 1)[-1]
    return re.sub(r"-\d[\w.\-]*$", "", stem)


def _not_bundled_with_spark(jars: list[Path]) -> list[str]:
    """Drop the transitive jars that pyspark already ships (hadoop, parquet, jackson, log4j):
    Spark's own newer copies are the ones Delta is built against, and two versions of one
    library on the classpath is a bug waiting to happen."""
    import pyspark

    bundled = {_artifact_id(p.name) for p in (Path(pyspark.__file__).parent / "jars").glob("*.jar")}
    return [str(j) for j in jars if _artifact_id(j.name) not in bundled]


if __name__ == "__main__":
    import sys

    wanted = [delta_coordinates()]
    if "--with-s3" in sys.argv[1:]:
        wanted.append(hadoop_aws_coordinates())
    if "--with-connect" in sys.argv[1:]:
        wanted.append(delta_connect_coordinates())
    for coordinates in wanted:
        for jar in resolve_jars(coordinates):
            print(jar)
