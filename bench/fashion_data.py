"""Zalando's Fashion-MNIST, as Debian's ``dataset-fashion-mnist`` installs it, turned into the
Delta tables the images workload scores: PNG bytes, the label and a row id.

The published split is kept. The 60,000 training images are the only ones any recipe sees:
most of them (``part = 'fit'``) train the baseline and fine-tune the recipes, a fixed, seeded
hold-out of them (``part = 'holdout'``) calibrates static int8 and decides every accuracy gate
and autotune's choice. The 10,000 test images are used only for the final accuracy: the bench's
scoring table repeats them for volume (``example_id`` names the distinct test image, so the
95% interval counts 10,000 examples however many copies are scored).

Bench and demo code: nothing in the product imports it.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
from PIL import Image
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
BASELINES = Path("/usr/share/doc/dataset-fashion-mnist/benchmark/baselines.json")
CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
SIDE = 28
TEST_IMAGES = 10_000
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_INSTALL = "install Debian's dataset-fashion-mnist package (make setup does)"


def read_idx(path: Path) -> np.ndarray:
    """One gzip idx file (LeCun's format: magic 0x0000 + dtype byte + rank byte, big-endian
    int32 dimensions, then the data) as a numpy array; only unsigned bytes occur here."""
    if not path.is_file():
        raise FileNotFoundError(f"Fashion-MNIST file {path} does not exist; {_INSTALL}")
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(
            f"{path} is not an idx file of unsigned bytes (magic {raw[:4].hex()}); reinstall "
            "dataset-fashion-mnist"
        )
    rank = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, ">i4", count=rank, offset=4))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * rank)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path} holds {data.size} bytes for dimensions {dims}: truncated")
    return data.reshape(dims)


def load_split(split: str, directory: Path = FASHION_DIR) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, 28, 28) uint8, labels (n,) int64) of the published ``train`` or ``test``."""
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images_file, labels_file = _FILES[split]
    images = read_idx(directory / images_file)
    labels = read_idx(directory / labels_file).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{directory}: {len(images)} {split} images but {len(labels)} labels")
    return images, labels


def holdout_mask(n: int, holdout: int, seed: int = 0) -> np.ndarray:
    """A fixed, seeded choice of ``holdout`` of ``n`` training images (True = held out)."""
    if not 0 < holdout < n:
        raise ValueError(f"holdout must be between 1 and {n - 1}, got {holdout}")
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng([seed, 27]).permutation(n)[:holdout]] = True
    return mask


def png_bytes(images: np.ndarray) -> list[bytes]:
    """Each (28, 28) uint8 image as the grayscale PNG a catalogue would store."""
    out = []
    for pixels in images:
        buffer = io.BytesIO()
        Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def photo_frame(spark: SparkSession, images, labels, ids, extra: dict | None = None) -> DataFrame:
    """Photos as ``row_id``, ``image`` (PNG bytes), ``label`` and any ``extra`` string columns."""
    import pandas as pd

    data = {"row_id": np.asarray(ids, np.int64), "image": png_bytes(images)}
    data["label"] = np.asarray(labels, np.int32)
    for name, values in (extra or {}).items():
        data[name] = values
    schema = "row_id long, image binary, label int" + "".join(
        f", {name} string" for name in extra or {}
    )
    return spark.createDataFrame(pd.DataFrame(data), schema=schema)


def write_training_tables(
    spark: SparkSession,
    out_dir: str | Path,
    *,
    holdout: int = 6_000,
    train_limit: int | None = None,
    test_limit: int | None = None,
    seed: int = 0,
    directory: Path = FASHION_DIR,
) -> dict[str, str]:
    """Write ``train`` (60,000 rows, ``part`` 'fit' or 'holdout') and ``test`` (10,000 rows)
    Delta tables under ``out_dir`` and return their paths. ``train_limit``/``test_limit`` cut
    each split to its first rows (the suite's small slice); the hold-out is then ``holdout``
    of those."""
    out = Path(out_dir)
    paths = {}
    for split, limit in (("train", train_limit), ("test", test_limit)):
        images, labels = load_split(split, directory)
        images, labels = images[:limit], labels[:limit]
        extra = None
        if split == "train":
            part = np.where(holdout_mask(len(images), holdout, seed), "holdout", "fit")
            extra = {"part": part}
        path = str(out / f"fashion_{split}")
        frame = photo_frame(spark, images, labels, np.arange(len(images)), extra)
        frame.repartition(2).write.format("delta").mode("overwrite").save(path)
        paths[split] = path
    return paths


def write_scoring_table(
    spark: SparkSession, test_path: str, path: str, rows: int, *, partitions: int | None = None
) -> int:
    """The nightly table: the test images repeated to ``rows`` rows (a multiple of the test
    table's size, so every distinct image counts equally), with ``row_id``, ``example_id``
    (the test image's row id), ``image`` and ``label``; returns the distinct images."""
    test = spark.read.format("delta").load(test_path)
    distinct = test.count()
    if rows % distinct:
        raise ValueError(
            f"rows ({rows:,}) must be a multiple of the {distinct:,} test images, so that each "
            "counts equally in the accuracy"
        )
    frame = repeated_photos(test, distinct, rows)
    parts = partitions or max(2, rows // 100_000)
    frame.repartition(parts).write.format("delta").mode("overwrite").save(path)
    return distinct


def repeated_photos(photos: DataFrame, distinct: int, rows: int) -> DataFrame:
    """``photos`` (``row_id`` 0 to ``distinct`` - 1, ``image``, ``label``) repeated to ``rows``
    rows: ``row_id``, ``example_id`` (the photo's own row id), ``image``, ``label``. Where
    ``rows`` is not a multiple of ``distinct``, the first photos appear once more."""
    copies = photos.sparkSession.range(-(-rows // distinct)).withColumnRenamed("id", "copy")
    return (
        copies.crossJoin(photos)
        .select(
            (F.col("copy") * distinct + F.col("row_id")).alias("row_id"),
            F.col("row_id").alias("example_id"),
            "image",
            "label",
        )
        .where(F.col("row_id") < rows)
    )
