"""The pandas engine: a pandas UDF (Iterator of Series -> DataFrame), the column-expression API
behind ``model_udf``, and the engine that scores a DataFrame through it. It runs on any Spark
with pandas UDFs; the Arrow and scan engines give bitwise identical results. The function its
workers run is ``leanscore.udfs.pandas_path``'s, imported when this engine builds a UDF, so that
importing the engines (as every job's driver does) does not import pandas."""

from __future__ import annotations

from leanscore.compression.artifact import Artifact
from leanscore.udfs.engines.base import Engine, EngineUnavailable, Target
from leanscore.udfs.kernel import Scorer, output_fields
from leanscore.udfs.options import ScoringOptions
from leanscore.udfs.prepare import build_scorer, columns_for, key_expression
from leanscore.udfs.schema import preview
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf


def _ddl(fields: list[tuple[str, str]]) -> str:
    return "struct<" + ",".join(f"{n}:{t}" for n, t in fields) + ">"


class ModelUDF:
    """Callable returned by ``model_udf`` and ``text_embedding_udf``: ``predict(*input_cols,
    key=None) -> Column``, a struct of the model's outputs and ``error``. ``engine`` names the
    engine whose column UDF scores (``pandas`` on any Spark; ``arrow`` on Spark 4.1+)."""

    def __init__(
        self, artifact: Artifact, scorer: Scorer, *, probabilities: bool, engine: str = "pandas"
    ):
        from leanscore.udfs.engines.base import engine_for

        self.artifact = artifact
        self.scorer = scorer
        self.engine = engine_for(engine)
        self.fields = output_fields(artifact.manifest, probabilities=probabilities)
        self.return_type = _ddl(self.fields)
        self._expected = scorer.family.input_columns()
        self._udfs: dict[bool, object] = {}

    def __call__(self, *cols: Column | str, key: Column | str | None = None) -> Column:
        if len(cols) != len(self._expected):
            raise ValueError(
                f"Model {self.artifact.manifest.name!r} expected {len(self._expected)} input "
                f"columns ({preview(self._expected)}), but received {len(cols)} columns"
            )
        with_key = key is not None
        if with_key not in self._udfs:
            self._udfs[with_key] = self.engine.column_udf(self.scorer, with_key, self.return_type)
        args = [F.col(c) if isinstance(c, str) else c for c in cols]
        if with_key:
            args.append((F.col(key) if isinstance(key, str) else key).cast("string"))
        return self._udfs[with_key](*args)


class PandasEngine(Engine):
    """Scores through ``pandas_udf``: any Spark, any DataFrame; the last resort of ``auto``."""

    name = "pandas"
    auto_rank = 30
    scores_shadow = False

    def unavailable(self, target: Target) -> str | None:
        return None

    def score(self, table, artifact: Artifact, options: ScoringOptions) -> DataFrame:
        if options.shadow is not None:
            raise EngineUnavailable(
                "the pandas engine scores no shadow sample; use engine auto, arrow or scan"
            )
        df = table.df
        keys, keep, fields, names = columns_for(df, artifact, options)
        scorer = build_scorer(artifact, spark=df.sparkSession, options=options)
        predict = ModelUDF(artifact, scorer, probabilities=options.probabilities)
        key = key_expression(keys) if keys else None
        tmp = "__leanscore_result"
        scored = df.withColumn(tmp, predict(*scorer.family.input_columns(), key=key))
        outputs = [F.col(f"{tmp}.{name}").alias(names[name]) for name, _ in fields]
        return scored.select(*[F.col(c) for c in keep], *outputs)

    def column_udf(self, scorer, with_key: bool, return_type: str):
        from leanscore.udfs.pandas_path import batch_predictor

        return pandas_udf(batch_predictor(scorer, with_key), return_type)
