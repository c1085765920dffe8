"""The images workload on real photos: Fashion-MNIST (Debian's dataset-fashion-mnist) read
from its idx files into Delta tables of PNG bytes; a small slice of it (2,000 training images)
trains the VGG-style baseline, each of the seed's techniques compresses it through
``leanscore compress`` (and autotune picks among two), and ``leanscore score`` scores test
images with bad ones among them (another mode, 16-bit, truncated, a decompression bomb): each
flagged with its reason, or failing the job under ``bad_rows: fail``, and no other row's
prediction changed."""

from __future__ import annotations

import gzip
import io
import json
import zlib

import numpy as np
import pytest
import yaml
from leanscore.bench.fashion_data import (
    CLASSES,
    FASHION_DIR,
    holdout_mask,
    load_split,
    read_idx,
)
from leanscore.compression.artifact import Artifact, ImageSpec
from leanscore.compression.image_inputs import MAX_PIXELS, decode_images
from leanscore.jobs.config import packaged_config
from PIL import Image
from reliability_support import run_cli, write_yaml

pytestmark = pytest.mark.skipif(
    not FASHION_DIR.is_dir(),
    reason="Debian's dataset-fashion-mnist is not installed (make setup installs it)",
)
SPEC = ImageSpec(channels=1, height=28, width=28, mean=[0.286], std=[0.353], convert=False)
RUN_DATE = "2026-12-01"


# --- the data set, without Spark ---------------------------------------------------------------


def test_idx_files_hold_the_published_split():
    train_x, train_y = load_split("train")
    test_x, test_y = load_split("test")
    assert train_x.shape == (60_000, 28, 28) and test_x.shape == (10_000, 28, 28)
    assert train_x.dtype == np.uint8 and train_y.dtype == np.int64
    assert np.bincount(train_y).tolist() == [6_000] * len(CLASSES)  # balanced, as published
    assert np.bincount(test_y).tolist() == [1_000] * len(CLASSES)
    held = holdout_mask(60_000, 6_000)
    assert held.sum() == 6_000 and np.array_equal(held, holdout_mask(60_000, 6_000))
    assert not np.array_equal(held, holdout_mask(60_000, 6_000, seed=1))


def test_a_truncated_or_missing_idx_file_is_named(tmp_path):
    raw = gzip.decompress((FASHION_DIR / "t10k-labels-idx1-ubyte.gz").read_bytes())
    cut = tmp_path / "cut.gz"
    cut.write_bytes(gzip.compress(raw[:-10]))
    with pytest.raises(ValueError, match=rf"{cut} holds 9990 bytes for dimensions \(10000,\)"):
        read_idx(cut)
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist package"):
        read_idx(tmp_path / "absent.gz")


# --- bad images, without Spark -----------------------------------------------------------------


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def bomb_png(side: int = 10_000) -> bytes:
    """A real side x side grayscale PNG of zeros: about 100 KB that decode to 100 MB."""
    head = b"\x89PNG\r\n\x1a\n"

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    ihdr = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])  # 8-bit grayscale
    packer = zlib.compressobj(9)
    row = bytes(side + 1)  # filter byte 0, then the pixels
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    return head + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def bad_images(good: bytes) -> dict[str, bytes]:
    pixels = np.asarray(Image.open(io.BytesIO(good)))
    return {
        "rgb": _png(Image.fromarray(np.stack([pixels] * 3, axis=-1), mode="RGB")),
        "deep": _png(Image.fromarray(pixels.astype(np.uint16) * 257)),
        "small": _png(Image.fromarray(pixels[:14, :14])),
        "truncated": good[: len(good) // 2],
        "bomb": bomb_png(),
    }


REASONS = {
    "rgb": "column 'image' holds a RGB image, the model reads L (1 channel(s))",
    "deep": "column 'image' holds a I;16 image (16-bit or float pixels)",
    "small": "column 'image' holds a 14x14 image, the model expects 28x28",
    "truncated": "column 'image' is not a decodable image (",
    "bomb": f"column 'image' holds a 10000x10000 image (100,000,000 pixels by its header, over "
    f"the {MAX_PIXELS:,} decoded per image",
}


def test_each_bad_image_is_flagged_with_its_reason_and_the_bomb_is_never_decoded():
    import resource

    test_x, _ = load_split("test")
    good = [_png(Image.fromarray(x)) for x in test_x[:3]]
    bad = bad_images(good[0])
    assert len(bad["bomb"]) < 200_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    batch = decode_images([good[0], *bad.values(), *good[1:]], "image", SPEC)
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kb < 50_000  # 100 MB of bomb pixels were never allocated
    assert batch.bad.tolist() == [False] + [True] * len(bad) + [False, False]
    for reason, expected in zip(batch.reasons[1:-2], REASONS.values(), strict=True):
        assert reason.startswith(expected), reason
    assert "truncated" in batch.reasons[4] or "broken" in batch.reasons[4]
    alone = decode_images(good, "image", SPEC)
    np.testing.assert_array_equal(batch.matrix[[0, -2, -1]], alone.matrix)

    converting = decode_images([bad["rgb"]], "image", SPEC.model_copy(update={"convert": True}))
    assert not converting.bad.any()  # the default converts modes, as before


# --- end to end through the CLI on a slice -----------------------------------------------------

TECHNIQUES = [
    "fashion-cnn-separable",  # parameter sharing, recovered by distillation
    "fashion-cnn-sparsify",  # L1 sparsification
    "fashion-cnn-pruned",  # structured channel pruning
    "fashion-cnn-int8",  # static per-channel int8
    "fashion-cnn-student",  # distillation into a smaller student
]
# points: 500 hold-out images, a baseline trained for seconds, one epoch per recipe; how well
# each technique recovers is measured at full size by the bench (conf/bench-images.yaml)
SLICE_BUDGET = 15.0


def slice_recipe(name: str, epochs: int = 1) -> dict:
    """The shipped recipe with one epoch per training step and the slice's wider budget."""
    recipe = yaml.safe_load(packaged_config(f"recipes/{name}.yaml").read_text())
    recipe["max_accuracy_drop"] = SLICE_BUDGET
    for step in recipe["steps"]:
        for key in ("epochs", "distill_epochs", "finetune_epochs"):
            if key in step:
                step[key] = epochs
    return recipe


@pytest.fixture(scope="module")
def fashion_slice(spark, tmp_path_factory):
    """Delta tables of the first 2,000 training images (500 held out) and 1,000 test images,
    the baseline trained 2 epochs on the 1,500 'fit' images, its state_dict, and the compress
    config of that slice."""
    import torch
    from leanscore.bench.fashion_data import write_training_tables
    from leanscore.bench.fashion_model import train_fashion_model
    from leanscore.bench.images_prepare import compress_config

    root = tmp_path_factory.mktemp("fashion")
    tables = write_training_tables(spark, root, holdout=500, train_limit=2_000, test_limit=1_000)
    model, fit, held_out = train_fashion_model(epochs=2, holdout=500, train_limit=2_000)
    assert len(fit.features) == 1_500 and len(held_out.features) == 500
    checkpoint = root / "fashion-vgg.pt"
    torch.save(model.state_dict(), checkpoint)
    config = compress_config(
        "unused", tables=tables, checkpoint=str(checkpoint), fit_rows=1_500, holdout_rows=500
    )
    config["image"]["convert"] = False
    return {"root": root, "tables": tables, "config": config}


def compress(fashion_slice, name: str, chosen: dict) -> tuple[int, str, Artifact | None]:
    root = fashion_slice["root"]
    config = {**fashion_slice["config"], "recipe": None, **chosen}
    config = {k: v for k, v in config.items() if v is not None}
    result = run_cli("compress", "-c", write_yaml(root / f"{name}.yaml", config), "-o", root / name)
    artifact = Artifact.load(root / name) if result.exit_code == 0 else None
    return result.exit_code, result.output, artifact


@pytest.fixture(scope="module")
def autotuned(fashion_slice):
    """One ``leanscore compress`` run with every technique, and one combination, as autotune's
    candidates: each is compressed, measured and gated; the fastest within budget is written."""
    names = [*TECHNIQUES, "fashion-cnn-student-int8", "fashion-cnn-tiny-student-w8"]
    candidates = [slice_recipe(name) for name in names]
    code, output, artifact = compress(fashion_slice, "autotuned", {"candidates": candidates})
    assert code == 0, output
    return artifact


@pytest.mark.spark
@pytest.mark.slow
def test_each_technique_compresses_the_vgg_through_the_cli(autotuned):
    metrics = autotuned.manifest.metrics
    base = metrics["baseline"]
    assert base["distinct_examples"] == 500 and base["accuracy"] > 0.6  # chance is 0.10
    table = {r["recipe"]: r for r in metrics["autotune"]["candidates"]}
    assert set(table) == {*TECHNIQUES, "fashion-cnn-student-int8", "fashion-cnn-tiny-student-w8"}
    for name, row in table.items():
        for key in ("params", "onnx_bytes", "rows_per_s_per_core", "accuracy", "fidelity"):
            assert row[key] is not None, (name, key)
        assert 0.0 < row["fidelity"] <= 1.0, row  # agreement with the baseline on held-out images
        if not row["passed"]:  # a recipe over budget is refused with its numbers
            assert "loses" in row["reason"] and "max_accuracy_drop" in row["reason"], row
    assert table["fashion-cnn-separable"]["params"] < base["params"]
    assert table["fashion-cnn-pruned"]["params"] < base["params"] / 2
    assert table["fashion-cnn-student"]["params"] < base["params"] / 5
    sparse = table["fashion-cnn-sparsify"]
    # shapes unchanged (the export folds the batch norms: a few hundred fewer parameters)
    assert sparse["params"] > 0.99 * base["params"]
    assert sparse["zipped_bytes"] < base["zipped_bytes"] / 2
    assert table["fashion-cnn-int8"]["onnx_bytes"] < base["onnx_bytes"] / 3
    assert table["fashion-cnn-student-int8"]["onnx_bytes"] < base["onnx_bytes"] / 10
    tiny = table["fashion-cnn-tiny-student-w8"]  # under a fifth of the parameters, int8-stored
    assert tiny["params"] < base["params"] / 5 and tiny["onnx_bytes"] < base["onnx_bytes"] / 15


@pytest.mark.spark
@pytest.mark.slow
def test_autotune_keeps_the_fastest_within_budget_and_records_its_data(autotuned):
    manifest = autotuned.manifest
    passed = [r for r in manifest.metrics["autotune"]["candidates"] if r["passed"]]
    assert passed, manifest.metrics["autotune"]["candidates"]
    fastest = max(passed, key=lambda r: r["rows_per_s_per_core"])
    assert manifest.metrics["autotune"]["chosen"] == fastest["recipe"] == manifest.name
    assert manifest.family == "image" and manifest.features.image.convert is False
    final = manifest.metrics["final"]
    low, high = final["accuracy_interval"]
    assert low < final["accuracy"] < high
    assert manifest.metrics["gate"]["evaluated_on"]["filter"] == "part = 'holdout'"
    data = json.dumps(manifest.data)
    assert "part = 'fit'" in data and "fashion_test" not in data  # the test split unseen


def _scoring_table(spark, fashion_slice, name: str, extra: dict[int, bytes | None]) -> str:
    test = spark.read.format("delta").load(fashion_slice["tables"]["test"])
    rows = [(r.row_id, bytes(r.image), r.label) for r in test.limit(300).collect()]
    rows += [(key, value, 0) for key, value in extra.items()]
    path = str(fashion_slice["root"] / name)
    frame = spark.createDataFrame(rows, "row_id long, image binary, label int")
    frame.repartition(2).write.format("delta").mode("overwrite").save(path)
    return path


def _score(fashion_slice, artifact, table: str, name: str, bad_rows: str):
    root = fashion_slice["root"]
    config = {
        "artifact": str(artifact.path),
        "input": {"path": table, "format": "delta"},
        "output": {"path": str(root / name), "format": "delta"},
        "key_columns": ["row_id"],
        "passthrough_columns": ["label"],
        "bad_rows": bad_rows,
        "probabilities": True,
        "summary_path": str(root / f"{name}.json"),
    }
    return run_cli("score", "-c", write_yaml(root / f"{name}.yaml", config), "--run-date", RUN_DATE)


@pytest.mark.spark
@pytest.mark.slow
def test_bad_images_are_flagged_or_fail_the_job_and_change_no_other_row(
    spark, fashion_slice, autotuned
):
    clean = _scoring_table(spark, fashion_slice, "clean", {})
    test = spark.read.format("delta").load(fashion_slice["tables"]["test"])
    good = bytes(test.first().image)
    keys = {name: 90_000 + i for i, name in enumerate(REASONS)}
    dirty = _scoring_table(
        spark, fashion_slice, "dirty", {keys[n]: b for n, b in bad_images(good).items()}
    )
    assert _score(fashion_slice, autotuned, clean, "scored_clean", "flag").exit_code == 0
    result = _score(fashion_slice, autotuned, dirty, "scored_dirty", "flag")
    assert result.exit_code == 0, result.output
    root = fashion_slice["root"]
    summary = json.loads((root / "scored_dirty.json").read_text())
    assert summary["rows_out"] == 300 + len(REASONS) and summary["flagged_rows"] == len(REASONS)

    def scored(name):
        frame = spark.read.format("delta").load(str(root / name)).toPandas()
        return frame.set_index("row_id").sort_index()

    before, after = scored("scored_clean"), scored("scored_dirty")
    for name, key in keys.items():
        assert after.loc[key, "prediction_error"].startswith(REASONS[name])
        assert np.isnan(after.loc[key, "prediction"])
    unchanged = after.loc[before.index]
    assert unchanged["prediction_error"].isna().all()
    np.testing.assert_array_equal(unchanged["prediction"], before["prediction"])
    np.testing.assert_array_equal(
        np.stack(unchanged["probabilities"]), np.stack(before["probabilities"])
    )

    result = _score(fashion_slice, autotuned, dirty, "scored_failed", "fail")
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    named = [n for n, key in keys.items() if f"row with key 'row_id={key}'" in text]
    assert named and REASONS[named[0]][:40] in text, text  # the first bad row met, and why
    from delta.tables import DeltaTable

    assert not DeltaTable.isDeltaTable(spark, str(root / "scored_failed"))  # nothing written


# --- the targets' verdict: each met, and each NOT met by a failing case --------------------------


def _variant(name, path, engine, compressed, rows_per_s, model_bytes, accuracy, monthly):
    return {
        "name": name,
        "path": path,
        "engine": engine,
        "compressed": compressed,
        "rows_per_s": rows_per_s,
        "model_bytes": model_bytes,
        "accuracy": accuracy,
        "accuracy_interval": (accuracy - 0.006, accuracy + 0.006),
        "monthly_usd": monthly,
        "batch_size": 1024,
        "rows": 1_000_000,
    }


def _report(**change) -> dict:
    numbers = {
        "torch": 1_000.0,
        "fp32": 2_000.0,
        "comp": 7_000.0,
        "comp_bytes": 80_000,
        "comp_acc": 0.905,
        "comp_bill": 400.0,
    }
    numbers.update(change)
    return {
        "distinct_examples": 10_000,
        "variants": [
            _variant(
                "torch-fp32/predict_batch_udf",
                "predict_batch_udf",
                "spark",
                False,
                numbers["torch"],
                880_000,
                0.91,
                2_000.0,
            ),
            _variant(
                "onnx-fp32/leanscore-spark-reader",
                "leanscore",
                "spark",
                False,
                1_000.0,
                880_000,
                0.91,
                1_900.0,
            ),
            _variant(
                "onnx-fp32/leanscore",
                "leanscore",
                "scan",
                False,
                numbers["fp32"],
                880_000,
                0.91,
                1_000.0,
            ),
            _variant(
                "fashion-cnn-student-int8/leanscore",
                "leanscore",
                "scan",
                True,
                numbers["comp"],
                numbers["comp_bytes"],
                numbers["comp_acc"],
                numbers["comp_bill"],
            ),
        ],
    }


def test_the_targets_are_met_and_each_fails_on_its_own_case():
    from leanscore.bench.image_targets import ImageTargets, verdict

    targets = ImageTargets()
    rows = verdict(_report(), targets)
    assert [r["met"] for r in rows] == [True] * 5, rows
    assert rows[0]["value"] == 11.0 and rows[1]["value"] == 0.5 and rows[2]["value"] == 3.5
    assert rows[3]["value"] == 7.0 and rows[4]["value"] == 0.4
    assert "fp32 91.00% [90.40, 91.60], compressed 90.50%" in rows[1]["note"]
    assert rows[2]["compared"] == "fashion-cnn-student-int8/leanscore vs onnx-fp32/leanscore"
    failing = {
        0: {"comp_bytes": 90_000},  # 9.8x smaller
        1: {"comp_acc": 0.898},  # 1.2 points lower
        2: {"comp": 5_900.0, "torch": 900.0},  # 2.95x fp32 on the same engine
        3: {"torch": 1_200.0},  # 5.8x PyTorch
        4: {"comp_bill": 501.0},  # just over half
    }
    for index, change in failing.items():
        rows = verdict(_report(**change), targets)
        assert [r["met"] for r in rows] == [i != index for i in range(5)], (index, rows)


def test_the_bill_note_gives_the_floor_the_fixed_cost_sets():
    """A bill target below the fixed cost's share of fp32's bill cannot be met by any model:
    the verdict says where that floor is."""
    from leanscore.bench.image_targets import ImageTargets, verdict

    report = _report(comp_bill=700.0)
    for variant in report["variants"]:
        variant.update(fixed_usd_per_night=0.5, nightly_usd=0.8)
    report["pricing"] = {"nightly_rows": 100_000_000}
    bill = verdict(report, ImageTargets())[4]
    assert bill["met"] is False and bill["value"] == 0.7
    assert bill["note"] == (
        "$700.00 vs $1,000.00 a month; the fixed cost alone ($0.50 a night: start-up, driver) "
        "is 0.62 of fp32's bill, the lowest ratio any model reaches at 100,000,000 rows a night"
    )


def test_with_a_window_the_bill_floor_is_the_smallest_clusters_fixed_cost():
    """Where the pricing sizes the cluster for a window, a free model would run on one worker:
    the floor is that cluster's start-up and driver, not the fixed cost fp32's cluster pays."""
    from leanscore.bench.image_targets import ImageTargets, verdict

    report = _report(comp_bill=300.0)
    for variant in report["variants"]:
        workers = 1 if variant["compressed"] else 3
        variant.update(fixed_usd_per_night=0.1 * workers, nightly_usd=1.0, workers=workers)
    report["pricing"] = {
        "instance": {"name": "n", "usd_per_hour": 1.0, "cores": 8},
        "driver": {"name": "d", "usd_per_hour": 1.0, "cores": 4},
        "workers": 8,
        "window_hours": 1.0,
        "startup_minutes": 6,
        "nightly_rows": 100_000_000,
    }
    bill = verdict(report, ImageTargets())[4]
    assert bill["met"] is True and bill["value"] == 0.3
    # 6 minutes on one worker and the driver at $1 an hour each
    assert bill["note"].startswith("$300.00 vs $1,000.00 a month on 1 vs 3 workers; ")
    assert "the fixed cost alone ($0.20 a night: start-up, driver) is 0.20" in bill["note"]


def test_the_fast_png_path_gives_pillows_pixels_and_leaves_the_rest_to_pillow(monkeypatch):
    import leanscore.compression.image_inputs as family

    assert family._spng is not None, "pyspng (leanscore[images]) is not installed"
    test_x, _ = load_split("test")
    gray = [_png(Image.fromarray(x)) for x in test_x[:50]]
    rgb_spec = SPEC.model_copy(update={"channels": 3, "mean": None, "std": None})
    rgb = [_png(Image.fromarray(np.stack([x, x[::-1], x.T], axis=-1))) for x in test_x[:20]]
    calls = []
    load = family._spng.load
    monkeypatch.setattr(family._spng, "load", lambda data: calls.append(1) or load(data))
    fast = decode_images(gray, "image", SPEC), decode_images(rgb, "image", rgb_spec)
    assert len(calls) == 70  # every one of them went the fast way
    bad = bad_images(gray[0])
    flagged = decode_images(list(bad.values()), "image", SPEC)
    assert len(calls) == 71 and flagged.bad.all()  # only the truncated PNG tried, then Pillow
    monkeypatch.setattr(family, "_spng", None)
    slow = decode_images(gray, "image", SPEC), decode_images(rgb, "image", rgb_spec)
    for f, s in zip(fast, slow, strict=True):
        np.testing.assert_array_equal(f.matrix, s.matrix)
    assert decode_images(list(bad.values()), "image", SPEC).reasons == flagged.reasons
