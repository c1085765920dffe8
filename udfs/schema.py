"""Which input columns a model can read, and how their values become float32.

Type coercion (both scoring paths apply the same rules):

- many numeric columns (tinyint, smallint, int, bigint, float, double, decimal): one float32
  matrix column each, in the manifest's order;
- one ``array<float>``: the rows as they are (zero-copy on the Arrow path);
- one ``array<double>``, ``array<int>`` or ``array<bigint>``: each element cast to float32
  (round to nearest);
- one ML ``Vector`` (``pyspark.ml.linalg``, dense or sparse): the Arrow path reads
  ``vector_to_array(col, "float32")``, the pandas path ``Vector.toArray()``: the same values.

Integers above 2**24 and doubles lose precision in float32, as they would in the model itself.
A row is *bad* when a feature is null, NaN or +-infinity, or when the array holds a number of
elements other than the model's input size; the job's ``bad_rows`` policy says what happens
(``fail`` names the row's key, the column and the value; ``flag`` gives a null prediction and
the reason in the error column). Strings, booleans, dates and other types are refused up front
with the column's name: cast them explicitly.
"""

from __future__ import annotations

from leanscore.compression.artifact import Manifest
from pyspark.sql import DataFrame
from pyspark.sql.types import DataType


def preview(names: list[str]) -> str:
    return ", ".join(names) if len(names) <= 4 else f"{names[0]}, {names[1]}, ..., {names[-1]}"


def feature_names(manifest: Manifest) -> list[str]:
    """The table columns the model reads (its family says which)."""
    from leanscore.udfs.families import family_for

    return family_for(manifest).input_columns()


def is_vector(dtype: DataType) -> bool:
    return dtype.typeName() == "vector" or "VectorUDT" in type(dtype).__name__


def check_features(df: DataFrame, manifest: Manifest) -> None:
    """Fail up front, naming the column, when ``df`` does not carry what the model reads."""
    from leanscore.udfs.families import family_for

    family = family_for(manifest)
    by_name = {f.name: f.dataType for f in df.schema.fields}
    wanted = family.input_columns()
    missing = [c for c in wanted if c not in by_name]
    if missing:
        raise ValueError(
            f"feature column {missing[0]!r} is missing from the input ({len(missing)} of "
            f"{len(wanted)} missing); the model {manifest.name!r} reads {preview(wanted)}"
        )
    family.check_input_types(by_name)
