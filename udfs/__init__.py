"""Scoring in Spark. The functions exported here run on the driver (``score_dataframe``,
``score_table``, ``model_udf``, ``distribute``): they validate the options once and plan the
job; the modules behind them run in the tasks (model distribution, per-worker ONNX Runtime
sessions, the scoring kernel, the families and the engines)."""

from leanscore.udfs.api import (
    BadRowError,
    ModelUDF,
    RowPolicy,
    check_features,
    model_udf,
    output_fields,
    score_dataframe,
    score_table,
)
from leanscore.udfs.distribution import ModelSource, distribute, is_connect
from leanscore.udfs.engines.scan import ScanUnsupported
from leanscore.udfs.options import ScoringOptions
from leanscore.udfs.session_cache import SessionConfig, get_session

__all__ = [
    "BadRowError",
    "ModelSource",
    "ModelUDF",
    "RowPolicy",
    "ScanUnsupported",
    "ScoringOptions",
    "SessionConfig",
    "check_features",
    "distribute",
    "get_session",
    "is_connect",
    "model_udf",
    "output_fields",
    "score_dataframe",
    "score_table",
]
