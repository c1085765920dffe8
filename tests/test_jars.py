"""Set-up from an empty jar cache: one command resolves every jar set the tests need.

Each set (Delta; S3A with its AWS SDK) must be resolved by a JVM of its own: PySpark reuses the
JVM it started first, so a second set resolved in the same process used to come back empty.
The test starts from a leanscore cache with no resolved jars and no records; only Ivy's own
download cache is linked in from the real cache, so the run does not fetch ~750 MB again."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest
from leanscore.jobs.runtime.jars import (
    JARS_RECORD,
    cache_root,
    cached_jars,
    delta_coordinates,
    hadoop_aws_coordinates,
)

pytestmark = pytest.mark.spark


@pytest.fixture
def empty_cache():
    """A fresh leanscore cache on the real cache's file system (so Ivy's downloads can be
    hard-linked in), removed afterwards."""
    real = cache_root()
    fresh = real / f"test-empty-{uuid.uuid4().hex[:8]}"
    for coordinates in (delta_coordinates(), hadoop_aws_coordinates()):
        tag = coordinates[0].split(":", 1)[1].replace(":", "-")
        downloads = real / "jars" / tag / "ivy" / "cache"
        if downloads.is_dir():
            target = fresh / "jars" / tag / "ivy" / "cache"
            target.parent.mkdir(parents=True)
            subprocess.run(["cp", "-al", str(downloads), str(target)], check=True)
    yield fresh
    shutil.rmtree(fresh, ignore_errors=True)


def test_one_command_resolves_delta_and_s3a_into_an_empty_cache(empty_cache, monkeypatch):
    monkeypatch.setenv("LEANSCORE_CACHE", str(empty_cache))
    assert cached_jars(delta_coordinates()) is None
    assert cached_jars(hadoop_aws_coordinates()) is None

    done = subprocess.run(
        [sys.executable, "-m", "leanscore.jobs.runtime.jars", "--with-s3"],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for coordinates, artifact in (
        (delta_coordinates(), "delta-spark"),
        (hadoop_aws_coordinates(), "hadoop-aws"),
    ):
        jars = cached_jars(coordinates)
        assert jars, f"{coordinates} not resolved"
        assert any(artifact in os.path.basename(j) for j in jars)
        assert all(j.startswith(str(empty_cache)) for j in jars)
    records = list(empty_cache.glob(f"jars/*/{JARS_RECORD}"))
    assert len(records) == 2
    assert all(json.loads(r.read_text())["jars"] for r in records)
