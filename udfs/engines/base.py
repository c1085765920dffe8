"""The interface every scoring engine implements, and the registry that names them.

An engine is how rows reach the model and how results leave: the pandas UDF, ``mapInArrow``
over Spark's reader, or the scan engine that reads Parquet files with pyarrow inside the tasks.
What it scores with (the ``Scorer``, the row policies, the output columns) is the same for all
(``leanscore.udfs.prepare``), so every engine gives the same predictions.

An ``Engine`` subclass registers itself under its ``name`` when its module is imported (as the
scoring families do). ``engine_for`` looks a name up; ``candidates`` is the one place ``auto``
is resolved; ``score_with`` scores with the first candidate that applies. No module outside this
package compares engine names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from leanscore.compression.errors import LeanscoreError

if TYPE_CHECKING:
    from leanscore.compression.artifact import Artifact
    from leanscore.udfs.kernel import Scorer
    from leanscore.udfs.options import ScoringOptions
    from pyspark.sql import DataFrame

AUTO = "auto"
_REGISTRY: dict[str, Engine] = {}


class EngineUnavailable(LeanscoreError, ValueError):
    """The engine cannot score this input here; the message says why (``auto`` then tries the
    next engine, a named engine fails with it)."""


@dataclass(frozen=True)
class TableInput:
    """What a table-scoring engine reads: ``df`` as Spark reads the input, and, when the input
    is a whole Parquet directory or Delta table (no filter, no partition selection), its
    ``path`` and ``format``, which engines that read files themselves need."""

    df: DataFrame
    path: str | None = None
    format: Literal["delta", "parquet"] = "delta"


@dataclass(frozen=True)
class ColumnExpression:
    """A column-expression UDF (``df.withColumn(..., udf(col))``): no table to read, one
    column's batches in, one struct column out."""


COLUMN = ColumnExpression()
Target = TableInput | ColumnExpression


class Engine:
    """One way of scoring. Subclasses set ``name`` (which registers them) and ``auto_rank``
    (the order ``auto`` tries them in, lowest first) and implement what they support."""

    name: ClassVar[str]
    auto_rank: ClassVar[int]
    #: True for an engine that reads a whole Parquet/Delta path itself (no filtered input).
    reads_whole_tables: ClassVar[bool] = False
    #: True for an engine whose tasks can score a shadow sample with a reference model
    #: (``leanscore.udfs.shadow``: it needs the Arrow batches in the task).
    scores_shadow: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            _REGISTRY[cls.name] = cls()

    def unavailable(self, target: Target) -> str | None:
        """None when this engine can score ``target`` here, else why not (cheap: no Spark
        job). An engine may still find out while it scores, and raise ``EngineUnavailable``."""
        raise NotImplementedError

    def score(self, table: TableInput, artifact: Artifact, options: ScoringOptions) -> DataFrame:
        """``options.keep_columns`` of the input plus the model's outputs as flat columns
        (``leanscore.udfs.prepare.output_names``). Raises ``EngineUnavailable`` before any
        Spark job when it finds it cannot read the input after all."""
        raise EngineUnavailable(f"the {self.name} engine does not score tables")

    def column_udf(self, scorer: Scorer, with_key: bool, return_type: str):
        """A UDF scoring its argument columns (the family's input columns, then the key when
        ``with_key``) with ``scorer``, returning the struct ``return_type``."""
        raise EngineUnavailable(f"the {self.name} engine does not make column UDFs")


def known_names() -> list[str]:
    """Every name an engine option accepts: ``auto`` and the registered engines."""
    return [AUTO, *sorted(_REGISTRY)]


def check_name(name: str) -> str:
    """``name`` when it is ``auto`` or a registered engine; else one line naming the known."""
    if name != AUTO and name not in _REGISTRY:
        raise ValueError(
            f"unknown engine {name!r}; the known engines are {', '.join(known_names())}"
        )
    return name


def engine_for(name: str) -> Engine:
    """The registered engine called ``name`` (not ``auto``: see ``candidates``)."""
    check_name(name)
    if name == AUTO:
        raise ValueError("'auto' names no engine by itself; resolve it with candidates()")
    return _REGISTRY[name]


def reads_whole_tables_only(name: str) -> bool:
    """Whether the engine option ``name`` can only read a whole Parquet/Delta path (never
    true of ``auto``, which falls back to an engine that reads any input)."""
    return check_name(name) != AUTO and _REGISTRY[name].reads_whole_tables


def may_read_whole_tables(name: str) -> bool:
    """Whether the engine option ``name`` may resolve to an engine that reads a whole
    Parquet/Delta path itself (``auto`` may: it tries such an engine first)."""
    return check_name(name) == AUTO or _REGISTRY[name].reads_whole_tables


def scores_shadow(name: str) -> bool:
    """Whether the engine option ``name`` can score a shadow sample (``auto`` can: it resolves
    to an engine that does wherever one applies)."""
    return check_name(name) == AUTO or _REGISTRY[name].scores_shadow


def candidates(name: str, target: Target) -> list[Engine]:
    """The engines that may score ``target`` under the option ``name``, in the order to try
    them: the one place ``auto`` is resolved. ``auto``: every registered engine that applies,
    by ``auto_rank``; a named engine: that one, or ``EngineUnavailable`` saying why not."""
    check_name(name)
    if name == AUTO:
        ranked = sorted(_REGISTRY.values(), key=lambda e: e.auto_rank)
        usable = [e for e in ranked if e.unavailable(target) is None]
        if not usable:
            raise EngineUnavailable("no registered engine can score this input here")
        return usable
    engine = _REGISTRY[name]
    why = engine.unavailable(target)
    if why is not None:
        raise EngineUnavailable(f"engine {name!r} cannot score this input: {why}")
    return [engine]


def resolve(name: str, target: Target) -> Engine:
    """The engine that scores ``target`` under ``name``: the first of ``candidates``."""
    return candidates(name, target)[0]


def score_with(
    name: str,
    table: TableInput,
    artifact: Artifact,
    options: ScoringOptions,
    *,
    on_fallback: Callable[[str], None] | None = None,
) -> tuple[DataFrame, str]:
    """Score ``table`` with the engine ``name`` (``auto``: the first candidate that scores it;
    ``on_fallback(reason)`` hears why one stepped aside). Returns the scored DataFrame and the
    name of the engine that built it."""
    engines = candidates(name, table)
    for engine in engines:
        try:
            return engine.score(table, artifact, options), engine.name
        except EngineUnavailable as why:
            if name != AUTO or engine is engines[-1]:
                raise
            if on_fallback is not None:
                on_fallback(str(why))
    raise AssertionError("unreachable: candidates() returns at least one engine")
