"""The one place compression reads a table: a small sample of a Parquet or Delta table pulled
to the driver as numpy, with its lineage (path, format, Delta version) for the manifest.

Spark is imported lazily and the session is the caller's (``leanscore compress`` starts one when
its data is a table), so nothing else in compression needs Spark and compression never imports
the jobs layer.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from leanscore.compression.artifact import ImageSpec
from leanscore.compression.data import LabelledData
from pydantic import BaseModel, ConfigDict, Field, model_validator


class TableSample(BaseModel):
    """A sample of a Parquet/Delta table: features from one array column, many numeric
    columns, one image column (PNG/JPEG bytes, decoded by the image family as scoring will),
    or one text column (for a text model: the texts as they are, tokenized by the model's own
    tokenizer); labels from an optional column (class indices; for a text model also the class
    names)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["table"] = "table"
    path: str = Field(min_length=1)
    format: Literal["delta", "parquet"] = "delta"
    feature_column: str | None = None
    feature_columns: list[str] | None = None
    image_column: str | None = Field(
        default=None, description="PNG/JPEG bytes; the compress config's 'image' says how"
    )
    text_column: str | None = None
    label_column: str | None = None
    limit: int = Field(default=50_000, ge=1, description="rows pulled to the driver at most")
    filter: str | None = Field(default=None, description="Spark SQL predicate")
    version: int | None = Field(default=None, ge=0, description="Delta time travel")

    @model_validator(mode="after")
    def _one_layout(self) -> TableSample:
        layouts = (self.feature_column, self.feature_columns, self.image_column, self.text_column)
        if sum(v is not None for v in layouts) != 1:
            raise ValueError(
                "give exactly one of 'feature_column', 'feature_columns', 'image_column' or "
                "'text_column'"
            )
        if self.format == "parquet" and self.version is not None:
            raise ValueError("'version' is Delta time travel; a Parquet table has none")
        return self


def delta_version(spark, path: str) -> int:
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(spark, path).history(1).select("version").first()[0])


def read_table_sample(
    spec: TableSample, *, spark=None, image: ImageSpec | None = None
) -> LabelledData:
    """Read at most ``spec.limit`` rows, pinned to one Delta version so the lineage is exact.

    With ``image``, the image column (or the pixel array column) becomes (n, C, H, W) inputs
    through the image family's own decoding, so training, calibration and scoring see
    identical tensors; a row that does not decode stops the sample, naming it."""
    _check_layout(spec, image)
    df, version = _open(spec, spark)
    column = spec.text_column or spec.image_column or spec.feature_column
    wanted = [column] if column else list(spec.feature_columns)
    if spec.label_column:
        wanted.append(spec.label_column)
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        raise ValueError(
            f"table {spec.path} has no column(s) {missing}; its columns are {df.columns}"
        )
    if spec.filter:
        df = df.where(spec.filter)
    pdf = df.select(*wanted).limit(spec.limit).toPandas()
    if len(pdf) == 0:
        raise ValueError(f"table {spec.path} gave no rows (filter {spec.filter!r})")
    features = _features(pdf, spec, image)
    source = {
        "path": spec.path,
        "format": spec.format,
        "delta_version": version,
        "rows": len(features),
        "filter": spec.filter,
        "feature_column": spec.feature_column,
        "feature_columns": spec.feature_columns,
        "image_column": spec.image_column,
        "text_column": spec.text_column,
        "label_column": spec.label_column,
    }
    return LabelledData(np.ascontiguousarray(features), _labels(pdf, spec), source)


def _check_layout(spec: TableSample, image: ImageSpec | None) -> None:
    if spec.image_column is not None and image is None:
        raise ValueError(
            f"table {spec.path}: image_column {spec.image_column!r} needs the config's 'image' "
            "(channels, height, width and the normalisation)"
        )
    if spec.feature_columns is not None and image is not None:
        raise ValueError(
            f"table {spec.path}: an image model reads one image_column or one feature_column "
            "(a pixel array), not feature_columns"
        )


def _open(spec: TableSample, spark):
    """(the table as a DataFrame, the Delta version it is pinned to; None for Parquet)."""
    if spark is None:
        from pyspark.sql import SparkSession

        spark = SparkSession.getActiveSession()
    if spark is None:
        raise RuntimeError(
            f"reading {spec.path} needs a Spark session: start one first "
            "(leanscore compress starts one when its data is a table)"
        )
    reader = spark.read.format(spec.format)
    version = None
    if spec.format == "delta":
        try:
            version = spec.version if spec.version is not None else delta_version(spark, spec.path)
        except Exception as err:  # noqa: BLE001 - Spark raises many types for a bad path
            raise FileNotFoundError(
                f"{spec.path} is not a readable Delta table ({str(err).splitlines()[0]}); "
                "check 'path' and 'format'"
            ) from err
        reader = reader.option("versionAsOf", version)
    try:
        return reader.load(spec.path), version
    except Exception as err:  # noqa: BLE001
        raise FileNotFoundError(
            f"cannot read {spec.format} table {spec.path}: {str(err).splitlines()[0]}"
        ) from err


def _features(pdf, spec: TableSample, image: ImageSpec | None) -> np.ndarray:
    if spec.text_column:
        return _texts(pdf[spec.text_column], spec)
    if image is not None:
        features = _image_features(pdf[spec.image_column or spec.feature_column], spec, image)
    elif spec.feature_column:
        features = np.stack([np.asarray(v, dtype=np.float32) for v in pdf[spec.feature_column]])
    else:
        features = pdf[list(spec.feature_columns)].to_numpy(dtype=np.float32)
    if not np.isfinite(features).all():
        raise ValueError(f"table {spec.path} has null/NaN/infinite features in the sample")
    return features


def _labels(pdf, spec: TableSample) -> np.ndarray | None:
    if not spec.label_column:
        return None
    labels = pdf[spec.label_column].to_numpy()
    if pdf[spec.label_column].isna().any():
        raise ValueError(f"label column {spec.label_column!r} of {spec.path} has nulls")
    if not (spec.text_column and labels.dtype == object):  # text: class names allowed
        labels = labels.astype(np.int64)
    return labels


def _image_features(values, spec: TableSample, image: ImageSpec) -> np.ndarray:
    """The (n, C, H, W) inputs of an image or pixel-array column, by the scoring code."""
    from leanscore.compression.artifact import FeatureSpec
    from leanscore.compression.image_inputs import image_batch

    layout = (
        {"image_column": spec.image_column}
        if spec.image_column is not None
        else {"array_column": spec.feature_column}
    )
    batch = image_batch(values, FeatureSpec(**layout, image=image, size=image.size))
    if batch.bad.any():
        i = int(np.flatnonzero(batch.bad)[0])
        raise ValueError(
            f"table {spec.path}: {int(batch.bad.sum())} sampled row(s) cannot be the model's "
            f"input, the first (row {i} of the sample): {batch.reasons[i]}; fix those rows or "
            "leave them out with 'filter'"
        )
    return batch.matrix


def _texts(column, spec: TableSample) -> np.ndarray:
    """The sample's texts as an object array; a null, non-string or blank one is an error
    naming the column (a held-out set must hold what the model can read)."""
    texts = column.tolist()
    for value in texts:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(
                f"text column {spec.text_column!r} of {spec.path} holds {value!r} in the "
                "sample; filter null and empty texts out (filter: "
                f"\"{spec.text_column} IS NOT NULL AND trim({spec.text_column}) != ''\")"
            )
    return np.array(texts, dtype=object)
