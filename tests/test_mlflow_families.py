"""The newer model families through the MLflow registry: an image CNN (PNG bytes in a Delta
table) and an ONNX model as given (scikit-learn gradient boosting on the real breast-cancer data,
converted with skl2onnx, truncated within its budget) are compressed and registered with
``leanscore compress --register``, then scored by the nightly job from ``models:/NAME/VERSION``
(Delta in, Delta out). Real MLflow with a SQLite registry and a local artifact root."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from leanscore.compression.artifact import Artifact
from reliability_support import run_cli, write_yaml

mlflow = pytest.importorskip("mlflow")

RUN_DATE = "2026-11-30"
LINEAGE = ["model_name", "model_version", "model_sha256", "scored_at", "run_date"]


def _compress_and_register(config: Path, out: Path, name: str) -> Artifact:
    result = run_cli("compress", "-c", config, "-o", out, "--register", name)
    assert result.exit_code == 0, result.output
    assert f"registered models:/{name}/1" in result.output
    return Artifact.load(out)


def _score_from_registry(tmp_path: Path, name: str, table: str, key: str, **options) -> dict:
    """``leanscore score`` with ``artifact: models:/NAME/1``; the summary and the rows written."""
    config = {
        "artifact": f"models:/{name}/1",
        "input": {"path": table, "format": "delta"},
        "output": {"path": str(tmp_path / f"{name}-out"), "format": "delta"},
        "key_columns": [key],
        "summary_path": str(tmp_path / f"{name}-summary.json"),
        **options,
    }
    path = write_yaml(tmp_path / f"{name}-nightly.yaml", config)
    result = run_cli("score", "-c", path, "--run-date", RUN_DATE)
    assert result.exit_code == 0, result.output
    return json.loads((tmp_path / f"{name}-summary.json").read_text())


def _written(spark, tmp_path: Path, name: str, key: str) -> pd.DataFrame:
    df = spark.read.format("delta").load(str(tmp_path / f"{name}-out"))
    return df.where(f"run_date = DATE'{RUN_DATE}'").orderBy(key).toPandas()


@pytest.mark.slow
def test_an_onnx_gradient_boosting_model_registers_and_scores_from_the_registry(
    registry, spark, tmp_path
):
    from skl2onnx import to_onnx
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.model_selection import train_test_split

    data = load_breast_cancer()
    x = data.data.astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, data.target, test_size=0.4, random_state=0, stratify=data.target
    )
    model = GradientBoostingClassifier(n_estimators=60, max_depth=2, random_state=0)
    model.fit(x_train, y_train)
    (tmp_path / "gbm.onnx").write_bytes(
        to_onnx(model, x_train[:1], options={"zipmap": False}).SerializeToString()
    )
    columns = [c.replace(" ", "_") for c in data.feature_names]
    frame = pd.DataFrame(x_test.astype(np.float64), columns=columns)
    frame.insert(0, "id", np.arange(len(x_test), dtype=np.int64))
    frame["label"] = y_test.astype(np.int64)
    table = str(tmp_path / "held_out")
    spark.createDataFrame(frame).write.format("delta").save(table)
    config = write_yaml(
        tmp_path / "compress.yaml",
        {
            "recipe": {
                "name": "cancer-gbm",
                "max_accuracy_drop": 1.0,
                "steps": [{"step": "truncate_trees"}],
            },
            "model": {
                "kind": "onnx",
                "path": str(tmp_path / "gbm.onnx"),
                "feature_columns": columns,
                "outputs": {"label": "label", "probabilities": "probabilities"},
            },
            "data": {
                "evaluation": {
                    "kind": "table",
                    "path": table,
                    "format": "delta",
                    "label_column": "label",
                }
            },
        },
    )
    artifact = _compress_and_register(config, tmp_path / "artifact", "cancer-gbm")
    stages = artifact.manifest.metrics["steps"][0]["stages_after"]
    assert artifact.manifest.family == "onnx_model" and stages < 60

    summary = _score_from_registry(
        tmp_path, "cancer-gbm", table, "id", passthrough_columns=["label"], probabilities=True
    )
    assert summary["registered_version"] == "1" and summary["model_sha256"] == artifact.sha256
    assert summary["rows_out"] == len(x_test) and summary["flagged_rows"] == 0
    rows = _written(spark, tmp_path, "cancer-gbm", "id")
    assert list(rows.columns) == [
        "id",
        "label",
        "prediction",
        "probability",
        "probabilities",
        "prediction_error",
        *LINEAGE,
    ]
    assert set(rows["model_version"]) == {"1"}
    # scikit-learn's own predictions at the number of trees the artifact kept
    staged = list(model.staged_predict_proba(x_test))[stages - 1]
    np.testing.assert_array_equal(rows["prediction"], staged.argmax(axis=1))
    np.testing.assert_allclose(np.stack(rows["probabilities"]), staged, atol=1e-5)
    np.testing.assert_allclose(rows["probability"], staged.max(axis=1), atol=1e-5)


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    pixels = np.round(image * 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, mode="L").resize((16, 16), Image.Resampling.BILINEAR).save(out, "PNG")
    return out.getvalue()


@pytest.mark.slow
def test_an_image_cnn_registers_and_scores_from_the_registry(registry, spark, digits, tmp_path):
    train, held_out = digits
    tables = {}
    for name, split, extra in (
        ("train", train, []),
        ("held_out", held_out, []),
        ("to_score", held_out, [(90001, b"not an image", 0)]),
    ):
        rows = [
            (i, _png(x), int(y))
            for i, (x, y) in enumerate(zip(split.images, split.labels, strict=True))
        ]
        tables[name] = str(tmp_path / name)
        frame = spark.createDataFrame([*rows, *extra], "id long, image binary, label int")
        frame.write.format("delta").save(tables[name])
    image = {"channels": 1, "height": 16, "width": 16, "mean": [0.5], "std": [0.5]}
    source = {"kind": "table", "image_column": "image", "label_column": "label"}
    config = write_yaml(
        tmp_path / "compress.yaml",
        {
            "recipe": {
                "name": "digits-images",
                "max_accuracy_drop": 5.0,
                "steps": [{"step": "export"}],
            },
            "model": {"kind": "builtin-digits-cnn", "epochs": 3, "lr": 0.01, "channels": [4, 8, 8]},
            "image": image,
            "data": {
                "train": {**source, "path": tables["train"]},
                "evaluation": {**source, "path": tables["held_out"]},
            },
        },
    )
    artifact = _compress_and_register(config, tmp_path / "artifact", "digits-images")
    assert artifact.manifest.family == "image"

    summary = _score_from_registry(
        tmp_path, "digits-images", tables["to_score"], "id", bad_rows="flag"
    )
    assert summary["registered_version"] == "1" and summary["model_sha256"] == artifact.sha256
    assert summary["flagged_rows"] == 1
    rows = _written(spark, tmp_path, "digits-images", "id")
    assert list(rows.columns) == ["id", "prediction", "probability", "prediction_error", *LINEAGE]
    bad = rows[rows["id"] == 90001].iloc[0]
    assert pd.isna(bad["prediction"])
    assert bad["prediction_error"].startswith("column 'image' is not a decodable image")
    good = rows[rows["id"] != 90001]
    assert good["prediction_error"].isna().all()
    # the registered model's predictions are the folder's, scored by hand with ONNX Runtime
    expected = _onnx_labels(artifact, [_png(x) for x in held_out.images])
    np.testing.assert_array_equal(good["prediction"].to_numpy(), expected)


def _onnx_labels(artifact: Artifact, pngs: list[bytes]) -> np.ndarray:
    import onnxruntime as ort
    from PIL import Image

    pixels = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("L")) for b in pngs])
    x = ((pixels.astype(np.float32)[:, None] / np.float32(255)) - 0.5) / 0.5
    session = ort.InferenceSession(str(artifact.model_path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0].argmax(axis=1)
