"""The pandas engine's worker side: the pandas UDF's function (an iterator of feature Series in,
one DataFrame of outputs per batch out) and the conversion of scored rows into pandas columns.

Apart from the engine (``leanscore.udfs.engines.pandas``) so that importing the engines, as a
job's driver does before its Spark session exists, does not import pandas.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from leanscore.udfs.kernel import ERROR_FIELD, Scored, Scorer


def batch_predictor(scorer: Scorer, with_key: bool):
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
