"""The Arrow engine: ``mapInArrow`` over Spark's reader for a DataFrame
(``leanscore.udfs.arrow_path``), and ``arrow_udf`` (Spark 4.1+) for column expressions. The
model's float32 matrix is a view of the Arrow buffer where rows are regular; results are
bitwise those of the pandas engine."""

from __future__ import annotations

from leanscore.compression.artifact import Artifact
from leanscore.udfs import arrow_path
from leanscore.udfs.engines.base import Engine, TableInput, Target
from leanscore.udfs.options import ScoringOptions
from leanscore.udfs.prepare import build_scorer, columns_for
from pyspark.sql import DataFrame


def arrow_udfs_available() -> bool:
    """Spark 4.1+ has Arrow-native UDFs (``arrow_udf``)."""
    import pyspark.sql.functions as functions

    return hasattr(functions, "arrow_udf")


class ArrowEngine(Engine):
    """Arrow batches in and out: no pandas object per row (``auto`` prefers it to pandas)."""

    name = "arrow"
    auto_rank = 20

    def unavailable(self, target: Target) -> str | None:
        if isinstance(target, TableInput):
            if not arrow_path.available(target.df):
                return "this Spark has no DataFrame.mapInArrow"
            return None
        if not arrow_udfs_available():
            return "a column UDF needs Spark 4.1+ (pyspark.sql.functions.arrow_udf)"
        return None

    def score(self, table: TableInput, artifact: Artifact, options: ScoringOptions) -> DataFrame:
        df = table.df
        keys, keep, fields, names = columns_for(df, artifact, options)
        scorer = build_scorer(artifact, spark=df.sparkSession, options=options)
        return arrow_path.score_with_arrow(
            df, scorer, fields=fields, out_names=names, keep=keep, key_columns=keys
        )

    def column_udf(self, scorer, with_key: bool, return_type: str):
        from pyspark.sql.functions import arrow_udf

        return arrow_udf(arrow_path.column_batches(scorer, with_key), return_type)
