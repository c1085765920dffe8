"""The image family: scikit-learn's real digits rendered to PNG bytes with Pillow, written as a
Delta table (id, image, label); a CNN trained and compressed on it with ``leanscore compress``
and scored with ``leanscore score`` (Delta in, Delta out); decoding, bad images and both
engines checked against an independent decode and ONNX Runtime run by hand."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pandas as pd
import pyarrow as pa
import pytest
from leanscore.compression.artifact import (
    Artifact,
    ArtifactError,
    FeatureSpec,
    ImageSpec,
    Manifest,
    write_artifact,
)
from leanscore.compression.image_inputs import decode_images
from leanscore.udfs.distribution import ModelSource
from leanscore.udfs.families import family_for
from leanscore.udfs.kernel import BadRowError, Scorer
from leanscore.udfs.session_cache import SessionConfig
from PIL import Image
from pydantic import ValidationError
from reliability_support import run_cli, write_yaml

SIDE = 16  # the 8x8 digits upscaled to 16x16
SPEC = ImageSpec(channels=1, height=SIDE, width=SIDE, mean=[0.5], std=[0.5])
UNDECODABLE, NULL_IMAGE = 90001, 90002
RUN_DATE = "2026-11-30"


def png_bytes(pixels: np.ndarray, *, mode: str = "L", size: int = SIDE, fmt: str = "PNG") -> bytes:
    """One image (8x8 digit scaled to 0..1, or an HxWx3 uint8 array) as encoded bytes."""
    if pixels.dtype != np.uint8:
        pixels = np.round(pixels * 255).astype(np.uint8)
    image = Image.fromarray(pixels, mode=mode).resize((size, size), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def decoded_by_hand(data: list[bytes]) -> np.ndarray:
    """What the model should see, decoded here without the family's code."""
    pixels = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("L")) for b in data])
    x = pixels.astype(np.float32)[:, None] / np.float32(255)
    return (x - np.float32(0.5)) / np.float32(0.5)


# --- decoding, without Spark ------------------------------------------------------------------


def test_decoding_matches_pillow_and_names_bad_images(digits):
    _, held_out = digits
    good = [png_bytes(x) for x in held_out.images[:5]]
    small = png_bytes(held_out.images[0], size=8)
    deep = io.BytesIO()
    Image.fromarray(np.full((SIDE, SIDE), 4000, np.uint16)).save(deep, format="PNG")
    values = [*good, None, b"\x89PNG but not really", small, float("nan"), deep.getvalue()]
    batch = decode_images(values, "image", SPEC)
    assert batch.matrix.shape == (10, 1, SIDE, SIDE) and batch.matrix.dtype == np.float32
    np.testing.assert_array_equal(batch.matrix[:5], decoded_by_hand(good))
    assert batch.bad.tolist() == [False] * 5 + [True] * 5
    assert batch.reasons[5] == "column 'image' is null"
    assert (
        batch.reasons[6] == "column 'image' is not a decodable image (cannot identify image file)"
    )
    assert batch.reasons[7].startswith("column 'image' holds a 8x8 image, the model expects 16x16")
    assert "image.resize: true" in batch.reasons[7]
    assert batch.reasons[8] == "column 'image' is null"
    assert batch.reasons[9].startswith("column 'image' holds a I;16 image (16-bit or float")
    assert not batch.matrix[5:].any()  # bad rows are never scored; they hold zeros

    resized = decode_images([small], "image", SPEC.model_copy(update={"resize": True}))
    assert not resized.bad.any()
    by_pillow = Image.open(io.BytesIO(small)).resize((SIDE, SIDE), Image.Resampling.BILINEAR)
    expected = (np.asarray(by_pillow, dtype=np.float32) / np.float32(255) - 0.5) / 0.5
    np.testing.assert_array_equal(resized.matrix[0, 0], expected)


def test_rgb_and_jpeg_are_converted_and_normalised_per_channel():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(SIDE, SIDE, 3), dtype=np.uint8)
    spec = ImageSpec(channels=3, height=SIDE, width=SIDE, mean=[0.1, 0.2, 0.3], std=[2, 3, 4])
    png = png_bytes(rgb, mode="RGB")
    gray = png_bytes(rgb[:, :, 0])  # a grayscale image for an RGB model: converted
    jpeg = png_bytes(rgb, mode="RGB", fmt="JPEG")
    batch = decode_images([png, gray, jpeg], "photo", spec)
    assert not batch.bad.any() and batch.matrix.shape == (3, 3, SIDE, SIDE)
    mean = np.array([0.1, 0.2, 0.3], np.float32)[:, None, None]
    std = np.array([2, 3, 4], np.float32)[:, None, None]
    for i, data in enumerate([png, gray, jpeg]):
        chw = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).transpose(2, 0, 1)
        expected = (chw.astype(np.float32) / np.float32(255) - mean) / std
        np.testing.assert_array_equal(batch.matrix[i], expected)
    gray_pixels = batch.matrix[1] * std + mean  # a gray image: equal R, G and B
    np.testing.assert_allclose(gray_pixels[0], gray_pixels[2], atol=1e-6)


def test_image_layout_is_validated():
    with pytest.raises(ValidationError, match="image_column 'img' needs 'image'"):
        FeatureSpec(image_column="img", size=256)
    with pytest.raises(ValidationError, match=r"size is 64 but image \[1, 16, 16\]"):
        FeatureSpec(image_column="img", image=SPEC, size=64)
    with pytest.raises(ValidationError, match="exactly one of 'columns', 'array_column' or"):
        FeatureSpec(image_column="img", array_column="a", image=SPEC, size=256)
    with pytest.raises(ValidationError, match="image.mean has 1 values but the image has 3"):
        ImageSpec(channels=3, height=2, width=2, mean=[0.5])
    with pytest.raises(ValidationError, match="image.std must be positive"):
        ImageSpec(channels=1, height=2, width=2, std=[0.0])


def _flatten_model(shape: list[int]) -> bytes:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, *shape])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, int(np.prod(shape))])
    graph = helper.make_graph([helper.make_node("Flatten", ["x"], ["y"])], "flat", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model.SerializeToString()


def test_manifest_refuses_a_model_of_another_shape_and_a_family_without_image(tmp_path):
    fields = {
        "name": "flat",
        "inputs": [{"name": "x", "dtype": "float32", "shape": [None, 1, 8, 8]}],
        "outputs": [{"name": "y", "dtype": "float32", "shape": [None, 64]}],
        "features": {"image_column": "image", "image": SPEC.model_dump(), "size": 256},
        "task": "embedding",
        "family": "image",
    }
    write_artifact(tmp_path / "a", _flatten_model([1, 8, 8]), fields)
    with pytest.raises(ArtifactError, match=r"expects input \(batch, 1, 16, 16\) but model input"):
        Artifact.load(tmp_path / "a")
    write_artifact(tmp_path / "b", _flatten_model([1, SIDE, SIDE]), fields)
    assert Artifact.load(tmp_path / "b").manifest.family == "image"
    with pytest.raises(ValidationError, match="family 'image' needs features.image"):
        Manifest.model_validate(
            {
                **fields,
                "features": {"array_column": "a", "size": 64},
                "sha256": "0" * 64,
                "model_bytes": 1,
            }
        )


def test_tabular_scoring_never_imports_pillow(tmp_path):
    fields = {
        "name": "tabular",
        "inputs": [{"name": "x", "dtype": "float32", "shape": [None, 4]}],
        "outputs": [{"name": "y", "dtype": "float32", "shape": [None, 4]}],
        "features": {"array_column": "v", "size": 4},
        "task": "embedding",
    }
    tabular = write_artifact(tmp_path / "t", _flatten_model([4]), fields)
    code = (
        "import sys\n"
        "from leanscore.udfs import score_dataframe\n"
        "from leanscore.compression.artifact import Artifact\n"
        "from leanscore.udfs.families import family_for\n"
        f"family_for(Artifact.load({str(tabular.path)!r}).manifest)\n"
        "assert 'PIL' not in sys.modules, 'PIL was imported'\n"
        "import leanscore.udfs.families.image\n"
        "assert 'PIL' in sys.modules\n"  # the check can fail
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_image_range_is_per_channel_and_the_cnn_takes_any_image_shape():
    import torch
    from leanscore.compression.artifact import input_range_of
    from leanscore.compression.models import DigitsCNN, shrink

    images = np.zeros((3, 2, 2, 2), dtype=np.float32)
    images[0, 0, 0, 0], images[1, 1, 1, 1], images[2, 1, 0, 1] = 1.0, -2.0, 5.0
    recorded = input_range_of(images, source="train")
    assert recorded.low == [0.0] * 4 + [-2.0] * 4 and recorded.high == [1.0] * 4 + [5.0] * 4

    cnn = DigitsCNN([4, 8, 8], input_shape=(3, SIDE, 12))
    student = shrink(cnn, width=0.5)
    assert student.input_shape == (3, SIDE, 12)
    with torch.no_grad():
        assert student(torch.zeros(2, 3, SIDE, 12)).shape == (2, 10)
        assert cnn(torch.zeros(2, 3 * SIDE * 12)).shape == (2, 10)  # flat rows too


# --- end to end: leanscore compress, then leanscore score ------------------------------------


def _write_images(spark, path: str, rows: list[tuple]) -> None:
    spark.createDataFrame(rows, "id long, image binary, label int").write.format("delta").save(path)


@pytest.fixture(scope="module")
def image_tables(spark, digits, tmp_path_factory):
    """Train, held-out and to-score Delta tables of PNG digits (the last with two bad rows)."""
    root = tmp_path_factory.mktemp("image-tables")
    train, held_out = digits
    train_png = [png_bytes(x) for x in train.images]
    held_png = [png_bytes(x) for x in held_out.images]
    held_rows = [
        (i, b, int(y)) for i, (b, y) in enumerate(zip(held_png, held_out.labels, strict=True))
    ]
    paths = {name: str(root / name) for name in ("train", "held_out", "to_score")}
    _write_images(
        spark,
        paths["train"],
        [(i, b, int(y)) for i, (b, y) in enumerate(zip(train_png, train.labels, strict=True))],
    )
    _write_images(spark, paths["held_out"], held_rows)
    bad = [(UNDECODABLE, b"not an image at all", 3), (NULL_IMAGE, None, 5)]
    _write_images(spark, paths["to_score"], held_rows + bad)
    return {**paths, "held_png": held_png, "held_labels": held_out.labels, "root": root}


COMPRESS = {
    "recipe": {
        "name": "digits-images-static-int8",
        "max_accuracy_drop": 1.5,
        "steps": [
            {"step": "export"},
            {
                "step": "quantize",
                "mode": "static_int8",
                "per_channel": True,
                "exclude_op_types": ["Softmax"],
            },
        ],
    },
    "model": {"kind": "builtin-digits-cnn", "epochs": 12, "lr": 0.01, "channels": [16, 32, 32]},
    "image": SPEC.model_dump(exclude_none=True),
}


@pytest.fixture(scope="module")
def image_artifact(image_tables):
    root = image_tables["root"]
    table = {"kind": "table", "image_column": "image", "label_column": "label"}
    config = {
        **COMPRESS,
        "data": {
            "train": {**table, "path": image_tables["train"]},
            "evaluation": {**table, "path": image_tables["held_out"]},
        },
    }
    result = run_cli("compress", "-c", write_yaml(root / "compress.yaml", config), "-o", root / "m")
    assert result.exit_code == 0, result.output
    return Artifact.load(root / "m")


def _score_config(image_tables, artifact, name: str, bad_rows: str):
    root = image_tables["root"]
    config = {
        "artifact": str(artifact.path),
        "input": {"path": image_tables["to_score"], "format": "delta"},
        "output": {"path": str(root / name), "format": "delta"},
        "key_columns": ["id"],
        "passthrough_columns": ["label"],
        "bad_rows": bad_rows,
        "probabilities": True,
        "summary_path": str(root / f"{name}.json"),
    }
    return write_yaml(root / f"{name}.yaml", config)


@pytest.mark.slow
def test_compress_then_score_images_end_to_end(spark, image_tables, image_artifact):
    manifest = image_artifact.manifest
    assert manifest.family == "image"
    assert manifest.features.image_column == "image" and manifest.features.image == SPEC
    assert manifest.inputs[0].shape[1:] == [1, SIDE, SIDE]
    assert manifest.data["train"]["image_column"] == "image"
    metrics = manifest.metrics
    baseline, final = metrics["baseline"], metrics["final"]
    assert metrics["gate"]["passed"]
    assert baseline["accuracy"] > 0.9 and final["accuracy"] > 0.9
    assert final["onnx_bytes"] < baseline["onnx_bytes"]
    assert manifest.batch_dependent is False  # static int8: rows do not depend on each other
    assert len(manifest.input_range.low) == SIDE * SIDE

    config = _score_config(image_tables, image_artifact, "scored", "flag")
    result = run_cli("score", "--config", config, "--run-date", RUN_DATE)
    assert result.exit_code == 0, result.output
    summary = json.loads((image_tables["root"] / "scored.json").read_text())
    n = len(image_tables["held_png"])
    assert summary["rows_out"] == n + 2 and summary["flagged_rows"] == 2
    scored = (
        (spark.read.format("delta").load(str(image_tables["root"] / "scored")).toPandas())
        .set_index("id")
        .sort_index()
    )
    errors = scored.loc[[UNDECODABLE, NULL_IMAGE]]
    assert errors["prediction"].isna().all() and errors["probability"].isna().all()
    assert errors.loc[UNDECODABLE, "prediction_error"] == (
        "column 'image' is not a decodable image (cannot identify image file)"
    )
    assert errors.loc[NULL_IMAGE, "prediction_error"] == "column 'image' is null"

    good = scored.drop(index=[UNDECODABLE, NULL_IMAGE])
    assert good.index.tolist() == list(range(n)) and good["prediction_error"].isna().all()
    held_out_accuracy = float(np.mean(good["prediction"].to_numpy() == good["label"].to_numpy()))
    print(f"held-out accuracy of the scored images: {held_out_accuracy:.4f}")
    assert held_out_accuracy > 0.9
    assert held_out_accuracy == pytest.approx(manifest.metrics["final"]["accuracy"], abs=1e-9)

    session = ort.InferenceSession(str(image_artifact.model_path))
    by_hand = session.run(
        None, {session.get_inputs()[0].name: decoded_by_hand(image_tables["held_png"])}
    )[0]
    np.testing.assert_array_equal(good["prediction"].to_numpy(), by_hand.argmax(axis=1))
    np.testing.assert_allclose(np.stack(good["probabilities"]), by_hand, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(good["probability"], by_hand.max(axis=1), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_fail_policy_names_the_row_key_and_the_image_column(spark, image_tables, image_artifact):
    config = _score_config(image_tables, image_artifact, "scored_fail", "fail")
    result = run_cli("score", "--config", config, "--run-date", RUN_DATE)
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert f"row with key 'id={UNDECODABLE}'" in text or f"row with key 'id={NULL_IMAGE}'" in text
    assert "column 'image'" in text and "bad_rows='flag'" in text
    from delta.tables import DeltaTable

    assert not DeltaTable.isDeltaTable(spark, str(image_tables["root"] / "scored_fail"))


@pytest.mark.slow
def test_pandas_and_arrow_engines_give_identical_results(spark, image_tables, image_artifact):
    from leanscore.udfs import score_dataframe

    df = spark.read.format("delta").load(image_tables["to_score"])
    frames = [
        score_dataframe(
            df,
            image_artifact,
            engine=engine,
            key_columns=["id"],
            keep_columns=["id"],
            bad_rows="flag",
            probabilities=True,
        )
        .orderBy("id")
        .toPandas()
        for engine in ("pandas", "arrow")
    ]
    pd.testing.assert_frame_equal(frames[0], frames[1])
    assert frames[0]["prediction"].isna().sum() == 2

    family = family_for(image_artifact.manifest)
    values = [*image_tables["held_png"][:20], None, b"nope"]
    from_pandas = family.from_pandas([pd.Series(values, dtype=object)])
    from_arrow = family.from_arrow([pa.array(values, pa.binary())])
    np.testing.assert_array_equal(from_pandas.matrix, from_arrow.matrix)
    assert from_pandas.reasons == from_arrow.reasons
    with pytest.raises(BadRowError, match="row 20 of a batch: column 'image' is null"):
        _scorer(image_artifact, "fail").score(
            *_scorer(image_artifact, "fail").session(), from_arrow, None
        )


def _scorer(artifact: Artifact, bad_rows: str) -> Scorer:
    manifest = artifact.manifest
    source = ModelSource(
        manifest.name, manifest.sha256, "closure", data=artifact.read_model_bytes()
    )
    return Scorer.build(
        manifest, source, SessionConfig(), batch_size=64, bad_rows=bad_rows, probabilities=True
    )


@pytest.mark.slow
def test_a_pixel_array_column_scores_like_the_images(image_tables, image_artifact, tmp_path):
    """The same model read from a fixed-shape array of pixels in [0, 1] (the tabular code reads
    the array, the image family shapes and normalises it) gives the image column's results."""
    fields = image_artifact.manifest.model_dump(exclude={"sha256", "model_bytes", "files"})
    fields["features"] = {"array_column": "pixels", "image": SPEC.model_dump(), "size": SIDE**2}
    arrays = write_artifact(tmp_path / "arrays", image_artifact.read_model_bytes(), fields)
    png = image_tables["held_png"][:30]
    pixels = [np.asarray(Image.open(io.BytesIO(b)), dtype=np.float64).ravel() / 255 for b in png]
    pixels += [None, [0.5] * 10, [float("nan")] * SIDE**2]
    by_images, by_arrays = _scorer(image_artifact, "flag"), _scorer(arrays, "flag")
    image_batch = by_images.family.from_pandas([pd.Series(png, dtype=object)])
    expected = by_images.score(*by_images.session(), image_batch, None)
    for batch in (
        by_arrays.family.from_pandas([pd.Series(pixels, dtype=object)]),
        by_arrays.family.from_arrow([pa.array(pixels, pa.list_(pa.float64()))]),
    ):
        np.testing.assert_allclose(batch.matrix[:30], image_batch.matrix, atol=1e-6)
        scored = by_arrays.score(*by_arrays.session(), batch, None)
        assert scored.batch.reasons[30:32] == [
            "column 'pixels' is null",
            f"column 'pixels' has 10 elements, the model expects {SIDE**2}",
        ]  # the pandas path cannot tell a NaN from a null element: "NaN (or null)"
        assert scored.batch.reasons[32].startswith("column 'pixels' element 0 is NaN")
        np.testing.assert_allclose(scored.out, expected.out, atol=1e-5)


@pytest.mark.slow
def test_compress_refuses_an_undecodable_training_image(image_tables, tmp_path):
    table = {"kind": "table", "image_column": "image", "label_column": "label"}
    config = {
        **COMPRESS,
        "data": {
            "train": {**table, "path": image_tables["to_score"]},
            "evaluation": {**table, "path": image_tables["held_out"]},
        },
    }
    result = run_cli(
        "compress", "-c", write_yaml(tmp_path / "c.yaml", config), "-o", tmp_path / "m"
    )
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert image_tables["to_score"] in text and "2 sampled row(s)" in text
    assert "column 'image'" in text and not (tmp_path / "m").exists()

    no_spec = {**config, "image": None}
    result = run_cli(
        "compress", "-c", write_yaml(tmp_path / "d.yaml", no_spec), "-o", tmp_path / "m"
    )
    assert result.exit_code == 1
    assert "data.train.image_column needs 'image'" in " ".join(result.output.split())


@pytest.mark.slow
def test_mlflow_pyfunc_scores_image_bytes(image_tables, image_artifact):
    from leanscore.compression.mlflow_log import signature
    from leanscore.udfs.mlflow_pyfunc import LeanscorePyfunc

    inputs = signature(image_artifact.manifest).inputs.to_dict()
    assert inputs == [{"type": "binary", "name": "image", "required": True}]
    png = image_tables["held_png"][:25]
    out = LeanscorePyfunc(image_artifact.path).predict(pd.DataFrame({"image": png}))
    by_scorer = _scorer(image_artifact, "fail")
    scored = by_scorer.score(
        *by_scorer.session(), by_scorer.family.from_pandas([pd.Series(png)]), None
    )
    np.testing.assert_array_equal(out["prediction"], scored.out.argmax(axis=1))
