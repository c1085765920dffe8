"""Scoring on Spark Connect (``SparkSession.builder.remote("local[2]")``), where there is no
SparkContext: the model bytes must ride in the UDF closure.

The local Connect server lives in the JVM of the process that starts it, which would clash with
the classic session the other tests share, so the Connect side runs in a child process (this
file, run as a script). It scores an in-memory DataFrame and a Parquet file (through Spark's
reader and through the scan engine); Delta is not used
on Connect here (the local server is started without the Delta jars).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

pytestmark = pytest.mark.spark

ROOT = Path(__file__).resolve().parents[1]


def test_scoring_on_spark_connect(artifact, digits, tmp_path):
    out = tmp_path / "result.json"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    env.pop("SPARK_REMOTE", None)
    proc = subprocess.run(
        [sys.executable, __file__, str(artifact.path), str(tmp_path), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())

    _, held_out = digits
    expected = ort.InferenceSession(artifact.read_model_bytes()).run(
        None, {"features": held_out.features[:60]}
    )[0]
    assert result["has_spark_context"] is False
    assert result["model_travels"] == "closure"
    for name in ("arrow", "pandas", "parquet", "scan"):
        np.testing.assert_array_equal(result[name]["prediction"], expected.argmax(1))
        np.testing.assert_allclose(result[name]["probability"], expected.max(1), rtol=1e-6)
    assert result["arrow"] == result["pandas"] == result["scan"]
    assert result["flagged_error"] == "column 'features' has 3 elements, the model expects 64"


def _connect_main(artifact_path: str, workdir: str, out: str) -> None:
    import pandas as pd
    from leanscore.compression.artifact import Artifact
    from leanscore.compression.data import digits_splits
    from leanscore.jobs.runtime.spark import local_connect_session
    from leanscore.udfs import model_udf, score_dataframe, score_table
    from leanscore.udfs.distribution import is_connect

    spark = local_connect_session("local[2]")
    artifact = Artifact.load(artifact_path)
    _, held_out = digits_splits()
    pdf = pd.DataFrame({"row_id": range(60), "features": list(held_out.features[:60])})
    df = spark.createDataFrame(pdf, "row_id long, features array<float>")

    def collect(frame) -> dict:
        rows = frame.orderBy("row_id").toPandas()
        return {
            "prediction": rows["prediction"].tolist(),
            "probability": rows["probability"].astype(float).tolist(),
        }

    parquet = str(Path(workdir) / "in.parquet")
    df.write.mode("overwrite").parquet(parquet)
    predict = model_udf(artifact, spark=spark)
    pandas_path = df.select(
        "row_id",
        predict("features")["label"].alias("prediction"),
        predict("features")["probability"].alias("probability"),
    )
    bad = spark.createDataFrame([(999, [1.0, 2.0, 3.0])], "row_id long, features array<float>")
    flagged = score_dataframe(bad, artifact, key_columns=["row_id"], bad_rows="flag").first()
    result = {
        "has_spark_context": not is_connect(spark),
        "model_travels": predict.scorer.source.how,
        "arrow": collect(score_dataframe(df, artifact, key_columns=["row_id"], engine="arrow")),
        "pandas": collect(pandas_path),
        "parquet": collect(score_dataframe(spark.read.parquet(parquet), artifact)),
        "scan": collect(score_table(spark, parquet, artifact, format="parquet", engine="scan")),
        "flagged_error": flagged["prediction_error"],
    }
    Path(out).write_text(json.dumps(result))
    spark.stop()


if __name__ == "__main__":
    _connect_main(*sys.argv[1:4])


def test_asking_whether_a_classic_session_is_connect_loads_no_connect_client(spark):
    probe = (
        "import sys; from leanscore.udfs.distribution import is_connect; "
        "from pyspark.sql import SparkSession; "
        "print(is_connect(SparkSession.__new__(SparkSession)), "
        "'pyspark.sql.connect.session' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    from leanscore.udfs.distribution import is_connect

    assert not is_connect(spark)  # this process may hold the Connect client: still classic
