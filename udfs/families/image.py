"""The image family: a CNN's fixed (channels, height, width) input from one image column of
PNG/JPEG bytes or from one fixed-shape numeric array column (decoded and normalised by
``compression.image_inputs``, the same code ``leanscore compress`` trains on); a classifier's
label and probability (or a regression value, an embedding) as outputs."""

from __future__ import annotations

from leanscore.compression.artifact import ImageSpec
from leanscore.compression.image_inputs import decode_images, from_array_batch, image_batch
from leanscore.udfs.families.base import Family
from leanscore.udfs.families.tabular import TabularFamily, task_columns, task_fields


class ImageFamily(Family):
    name = "image"
    # Rows per ONNX Runtime call. A CNN's activations grow with the batch (a 1,024-image batch
    # of 28x28 photos through 8 channels is 25 MB): small batches keep them in the core's
    # cache, which matters most for the small, fast models compression makes.
    default_batch_size = 32

    @property
    def spec(self) -> ImageSpec:
        return self.manifest.features.image

    def input_columns(self) -> list[str]:
        features = self.manifest.features
        return [features.image_column or features.array_column]

    def check_input_types(self, types: dict) -> None:
        from pyspark.sql.types import BinaryType

        features = self.manifest.features
        if features.image_column is None:
            TabularFamily(self.manifest).check_input_types(types)
            return
        dtype = types[features.image_column]
        if not isinstance(dtype, BinaryType):
            raise TypeError(
                f"image column {features.image_column!r} has type {dtype.simpleString()}, the "
                "model needs binary (PNG or JPEG bytes); read image files with "
                "spark.read.format('binaryFile') and use its 'content' column"
            )

    def from_pandas(self, columns):
        return image_batch(columns[0], self.manifest.features)

    def from_arrow(self, arrays):
        features = self.manifest.features
        array = arrays[0]
        if features.image_column is not None:
            return decode_images(array.to_pylist(), features.image_column, self.spec)
        from leanscore.udfs.arrow_batch import from_arrow_list

        tabular = from_arrow_list(array, features.array_column, features.size)
        return from_array_batch(tabular, self.spec)

    def element_name(self, j: int) -> str:
        spec = self.spec
        channel, rest = divmod(j, spec.height * spec.width)
        y, x = divmod(rest, spec.width)
        return f"column {self.input_columns()[0]!r} channel {channel} pixel (y={y}, x={x})"

    def output_fields(self, *, probabilities: bool = False) -> list[tuple[str, str]]:
        return task_fields(self.manifest.task, probabilities=probabilities)

    def output_columns(self, out, fields):
        return task_columns(self.manifest.task, out, fields)
