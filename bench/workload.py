"""A bench workload's models and a table of its rows, for the benches that run on another bench's
workload (the nightly job, the feature layouts): the workload's own ``prepare`` step builds
whatever is missing, into a source table of the size the caller asks for, so the workload's
bench keeps its own table and size."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from leanscore.bench.compare import BenchConfig, resolve_path
from leanscore.bench.prepare import prepare_inputs
from leanscore.jobs.config import find_config, load_config
from pyspark.sql import SparkSession
from rich.console import Console


@dataclass(frozen=True)
class PreparedWorkload:
    """The workload's bench config and where its pieces are (paths resolved)."""

    config: BenchConfig
    config_path: Path
    artifacts: list[str]
    state_dict: str | None
    table: str


def workload_config(workload: str, *, config_dir: Path) -> tuple[BenchConfig, Path]:
    """The bench config ``workload`` names (a path, one next to the caller's config, or one
    shipped with leanscore), and its path; its input must be a Delta path."""
    path = find_config(workload if Path(workload).exists() else config_dir / workload)
    bench = load_config(BenchConfig, path)
    if not bench.input.path or bench.input.format != "delta":
        raise ValueError(f"workload {path}: input must be a Delta path")
    return bench, path


def prepare_workload_source(
    spark: SparkSession, workload: str, *, config_dir: Path, rows: int, tables_dir: Path
) -> PreparedWorkload:
    """Resolve ``workload``'s paths and, where it has a prepare step, build its models when
    missing and a source table of ``rows`` rows under ``tables_dir`` (a table of the caller's
    own: another bench's table of another size is never taken for it)."""
    bench, path = workload_config(workload, config_dir=config_dir)
    base = path.resolve().parent
    artifacts = [resolve_path(a, base) for a in bench.artifacts]
    state_dict = resolve_path(bench.torch_model.state_dict, base) if bench.torch_model else None
    table = resolve_path(bench.input.path, base)
    if bench.prepare is not None:
        table = str((tables_dir / "source").resolve())
        prepare_inputs(
            spark,
            bench.prepare.model_copy(update={"rows": rows}),
            table_path=table,
            artifact_paths=artifacts,
            state_dict_path=state_dict,
            console=Console(stderr=True),
        )
    return PreparedWorkload(bench, path, artifacts, state_dict, table)
