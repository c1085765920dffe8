"""The decomposition picks the pairs that differ in one thing, and a target's "met" flag
follows its own ratio: true above the target, false below it (no Spark needed)."""

from __future__ import annotations

import pytest
from leanscore.bench.decompose import (
    BenchTargets,
    decompose,
    decomposition_rows,
    pairs,
)
from leanscore.bench.timing import breakdown
from leanscore.compression.evaluate import accuracy_interval


def variant(name, model, path, engine, rows_per_s, *, compressed=False, accuracy=0.95, monthly=0):
    return {
        "name": name,
        "model": model,
        "path": path,
        "engine": engine,
        "rows_per_s": rows_per_s,
        "compressed": compressed,
        "accuracy": accuracy,
        "monthly_usd": monthly or 1e6 / rows_per_s,
    }


def run(*, torch=100.0, onnx_pbu=120.0, spark_reader=200.0, scan=320.0, small=1300.0, acc=0.95):
    return [
        variant("torch-fp32/predict_batch_udf", "torch-fp32", "predict_batch_udf", "spark", torch),
        variant("onnx-fp32/predict_batch_udf", "onnx-fp32", "predict_batch_udf", "spark", onnx_pbu),
        variant(
            "onnx-fp32/leanscore-spark-reader", "onnx-fp32", "leanscore", "spark", spark_reader
        ),
        variant("onnx-fp32/leanscore", "onnx-fp32", "leanscore", "scan", scan),
        variant(
            "slow-int8/leanscore", "slow-int8", "leanscore", "scan", scan * 1.1, compressed=True
        ),
        variant(
            "small/leanscore", "small", "leanscore", "scan", small, compressed=True, accuracy=acc
        ),
    ]


def test_each_effect_pairs_the_variants_that_differ_in_one_thing():
    found = {k: (a["name"], b["name"]) for k, (a, b) in pairs(run()).items()}
    assert found == {
        "runtime": ("onnx-fp32/predict_batch_udf", "torch-fp32/predict_batch_udf"),
        "engine": ("onnx-fp32/leanscore-spark-reader", "onnx-fp32/predict_batch_udf"),
        "reader": ("onnx-fp32/leanscore", "onnx-fp32/leanscore-spark-reader"),
        "compression": ("small/leanscore", "onnx-fp32/leanscore"),
        "end_to_end": ("small/leanscore", "torch-fp32/predict_batch_udf"),
    }


def pbu_run(*, torch_batch: int, leanscore_batch: int, onnx_batches: list[int]) -> list[dict]:
    """A run whose predict_batch_udf variants ran at the given batches (ONNX at each of
    ``onnx_batches``), and leanscore at ``leanscore_batch``."""
    variants = run()
    for v in variants:
        v["batch_size"] = torch_batch if v["path"] == "predict_batch_udf" else leanscore_batch
    onnx = next(v for v in variants if v["name"] == "onnx-fp32/predict_batch_udf")
    onnx["batch_size"] = onnx_batches[0]
    for batch in onnx_batches[1:]:
        variants.insert(
            2,
            onnx
            | {
                "name": f"onnx-fp32/predict_batch_udf@{batch}",
                "batch_size": batch,
                "rows_per_s": 150,
            },
        )
    return variants


def test_engine_pair_takes_the_onnx_predict_batch_udf_at_leanscores_batch():
    """PyTorch's best batch is 256, leanscore's 4096: the runtime pair compares both models at
    256, the engine pair the ONNX model at 4096 with leanscore at 4096."""
    found = pairs(pbu_run(torch_batch=256, leanscore_batch=4096, onnx_batches=[256, 4096]))
    runtime, engine = found["runtime"], found["engine"]
    assert [v["name"] for v in runtime] == [
        "onnx-fp32/predict_batch_udf",
        "torch-fp32/predict_batch_udf",
    ]
    assert [v["batch_size"] for v in runtime] == [256, 256]
    assert [v["name"] for v in engine] == [
        "onnx-fp32/leanscore-spark-reader",
        "onnx-fp32/predict_batch_udf@4096",
    ]
    assert [v["batch_size"] for v in engine] == [4096, 4096]
    d = decompose(
        pbu_run(torch_batch=256, leanscore_batch=4096, onnx_batches=[256, 4096]), BenchTargets()
    )
    assert d["effects"]["engine"]["ratio"] == pytest.approx(200 / 150, rel=1e-3)
    assert d["effects"]["runtime"]["ratio"] == pytest.approx(1.2)
    rows = {r[0]: r for r in decomposition_rows(d)}
    assert rows["engine"][2:4] == [
        "onnx-fp32/leanscore-spark-reader (batch 4,096)",
        "onnx-fp32/predict_batch_udf@4096 (batch 4,096)",
    ]
    assert rows["runtime"][3] == "torch-fp32/predict_batch_udf (batch 256)"


def test_equal_batches_need_one_onnx_predict_batch_udf_for_both_pairs():
    found = pairs(pbu_run(torch_batch=4096, leanscore_batch=4096, onnx_batches=[4096]))
    assert (
        found["runtime"][0]["name"] == found["engine"][1]["name"] == ("onnx-fp32/predict_batch_udf")
    )


def test_engine_pair_refuses_an_onnx_predict_batch_udf_at_another_batch():
    """Without the ONNX model in predict_batch_udf at leanscore's batch the engine pair would
    differ in the batch too: it stays unmeasured (and not met), the runtime pair does not."""
    variants = pbu_run(torch_batch=256, leanscore_batch=4096, onnx_batches=[256])
    found = pairs(variants)
    assert found["engine"] is None and found["runtime"] is not None
    engine = decompose(variants, BenchTargets())["effects"]["engine"]
    assert engine["ratio"] is None and engine["met"] is False


def test_ratios_and_their_product():
    d = decompose(run(), BenchTargets())
    e = d["effects"]
    assert e["runtime"]["ratio"] == pytest.approx(1.2)
    assert e["engine"]["ratio"] == pytest.approx(200 / 120, rel=1e-3)
    assert e["reader"]["ratio"] == pytest.approx(1.6)
    assert e["compression"]["ratio"] == pytest.approx(1300 / 320, rel=1e-3)
    assert e["end_to_end"]["ratio"] == pytest.approx(13.0)
    assert d["product_of_parts"] == pytest.approx(13.0, rel=1e-2)
    assert e["runtime"]["met"] is None and e["reader"]["met"] is None  # no target of their own


def test_met_flags_pass_and_fail_on_their_own_ratio():
    good = decompose(run(), BenchTargets())["effects"]
    assert good["engine"]["met"] and good["compression"]["met"] and good["end_to_end"]["met"]
    # the engine below 1.5x: only the engine fails
    slow_engine = decompose(run(spark_reader=170.0), BenchTargets())["effects"]
    assert slow_engine["engine"]["met"] is False
    assert slow_engine["compression"]["met"] and slow_engine["end_to_end"]["met"]
    # compression below 4x, end to end below 8x
    weak = decompose(run(small=600.0), BenchTargets())["effects"]
    assert weak["compression"]["met"] is False and weak["end_to_end"]["met"] is False
    # fast enough but 1.5 points less accurate: the fast variant is over budget, so the
    # judged one is the slower compressed variant within it, which is short of 4x
    lossy = decompose(run(acc=0.935), BenchTargets())["effects"]["compression"]
    assert lossy["variant"] == "slow-int8/leanscore" and lossy["met"] is False
    assert lossy["fastest"] == "small/leanscore"
    rows = decomposition_rows(decompose(run(small=600.0), BenchTargets()))
    assert [r[5] for r in rows if r[0] == "compression"] == ["NOT met"]


def test_a_fast_variant_15_points_less_accurate_meets_no_target():
    """The fastest variant is 13x PyTorch but 15 points less accurate: neither the speed
    targets nor the bill may come out met on it, and the report names who was judged."""
    variants = run(acc=0.80)
    variants[0]["monthly_usd"] = 1000.0
    variants[-1]["monthly_usd"] = 100.0  # the lossy variant's bill alone would meet 0.25
    d = decompose(variants, BenchTargets())
    e2e, comp, bill = d["effects"]["end_to_end"], d["effects"]["compression"], d["monthly_bill"]
    assert e2e["fastest"] == comp["fastest"] == "small/leanscore"
    assert e2e["variant"] != "small/leanscore" and e2e["within_budget"] is True
    assert e2e["met"] is False and comp["met"] is False and bill["met"] is False
    assert bill["variant"] != "small/leanscore"
    assert e2e["most_accurate"] != "small/leanscore"
    # the same run with only the lossy variant compressed: judged, over budget, NOT met
    only = [v for v in variants if v["name"] != "slow-int8/leanscore"]
    comp = decompose(only, BenchTargets())["effects"]["compression"]
    assert comp["variant"] == "small/leanscore" and comp["ratio"] > 4
    assert comp["within_budget"] is False and comp["met"] is False
    rows = decomposition_rows(decompose(only, BenchTargets()))
    assert [r[5] for r in rows if r[0] == "compression"][0].startswith("NOT met (accuracy")
    # and the same variant within budget meets both
    fine = decompose(run(acc=0.95), BenchTargets())["effects"]
    assert fine["end_to_end"]["met"] and fine["compression"]["met"]


def test_without_labels_the_budget_is_agreement_and_unmeasured_quality_fails():
    from leanscore.bench.decompose import within_budget

    base = {"name": "base", "accuracy": None}
    t = BenchTargets()
    ok, why = within_budget({"accuracy": None, "fidelity": {"agreement": 0.995}}, base, t)
    assert ok and "agreement" in why
    assert not within_budget({"accuracy": None, "fidelity": {"agreement": 0.97}}, base, t)[0]
    assert not within_budget({"accuracy": None, "fidelity": {"cosine_mean": 0.95}}, base, t)[0]
    assert within_budget({"accuracy": None, "fidelity": {"cosine_mean": 0.995}}, base, t)[0]
    assert within_budget({"accuracy": None, "fidelity": None}, base, t) == (
        False,
        "quality not measured",
    )


def test_monthly_bill_target_is_the_bill_not_the_speed_ratio():
    variants = run()
    variants[0]["monthly_usd"] = 1000.0
    variants[-1]["monthly_usd"] = 300.0  # 13x faster, but fixed costs keep the bill at 30%
    bill = decompose(variants, BenchTargets())["monthly_bill"]
    assert bill["ratio"] == pytest.approx(0.3) and bill["met"] is False
    variants[-1]["monthly_usd"] = 200.0
    assert decompose(variants, BenchTargets())["monthly_bill"]["met"] is True


def test_a_missing_variant_leaves_its_effect_unmeasured_and_not_met():
    variants = [v for v in run() if v["name"] != "onnx-fp32/leanscore-spark-reader"]
    e = decompose(variants, BenchTargets())["effects"]
    assert e["engine"]["ratio"] is None and e["engine"]["met"] is False
    assert e["reader"]["ratio"] is None


def test_wilson_interval_on_450_distinct_images():
    low, high = accuracy_interval(0.95, 450)
    # by hand: centre (p + z²/2n) / (1 + z²/n), half-width z √(p(1-p)/n + z²/4n²) / (1 + z²/n)
    assert low == pytest.approx(0.92578, abs=2e-5) and high == pytest.approx(0.96660, abs=2e-5)
    assert accuracy_interval(None, 450) is None


def test_breakdown_shares_add_up_and_spark_is_the_rest():
    t = breakdown(
        {"read_s": 2.0, "model_s": 5.0, "python_s": 8.0, "between_s": 0.0},
        wall_s=5.0,
        cores=2,
        rows=1000,
    )
    assert (t["read_s"], t["model_s"], t["convert_s"], t["spark_s"]) == (2.0, 5.0, 1.0, 2.0)
    assert sum(t["shares"].values()) == pytest.approx(1.0)
    # predict_batch_udf: reading from the read-only pass per row, capped at its gaps
    pbu = breakdown(
        {"read_s": 0.0, "model_s": 4.0, "python_s": 0.0, "between_s": 3.0},
        wall_s=5.0,
        cores=2,
        rows=1000,
        read_s_per_row=0.001,
    )
    assert (pbu["read_s"], pbu["convert_s"], pbu["spark_s"]) == (1.0, 2.0, 3.0)
    # reading is capped at what the model left of the core-seconds
    capped = breakdown(
        {"read_s": 0.0, "model_s": 9.0, "python_s": 0.0, "between_s": 0.0},
        wall_s=5.0,
        cores=2,
        rows=1000,
        read_s_per_row=0.01,
    )
    assert (capped["read_s"], capped["convert_s"], capped["spark_s"]) == (1.0, 0.0, 0.0)


def test_noise_band_is_the_measured_intervals_half_width_not_a_worst_case():
    """At 97% on 450 distinct images the Wilson interval spans about +-1.5 points; the report
    says so instead of the worst case at 50% (4.6 points), which overstated the noise."""
    from leanscore.bench.report import _half_width_points
    from leanscore.compression.evaluate import accuracy_interval

    variants = [
        {"accuracy_interval": accuracy_interval(0.9737, 450)},
        {"accuracy_interval": accuracy_interval(0.9740, 450)},
        {"accuracy_interval": None},
    ]
    assert 1.3 < _half_width_points(variants) < 1.7
    assert _half_width_points([{"accuracy_interval": None}]) is None


def test_predict_batch_udf_model_clock_counts_every_job_on_reused_workers(spark):
    """predict_batch_udf reuses its predict function across tasks and jobs on a worker; the
    model seconds of a later job must still reach the driver (they read 0% before)."""
    import numpy as np
    from leanscore.bench.timing import TaskClock, timed_predict_fn
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType

    def make_predict_fn():
        def predict(x):
            total = 0.0
            for _ in range(200):  # measurable work per call
                total += float(np.square(x).sum())
            return x[:, 0] * 0 + total

        return predict

    df = spark.range(4_000, numPartitions=2).select(F.array(F.col("id").cast("float")).alias("x"))
    clock = TaskClock.create(spark)
    udf = predict_batch_udf(
        timed_predict_fn(make_predict_fn, clock),
        return_type=DoubleType(),
        batch_size=100,
        input_tensor_shapes=[[1]],
    )
    frame = df.select(udf("x").alias("y"))
    seconds, before = [], 0.0
    for _ in range(3):  # the same frame in three jobs, as the bench's rounds run it
        frame.write.format("noop").mode("overwrite").save()
        now = clock.values()["model_s"]
        seconds.append(now - before)
        before = now
    assert all(s > 0 for s in seconds), seconds


def test_over_measured_time_is_printed_and_the_shares_show_it():
    """Clocks that add up to more than the cores had: Spark's rest is clamped at 0, so the
    excess is stated (seconds and share) rather than hidden under a 100% bar."""
    from leanscore.bench.report import over_measured_lines

    t = breakdown(
        {"read_s": 4.0, "model_s": 5.0, "python_s": 11.0, "between_s": 0.0},
        wall_s=5.0,
        cores=2,
        rows=1000,
    )
    assert t["spark_s"] == 0.0 and t["over_measured_s"] == 1.0
    assert t["over_measured_share"] == pytest.approx(0.1)
    assert sum(t["shares"].values()) == pytest.approx(1.1)
    lines = over_measured_lines([{"name": "v", "time_breakdown": t}])
    assert any("1.00 s (10.0%)" in line and "110%" in line for line in lines)
    fits = breakdown(
        {"read_s": 2.0, "model_s": 5.0, "python_s": 8.0, "between_s": 0.0},
        wall_s=5.0,
        cores=2,
        rows=1000,
    )
    assert over_measured_lines([{"name": "v", "time_breakdown": fits}]) == []
