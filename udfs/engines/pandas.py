"""The pandas engine: a pandas UDF (Iterator of Series -> DataFrame), the column-expression API
behind ``model_udf``, and the engine that scores a DataFrame through it. It runs on any Spark
with pandas UDFs; the Arrow and scan engines give bitwise identical results."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from leanscore.compression.artifact import Artifact
from leanscore.udfs.engines.base import Engine, EngineUnavailable, Target
from leanscore.udfs.kernel import ERROR_FIELD, Scored, Scorer, output_fields
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


def _pandas_iterator(scorer: Scorer, with_key: bool):
    family = scorer.family

    def predict(batches: Iterator[tuple[pd.Series, ...]]) -> Iterator[pd.DataFrame]:
        session, input_name = scorer.session()
        for cols in batches:
            if isinstance(cols, pd.Series):
                cols = (cols,)
            keys = cols[-1] if with_key else None
            feats = cols[:-1] if with_key else cols
            batch = family.from_pandas(list(feats))
            key_of = keys.iloc.__getitem__ if keys is not None else None
            yield _to_frame(scorer.score(session, input_name, batch, key_of), scorer)

    return predict


def _to_frame(scored: Scored, scorer: Scorer) -> pd.DataFrame:
    n, good, any_bad = scored.n, scored.good, scored.any_bad
    columns: dict[str, object] = {}
    for name, values in scorer.columns(scored).items():
        if values.ndim == 2:
            columns[name] = _rows(values, good, any_bad, n)
        else:
            columns[name] = _nullable(values, good, any_bad)
    columns[ERROR_FIELD] = pd.Series(scored.batch.reasons, dtype=object) if any_bad else [None] * n
    return pd.DataFrame(columns)


def _nullable(values: np.ndarray, good: np.ndarray, any_bad: bool):
    """Values with nulls where rows were flagged (a masked pandas array becomes Arrow nulls)."""
    if not any_bad:
        return values
    full = np.zeros(len(good), dtype=values.dtype)
    full[good] = values
    array_type = pd.arrays.IntegerArray if values.dtype.kind == "i" else pd.arrays.FloatingArray
    return array_type(full, ~good)


def _rows(out: np.ndarray, good: np.ndarray, any_bad: bool, n: int) -> list:
    if not any_bad:
        return list(out)
    rows: list = [None] * n
    for pos, i in enumerate(np.flatnonzero(good)):
        rows[i] = out[pos]
    return rows


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
        return pandas_udf(_pandas_iterator(scorer, with_key), return_type)
