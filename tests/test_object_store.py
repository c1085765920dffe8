"""Tables on an object store: a real S3-compatible server (moto) on loopback, Spark's S3A
reading and writing Delta through ``s3a://``, and the scan engine reading the same objects with
pyarrow from the settings Spark reads them with; where it cannot, ``auto`` falls back to Spark's
reader and ``scan`` says why."""

from __future__ import annotations

import uuid

import pandas as pd
import pytest
from conftest import held_out_frame
from leanscore.jobs.score import ScoreConfig, run_score
from leanscore.udfs import score_dataframe
from leanscore.udfs.api import score_table
from leanscore.udfs.engines.scan import ScanUnsupported
from leanscore.udfs.storage import StoreUnsupported, store_access
from pyspark.testing import assertDataFrameEqual


def _bucket(s3) -> str:
    name = f"leanscore-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def test_nightly_job_scores_s3_delta_into_s3_delta_with_scan_and_spark_reader(
    spark, s3, digits, artifact
):
    bucket = _bucket(s3)
    src = f"s3a://{bucket}/in"
    held_out_frame(spark, digits, n=150).repartition(2).write.format("delta").save(src)
    outputs = {}
    for engine in ("scan", "arrow"):
        out = f"s3a://{bucket}/out-{engine}"
        config = ScoreConfig.model_validate(
            {
                "artifact": str(artifact.path),
                "input": {"path": src, "format": "delta"},
                "output": {"path": out, "format": "delta"},
                "key_columns": ["row_id"],
                "passthrough_columns": ["label"],
                "engine": engine,
            }
        )
        summary = run_score(spark, config, "2026-11-30")
        assert summary["engine"] == engine
        outputs[engine] = (
            spark.read.format("delta").load(out).drop("scored_at").orderBy("row_id").toPandas()
        )
    assert len(outputs["scan"]) == 150
    pd.testing.assert_frame_equal(outputs["scan"], outputs["arrow"])
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="out-scan/_delta_log/")
    assert listed["KeyCount"] > 0  # the output really is on the store


def test_scan_takes_spark_s3a_settings(spark, s3):
    access = store_access(spark, "s3a://some-bucket/t")
    options = dict(access.s3)
    assert options["endpoint_override"].startswith("127.0.0.1:")
    assert options["scheme"] == "http" and options["access_key"] == "leanscore-test"
    assert options["force_virtual_addressing"] is False  # path style, as Spark is set
    assert "leanscore-test-secret" not in repr(access)


def test_store_pyarrow_cannot_open_falls_back_in_auto_and_fails_under_scan(
    spark, s3, digits, artifact
):
    bucket = _bucket(s3)
    path = f"s3a://{bucket}/t"
    held_out_frame(spark, digits, n=40).write.format("delta").save(path)
    # Spark reads this bucket with credentials from a provider the scan cannot hand to pyarrow.
    provider = f"fs.s3a.bucket.{bucket}.aws.credentials.provider"
    spark.conf.set(provider, "org.apache.hadoop.fs.s3a.AnonymousAWSCredentialsProvider")
    try:
        with pytest.raises(ScanUnsupported, match=f"Spark reads s3a://{bucket} with credentials"):
            score_table(spark, path, artifact, engine="scan")
        reasons: list[str] = []
        scored = score_table(spark, path, artifact, on_fallback=reasons.append)
        assert len(reasons) == 1 and "AnonymousAWSCredentialsProvider" in reasons[0]
        reference = score_dataframe(spark.read.format("delta").load(path), artifact)
        assertDataFrameEqual(scored, reference)
    finally:
        spark.conf.unset(provider)


@pytest.mark.parametrize(
    "uri", ["abfss://c@acct.dfs.core.windows.net/t", "gs://bucket/t", "hdfs://nn/t"]
)
def test_other_stores_are_left_to_spark_with_the_reason(spark, uri):
    scheme = uri.split("://")[0]
    with pytest.raises(StoreUnsupported, match=f"{scheme}:// is read by Spark"):
        store_access(spark, uri)
