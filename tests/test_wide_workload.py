"""The wide workload (the model-bound bench): its generated rows are deterministic, the rows
the bench scores are disjoint from every row a recipe trains, calibrates or is gated on, its
config runs autotune, and the decomposition pairs its variants and fails a short ratio."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from leanscore.bench.compare import BenchConfig
from leanscore.bench.decompose import BenchTargets, decompose, decomposition_rows, pairs
from leanscore.bench.prepare import AutotuneCandidates
from leanscore.bench.wide_data import (
    BLOCK_ROWS,
    WIDE_CLASSES,
    WIDE_FEATURES,
    wide_rows,
    wide_sample,
)
from leanscore.jobs.config import ConfigError, load_config, packaged_config, validate


def _hashes(features: np.ndarray) -> set[bytes]:
    return {hashlib.sha1(row.tobytes()).digest() for row in features}


def test_rows_are_a_function_of_seed_split_and_index():
    x, y = wide_rows("table", 0, 2 * BLOCK_ROWS + 100)
    assert x.shape == (2 * BLOCK_ROWS + 100, WIDE_FEATURES) and x.dtype == np.float32
    assert set(np.unique(y)) == set(range(WIDE_CLASSES))
    # any slice, made alone (as a Spark task makes it), equals the same rows of the whole
    start, stop = BLOCK_ROWS - 7, 2 * BLOCK_ROWS + 3
    xs, ys = wide_rows("table", start, stop)
    assert np.array_equal(xs, x[start:stop]) and np.array_equal(ys, y[start:stop])
    again, _ = wide_rows("table", 0, 50)
    assert np.array_equal(again, x[:50])
    other_seed, _ = wide_rows("table", 0, 50, seed=1)
    assert not np.array_equal(other_seed, x[:50])
    assert wide_rows("table", 10, 10)[0].shape == (0, WIDE_FEATURES)
    with pytest.raises(ValueError, match="split must be one of"):
        wide_rows("test", 0, 10)


def test_scored_rows_are_disjoint_from_training_calibration_and_gate_rows():
    # train_wide_model trains, distils and calibrates on "train" and gates on "evaluation";
    # the bench's table is "table"
    train = wide_sample("train", 16_384)
    gate = wide_sample("evaluation", 5_000)
    table, _ = wide_rows("table", 0, 20_000)
    train_h, gate_h, table_h = _hashes(train.features), _hashes(gate.features), _hashes(table)
    assert len(table_h) == 20_000 and len(gate_h) == 5_000  # no repeated row within a split
    assert not table_h & train_h and not table_h & gate_h and not gate_h & train_h
    assert gate.source["distinct_examples"] == 5_000 and gate.source["split"] == "evaluation"


def test_the_table_spark_writes_is_the_table_stream(spark):
    from leanscore.bench.demo.datagen import wide_frame

    df = wide_frame(spark, 3_000, partitions=3).orderBy("row_id").toPandas()
    expected, labels = wide_rows("table", 0, 3_000)
    assert df["row_id"].tolist() == list(range(3_000))
    assert np.array_equal(np.stack(df["features"].to_list()).astype(np.float32), expected)
    assert np.array_equal(df["label"].to_numpy(), labels)


def test_wide_config_autotunes_one_artifact_with_its_targets():
    config = load_config(BenchConfig, packaged_config("bench-wide.yaml"))
    assert config.workload == "wide-mlp" and config.prepare.workload == "wide"
    assert config.torch_model.factory == "leanscore.bench.wide_model.wide_mlp"
    fp32, tuned = config.prepare.recipes
    assert fp32 == "wide-mlp-fp32.yaml" and isinstance(tuned, AutotuneCandidates)
    assert len(tuned.candidates) >= 3 and len(config.artifacts) == 2
    t = config.targets
    assert (t.compression_x, t.accuracy_drop_points, t.end_to_end_x) == (4.0, 1.0, 8.0)
    assert config.distinct_examples is None  # every generated row is an independent draw
    from leanscore.bench.wide_model import wide_mlp
    from leanscore.compression.models import count_params

    assert count_params(wide_mlp()) > 3_000_000


def test_rows_of_another_width_come_from_the_same_streams():
    x, y = wide_rows("table", 0, BLOCK_ROWS + 10, features=128)
    assert x.shape == (BLOCK_ROWS + 10, 128) and x.dtype == np.float32
    assert np.array_equal(y, wide_rows("table", 0, BLOCK_ROWS + 10)[1])  # the same labels
    part, _ = wide_rows("table", BLOCK_ROWS - 3, BLOCK_ROWS + 10, features=128)
    assert np.array_equal(part, x[BLOCK_ROWS - 3 :])
    assert wide_sample("evaluation", 20, features=128).source["features"] == 128
    with pytest.raises(ValueError, match="features must be positive"):
        wide_rows("table", 0, 10, features=0)


def test_the_user_model_config_trains_what_its_factory_builds():
    import importlib

    from leanscore.bench.wide_model import wide_mlp

    config = load_config(BenchConfig, packaged_config("bench-user-mlp.yaml"))
    module, _, name = config.torch_model.factory.rpartition(".")
    built = getattr(importlib.import_module(module), name)()
    trained = wide_mlp(config.prepare.hidden, config.prepare.features)
    shapes = {k: tuple(v.shape) for k, v in built.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in trained.state_dict().items()}
    assert shapes["body.0.weight"] == (1024, 128) and shapes["head.weight"] == (10, 512)


def test_the_wide_shape_is_refused_for_other_workloads():
    from leanscore.bench.prepare import PrepareConfig

    PrepareConfig(workload="wide", rows=10, recipes=["a.yaml"], features=128, hidden=[64])
    with pytest.raises(ValueError, match="workload 'digits' takes neither"):
        PrepareConfig(workload="digits", rows=10, recipes=["a.yaml"], features=128)
    with pytest.raises(ValueError, match="greater than 0"):
        PrepareConfig(workload="wide", rows=10, recipes=["a.yaml"], hidden=[64, 0])


def test_a_bad_autotune_entry_and_an_oversized_torch_batch_are_refused():
    base = load_config(BenchConfig, packaged_config("bench-wide.yaml")).model_dump()
    bad = {**base, "prepare": {**base["prepare"], "recipes": [{"candidate": ["x.yaml"]}]}}
    with pytest.raises(ConfigError, match="AutotuneCandidates.candidates: Field required"):
        validate(BenchConfig, bad, source="bench-wide.yaml")
    big = {**base, "torch_batch_sizes": [256, 20_000]}
    with pytest.raises(ConfigError, match=r"torch_batch_sizes: \[20000\] must be between"):
        validate(BenchConfig, big, source="bench-wide.yaml")


def _wide_run(*, torch=8_000.0, onnx_pbu=9_000.0, reader=10_000.0, scan=11_000.0, tuned=90_000.0):
    def v(name, model, path, engine, rows_per_s, compressed=False, accuracy=0.955):
        return {
            "name": name,
            "model": model,
            "path": path,
            "engine": engine,
            "rows_per_s": rows_per_s,
            "compressed": compressed,
            "accuracy": accuracy,
            "monthly_usd": 1e6 / rows_per_s,
        }

    return [
        v("torch-fp32/predict_batch_udf", "torch-fp32", "predict_batch_udf", "spark", torch),
        v("onnx-fp32/predict_batch_udf", "onnx-fp32", "predict_batch_udf", "spark", onnx_pbu),
        v("onnx-fp32/leanscore-spark-reader", "onnx-fp32", "leanscore", "spark", reader),
        v("onnx-fp32/leanscore", "onnx-fp32", "leanscore", "scan", scan),
        v("wide-mlp-distilled-int8/leanscore", "wide-mlp-distilled-int8", "leanscore", "scan",
          tuned, compressed=True, accuracy=0.951),
    ]  # fmt: skip


def test_decomposition_pairs_the_wide_variants():
    found = {k: (a["name"], b["name"]) for k, (a, b) in pairs(_wide_run()).items()}
    assert found == {
        "runtime": ("onnx-fp32/predict_batch_udf", "torch-fp32/predict_batch_udf"),
        "engine": ("onnx-fp32/leanscore-spark-reader", "onnx-fp32/predict_batch_udf"),
        "reader": ("onnx-fp32/leanscore", "onnx-fp32/leanscore-spark-reader"),
        "compression": ("wide-mlp-distilled-int8/leanscore", "onnx-fp32/leanscore"),
        "end_to_end": ("wide-mlp-distilled-int8/leanscore", "torch-fp32/predict_batch_udf"),
    }
    effects = decompose(_wide_run(), BenchTargets())["effects"]
    assert effects["compression"]["ratio"] == pytest.approx(90_000 / 11_000, rel=1e-3)
    assert effects["compression"]["accuracy_drop_points"] == pytest.approx(0.4)
    assert effects["compression"]["met"] and effects["end_to_end"]["met"]


def test_wide_targets_fail_on_short_ratios():
    # compression 3.6x (< 4x) and end to end 5x (< 8x): both flags false, printed NOT met
    slow = decompose(_wide_run(tuned=40_000.0), BenchTargets())
    assert slow["effects"]["compression"]["ratio"] == pytest.approx(40 / 11, rel=1e-3)
    assert slow["effects"]["compression"]["met"] is False
    assert slow["effects"]["end_to_end"]["met"] is False
    met = {r[0]: r[5] for r in decomposition_rows(slow)}
    assert met["compression"] == "NOT met" and met["end_to_end"] == "NOT met"


def test_pytorch_batch_is_the_fastest_measured_size():
    import io

    import torch
    from leanscore.bench.compare import sweep_torch_batch_size
    from leanscore.bench.paths import TorchModel
    from leanscore.compression.models import digits_mlp

    buffer = io.BytesIO()
    torch.save(digits_mlp().state_dict(), buffer)
    model = TorchModel("leanscore.compression.models.digits_mlp", buffer.getvalue())
    matrix = np.random.default_rng(0).random((4_096, 64), dtype=np.float32)
    threads = torch.get_num_threads()
    sweep = sweep_torch_batch_size(model, matrix, [8, 512, 2_048])
    speeds = sweep["rows_per_s_by_size"]
    assert set(speeds) == {"8", "512", "2048"} and all(v > 0 for v in speeds.values())
    assert speeds[str(sweep["chosen"])] == max(speeds.values())
    assert sweep["rows"] == 4_096 and torch.get_num_threads() == threads
