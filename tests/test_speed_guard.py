"""The speed guard fails when leanscore gets slower: on a small model-bound workload, ratios of
variants timed in the same interleaved rounds (medians), no absolute time. Its own test shows
it can fail: a "compressed" model made deliberately slow (twice as wide, so four times the work,
in the same float kernels as the fp32 model) does not pass the compression check on any CPU.
An int8 model of four times the work is no test: on a CPU with VNNI it ran 1.30x the fp32
model and passed the check."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_artifact
from leanscore.bench.guard import speed_guard
from leanscore.compression.data import digits_splits

pytestmark = pytest.mark.spark

ROWS = 30_000
INT8 = [{"step": "export"}, {"step": "quantize", "mode": "dynamic_int8", "per_channel": True}]


def _mlp(hidden: int) -> torch.nn.Module:
    """A model-bound MLP on the digits' 64 features (the weights need not be trained to time
    the kernels)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(64, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, 10),
    ).eval()


@pytest.fixture(scope="module")
def workload(spark, tmp_path_factory):
    out = tmp_path_factory.mktemp("guard")
    model = _mlp(1024)
    fp32 = make_artifact(model, out / "fp32", name="guard-fp32")
    int8 = make_artifact(model, out / "int8", name="guard-int8", recipe_steps=INT8)
    # the deliberately slow model: twice as wide, so four times the work in the same kernels
    slow = make_artifact(_mlp(2048), out / "slow", name="guard-slow-fp32")
    # real digits rows, the ones the artifacts' input range was calibrated on: none is out of
    # range, so no row is scored alone
    train, _ = digits_splits()
    features = np.resize(train.features, (ROWS, 64))
    path = str(out / "table")
    rows = pd.DataFrame({"row_id": np.arange(ROWS), "features": list(features)})
    spark.createDataFrame(rows).repartition(2).write.parquet(path)
    df = spark.read.parquet(path)
    return df, fp32, int8, slow


def test_compressed_and_arrow_path_keep_their_lead(workload):
    df, fp32, int8, _ = workload
    result = speed_guard(df, fp32, int8, keep=["row_id"], rounds=5)
    checks = result["checks"]
    assert checks["compressed_vs_fp32"]["passed"], result
    assert checks["fp32_vs_predict_batch_udf"]["passed"], result
    assert result["passed"]


def test_the_guard_fails_on_a_deliberately_slow_kernel(workload):
    df, fp32, _, slow = workload
    result = speed_guard(df, fp32, slow, keep=["row_id"], rounds=3)
    assert result["checks"]["compressed_vs_fp32"]["passed"] is False, result
    assert result["passed"] is False


def test_each_check_passes_at_its_floor_and_fails_under_it():
    from leanscore.bench.guard import _check

    assert _check([0.70, 0.75, 0.90], 0.75)["passed"]  # the median is the floor
    failed = _check([0.60, 0.74, 1.30], 0.75)
    assert not failed["passed"] and failed["median"] == 0.74
