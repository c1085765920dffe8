"""One ONNX Runtime session per Python worker process, keyed by the model's verified sha256.

The pattern of Spark's ``pyspark.ml.model_cache.ModelCache``: the first task on a worker builds
the session; later tasks on the same (reused) worker find it here. Sessions are built only from
bytes whose sha256 matches the manifest.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import onnxruntime as ort

if TYPE_CHECKING:
    from leanscore.udfs.distribution import ModelSource

GraphOptimization = Literal["disable", "basic", "extended", "all"]

_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@dataclass(frozen=True)
class SessionConfig:
    """ONNX Runtime options for the executors. ``intra_op_threads`` defaults to
    ``spark.task.cpus`` (1): otherwise every task starts a thread per core and they fight."""

    intra_op_threads: int = 1
    graph_optimization: GraphOptimization = "all"
    memory_arena: bool = True
    #: ONNX Runtime graph optimisers left out, by name; every other optimisation stays on.
    #: None: the scoring family's choice (``Family.session_config``), none for most.
    disabled_optimizers: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.intra_op_threads < 1:
            raise ValueError(f"intra_op_threads must be >= 1, got {self.intra_op_threads}")
        if self.graph_optimization not in _LEVELS:
            raise ValueError(
                f"graph_optimization must be one of {sorted(_LEVELS)}, "
                f"got {self.graph_optimization!r}"
            )

    def session_options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = _LEVELS[self.graph_optimization]
        options.enable_cpu_mem_arena = self.memory_arena
        options.log_severity_level = 3
        if self.disabled_optimizers:
            options.add_session_config_entry(
                "optimization.disable_specified_optimizers", ",".join(self.disabled_optimizers)
            )
        return options


_sessions: dict[tuple[str, SessionConfig], ort.InferenceSession] = {}
_lock = threading.Lock()


def get_session(source: ModelSource, config: SessionConfig) -> ort.InferenceSession:
    key = (source.sha256, config)
    session = _sessions.get(key)
    if session is None:
        with _lock:
            session = _sessions.get(key)
            if session is None:
                model_bytes = source.load()  # verifies the sha256
                session = ort.InferenceSession(
                    model_bytes, config.session_options(), providers=["CPUExecutionProvider"]
                )
                _sessions[key] = session
    return session


def cached_session_count() -> int:
    return len(_sessions)


def clear() -> None:
    with _lock:
        _sessions.clear()
