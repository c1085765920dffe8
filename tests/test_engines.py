"""The engine registry and the one scoring options object: engines are looked up by name, ``auto``
is resolved in one place, unknown names get one line listing the known ones, no module outside
the registry compares engine names, and ``ScoringOptions`` validates every option once, stays
small when pickled, and is built the same way from keywords and from the nightly config."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pytest
from leanscore.jobs.config import ConfigError, validate
from leanscore.jobs.embed import EmbedConfig
from leanscore.jobs.score import ScoreConfig
from leanscore.udfs.engines import (
    COLUMN,
    Engine,
    EngineUnavailable,
    TableInput,
    candidates,
    check_name,
    engine_for,
    known_names,
)
from leanscore.udfs.engines import base as registry
from leanscore.udfs.options import RowPolicy, ScoringOptions
from pydantic import ValidationError

ROOT = Path(__file__).resolve().parents[1]
REGISTRY_MODULE = ROOT / "udfs" / "engines" / "base.py"


def engine_name_comparisons(source: str, names: set[str]) -> list[int]:
    """Line numbers of comparisons that decide by an engine's name: ``x == "scan"``,
    ``engine in ("auto", "arrow")``, or any comparison of a variable or attribute called
    ``engine``."""

    def names_an_engine(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in names
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            return any(names_an_engine(e) for e in node.elts)
        if isinstance(node, ast.Name):
            return node.id == "engine"
        return isinstance(node, ast.Attribute) and node.attr == "engine"

    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Compare)
        and any(names_an_engine(side) for side in [node.left, *node.comparators])
    ]


def test_no_module_outside_the_registry_compares_engine_names():
    names = set(known_names())
    found = []
    for folder in ("compression", "udfs", "jobs", "notebooks", "conf"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == REGISTRY_MODULE:
                continue
            lines = engine_name_comparisons(path.read_text(), names)
            found += [f"{path.relative_to(ROOT)}:{line}" for line in lines]
    assert found == []


def test_the_comparison_check_finds_string_and_variable_comparisons():
    source = (
        'if engine == "scan":\n    pass\n'
        'ok = mode in ("auto", "arrow")\n'
        "same = self.engine != other\n"
        'fine = fmt == "delta"\n'
    )
    assert engine_name_comparisons(source, set(known_names())) == [1, 3, 4]


def test_every_engine_is_registered_by_name_and_unknown_names_get_one_line():
    assert known_names() == ["auto", "arrow", "pandas", "scan"]
    assert {engine_for(n).name for n in ("arrow", "pandas", "scan")} == {"arrow", "pandas", "scan"}
    with pytest.raises(ValueError) as err:
        check_name("fast")
    assert str(err.value) == (
        "unknown engine 'fast'; the known engines are auto, arrow, pandas, scan"
    )
    with pytest.raises(ValueError, match="'auto' names no engine by itself"):
        engine_for("auto")


def test_auto_resolves_in_order_and_a_named_engine_says_why_it_cannot(spark, tmp_path):
    df = spark.range(3)
    whole = TableInput(df, path=str(tmp_path / "t"), format="parquet")
    assert [e.name for e in candidates("auto", whole)] == ["scan", "arrow", "pandas"]
    assert [e.name for e in candidates("auto", TableInput(df))] == ["arrow", "pandas"]
    assert [e.name for e in candidates("auto", COLUMN)] == ["arrow", "pandas"]  # Spark 4.1+
    assert [e.name for e in candidates("pandas", COLUMN)] == ["pandas"]
    with pytest.raises(EngineUnavailable, match="engine 'scan' cannot score this input: it "):
        candidates("scan", TableInput(df))
    with pytest.raises(EngineUnavailable, match="a column expression is not one"):
        candidates("scan", COLUMN)


@pytest.fixture
def extra_engine():
    """A second table engine registered for one test (defining the subclass registers it)."""

    class EveryOtherRow(Engine):
        name = "every-other-row"
        auto_rank = 15  # between scan and arrow

        def unavailable(self, target):
            return None if isinstance(target, TableInput) else "tables only"

    yield EveryOtherRow
    registry._REGISTRY.pop("every-other-row")


def test_adding_an_engine_is_defining_its_subclass(spark, extra_engine):
    assert "every-other-row" in known_names()
    table = TableInput(spark.range(1), path="/somewhere", format="delta")
    assert [e.name for e in candidates("auto", table)] == [
        "scan",
        "every-other-row",
        "arrow",
        "pandas",
    ]
    assert "every-other-row" not in [e.name for e in candidates("auto", COLUMN)]
    with pytest.raises(EngineUnavailable, match="does not score tables"):
        Engine.score(engine_for("every-other-row"), table, None, ScoringOptions())


def test_configs_check_the_engine_name_with_the_registry():
    base = {"artifact": "a", "input": {"path": "in"}, "output": {"path": "out"}}
    with pytest.raises(ConfigError, match="engine: Value error, unknown engine 'fast'; the known"):
        validate(ScoreConfig, {**base, "engine": "fast"}, source="nightly.yaml")
    assert validate(ScoreConfig, {**base, "engine": "pandas"}, source="x").engine == "pandas"
    # the embed job scores through the same engines: scan where it reads a whole path
    assert EmbedConfig.model_validate({**base, "engine": "scan"}).engine == "scan"
    filtered = {**base, "input": {"path": "in", "filter": "day = 1"}, "engine": "scan"}
    with pytest.raises(ValidationError, match="engine 'scan' reads a whole Parquet/Delta path"):
        EmbedConfig.model_validate(filtered)
    # the embedding bench's text UDF variants take the same names from the registry
    from leanscore.bench.embed import BenchEmbedConfig
    from leanscore.jobs.config import read_yaml

    bench = read_yaml(ROOT / "conf" / "bench-embed.yaml")
    assert BenchEmbedConfig.model_validate({**bench, "engine": "pandas"}).engine == "pandas"
    with pytest.raises(ValidationError, match="unknown engine 'fast'; the known engines are"):
        BenchEmbedConfig.model_validate({**bench, "engine": "fast"})
    with pytest.raises(ValidationError, match="engine 'scan' reads whole Parquet/Delta tables"):
        BenchEmbedConfig.model_validate({**bench, "engine": "scan"})


def test_options_are_validated_once_frozen_and_small():
    options = ScoringOptions.of(
        None, key_columns=["id"], bad_rows="flag", batch_size=None, range_margin=1.0
    )
    assert options.key_columns == ("id",) and options.batch_size is None  # the family's own
    assert options.policy == RowPolicy(bad_rows="flag", range_margin=1.0)
    with pytest.raises(ValidationError):
        options.batch_size = 1  # frozen
    assert pickle.loads(pickle.dumps(options)) == options
    assert len(pickle.dumps(options)) < 1024
    # a whole RowPolicy as bad_rows, its fields replaced by the keywords given
    merged = ScoringOptions.of(
        options, bad_rows=RowPolicy(out_of_range="flag"), out_of_range="fail", batch_size=64
    )
    assert (merged.bad_rows, merged.out_of_range, merged.batch_size) == ("fail", "fail", 64)
    assert merged.key_columns == ("id",)  # kept from the options it started from
    for bad, message in (
        ({"batch_size": 0}, "batch_size is 0: Input should be greater than 0"),
        ({"out_of_range": "isolate"}, "out_of_range is 'isolate'"),
        ({"range_margin": float("nan")}, "range_margin is nan"),
        ({"max_task_bytes": -1}, "max_task_bytes is -1"),
        ({"batchsize": 10}, "batchsize is 10: Extra inputs are not permitted"),
    ):
        with pytest.raises(ValueError, match=message) as err:
            ScoringOptions.of(None, **bad)
        assert "\n" not in str(err.value)


def test_the_nightly_config_builds_the_same_options_as_the_keywords():
    config = ScoreConfig.model_validate(
        {
            "artifact": "a",
            "input": {"path": "in"},
            "output": {"path": "out"},
            "key_columns": ["row_id"],
            "bad_rows": "flag",
            "out_of_range": "fail",
            "batch_size": 128,
            "session": {"intra_op_threads": 2, "memory_arena": False},
        }
    )
    from_config = config.scoring_options(["row_id", "region"])
    from_keywords = ScoringOptions.of(
        key_columns=["row_id"],
        keep_columns=["row_id", "region"],
        bad_rows="flag",
        out_of_range="fail",
        batch_size=128,
        intra_op_threads=2,
        memory_arena=False,
    )
    assert from_config == from_keywords
    session = from_config.session_config()
    assert (session.intra_op_threads, session.memory_arena) == (2, False)
