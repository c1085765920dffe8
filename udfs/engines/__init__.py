"""The scoring engines behind one interface (``Engine``), registered by name.

``pandas`` (a pandas UDF), ``arrow`` (``mapInArrow`` over Spark's reader; ``arrow_udf`` for
column expressions) and ``scan`` (pyarrow reads the Parquet files inside the tasks). Every
caller (the nightly jobs, ``score_dataframe``, ``score_table``, the text UDF) names an engine
or ``auto`` and goes through ``candidates``/``resolve``/``score_with``, the one place ``auto``
is resolved.

Adding an engine: write ``udfs/engines/<name>.py`` with an ``Engine`` subclass (its ``name``
registers it; ``auto_rank`` places it in ``auto``'s order; ``unavailable`` says where it does
not apply; ``score`` and/or ``column_udf`` do the work) and import it below.
"""

from __future__ import annotations

from leanscore.udfs.engines import arrow, pandas, scan
from leanscore.udfs.engines.base import (
    AUTO,
    COLUMN,
    ColumnExpression,
    Engine,
    EngineUnavailable,
    TableInput,
    candidates,
    check_name,
    engine_for,
    known_names,
    may_read_whole_tables,
    reads_whole_tables_only,
    resolve,
    score_with,
    scores_shadow,
)

ENGINE_MODULES = (arrow, pandas, scan)

__all__ = [
    "AUTO",
    "COLUMN",
    "ENGINE_MODULES",
    "ColumnExpression",
    "Engine",
    "EngineUnavailable",
    "TableInput",
    "candidates",
    "check_name",
    "engine_for",
    "known_names",
    "may_read_whole_tables",
    "reads_whole_tables_only",
    "resolve",
    "score_with",
    "scores_shadow",
]
