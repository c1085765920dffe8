"""How model bytes reach the executors.

- classic Spark (a SparkContext exists): ``sc.broadcast``, fetched once per executor;
- Spark Connect / Databricks serverless (no SparkContext): the bytes ride in the UDF closure;
- models above ``path_threshold_bytes``: a path every executor can read (DBFS, a volume, NFS).

Whichever way, the executor checks the sha256 before it builds a session.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leanscore.compression.artifact import Artifact, verify_sha256

DEFAULT_PATH_THRESHOLD_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class ModelSource:
    """A picklable handle to one model's bytes, resolved on the executor."""

    name: str
    sha256: str
    how: str  # "broadcast" | "closure" | "path"
    broadcast: Any = None
    data: bytes | None = None
    path: str | None = None

    def load(self) -> bytes:
        if self.how == "broadcast":
            data = self.broadcast.value
        elif self.how == "closure":
            data = self.data
        else:
            data = Path(self.path).read_bytes()
        verify_sha256(data, self.sha256, source=f"model {self.name!r} ({self.how})")
        return data


def is_connect(spark) -> bool:
    """True on Spark Connect (Databricks serverless too), where there is no SparkContext.

    A Connect session is an instance of a class in ``pyspark.sql.connect.session``, so where
    that module was never imported the session is a classic one: importing it only to ask
    (gRPC and protobuf, about 0.25 s) would slow every classic job's start."""
    connect = sys.modules.get("pyspark.sql.connect.session")
    return connect is not None and isinstance(spark, connect.SparkSession)


def distribute(
    spark,
    artifact: Artifact,
    *,
    path_threshold_bytes: int = DEFAULT_PATH_THRESHOLD_BYTES,
) -> ModelSource:
    manifest = artifact.manifest
    if manifest.model_bytes > path_threshold_bytes:
        return ModelSource(manifest.name, manifest.sha256, "path", path=str(artifact.model_path))
    data = artifact.read_model_bytes()
    if not is_connect(spark):
        return ModelSource(
            manifest.name,
            manifest.sha256,
            "broadcast",
            broadcast=spark.sparkContext.broadcast(data),
        )
    return ModelSource(manifest.name, manifest.sha256, "closure", data=data)
