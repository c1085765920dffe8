"""The nightly job end to end: ``leanscore score`` as a process against the same job written the
usual way, at two table sizes, with each job's fixed cost apart from its per-row cost.

What a data engineer pays for is a process: start Spark with Delta, read the Delta input,
score, write the run date's partition, exit. Scoring-only throughput hides the part of that
bill that does not grow with rows (session start, planning, the count pass, cold Python
workers, verification). So both variants run as separate processes, as a scheduler runs them:

- ``leanscore``: the real CLI, ``leanscore score --config <real score config>``, with its count
  and checks, scoring with the compressed artifact of a bench workload;
- ``pytorch``: ``leanscore.bench.pytorch_job``, a plain PySpark script with the
  uncompressed PyTorch model in ``pyspark.ml.functions.predict_batch_udf``, at its best batch:
  the fastest of ``torch_batch_sizes`` for the model alone, swept as the tabular bench sweeps
  it (``compare.sweep_torch_batch_size``), so the baseline is not held to a batch that suits
  leanscore.

Both read the same Delta tables (``small_rows`` and ``large_rows`` rows, cut from the
workload's table) and write Delta. Per variant and size: wall time of the process and rows/s.
From the two sizes, time = fixed + rows x per-row: the intercept is the job's fixed cost, the
slope its per-row cost (``line_through``). The same split is made of every measured phase of
the leanscore run (its summary's ``phase_seconds``). Targets: leanscore's process >= ``small_x``
times the PyTorch process at the small size and >= ``large_x`` at the large one, and its fixed
cost at most ``1 / fixed_cost_cut_x`` of ``fixed_cost_before_s`` (today's, measured the same
way on the machine the config says).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from leanscore.bench.metrics import cpu_info, source_commit
from pydantic import BaseModel, ConfigDict, Field, model_validator

VARIANTS = ("leanscore", "pytorch")
BEFORE_SCORING = ("before_job", "open_input", "count", "plan")
"""leanscore's phases before its first row is scored: the process's start (imports, the Spark
session), opening the input, counting it, planning the scan."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NightlyTargets(_Strict):
    small_x: float = Field(default=4.0, gt=0, description="leanscore vs PyTorch process, small")
    large_x: float = Field(default=6.0, gt=0, description="leanscore vs PyTorch process, large")
    fixed_cost_cut_x: float = Field(
        default=2.0, gt=0, description="today's fixed cost / leanscore's fixed cost now"
    )
    before_scoring_cut_x: float = Field(
        default=2.0,
        gt=0,
        description="the phases before scoring before they were cut / those phases now (fixed "
        "parts)",
    )
    limit_x: float = Field(
        default=2.0,
        gt=0,
        description="the most leanscore's score+write may take, in multiples of its limit "
        "(read, model and write alone), large table",
    )
    per_row_x: float = Field(
        default=8.0,
        gt=0,
        description="PyTorch job's cost per row / leanscore's (slopes through the two sizes)",
    )


class NightlyBenchConfig(_Strict):
    workload: str = Field(
        default="bench.yaml",
        description="the bench config whose table and models are used (input, torch_model, "
        "artifacts, prepare); its prepare step builds whatever of them is missing",
    )
    artifact: str | None = Field(
        default=None, description="the artifact leanscore scores with; default the workload's last"
    )
    small_rows: int = Field(default=200_000, gt=0)
    large_rows: int = Field(default=1_000_000, gt=0)
    repeats: int = Field(
        default=3, ge=1, description="runs of each process, interleaved; the median counts"
    )
    workdir: str = Field(default="bench-output/nightly", description="tables, configs, logs")
    run_date: str = "2026-11-28"
    key_columns: list[str] = Field(default_factory=lambda: ["row_id"])
    passthrough_columns: list[str] | None = Field(
        default=None, description="default: every input column but the features and keys"
    )
    batch_size: int = Field(default=4096, gt=0, description="rows per model call, leanscore")
    arrow_batch_rows: int = Field(default=10_000, gt=0)
    torch_batch_sizes: list[int] = Field(
        default_factory=lambda: [256, 1024, 4096, 10_000],
        description="PyTorch's batch in predict_batch_udf is the fastest of these for the model "
        "alone (one thread, rows of the table); empty: batch_size",
    )
    torch_sweep_rows: int = Field(
        default=10_000, gt=0, description="table rows the batch-size sweep runs at each size"
    )
    fixed_cost_before_s: float | None = Field(
        default=None, gt=0, description="leanscore's fixed cost before it was cut, seconds"
    )
    before_scoring_before_s: float | None = Field(
        default=None,
        gt=0,
        description="leanscore's phases before scoring (before the job, open, count, plan) "
        "before they were cut, seconds",
    )
    limit: bool = Field(
        default=True,
        description="also measure leanscore's limit at each size: reading, the model and "
        "writing alone (leanscore.bench.limit), against the job's score+write phase",
    )
    limit_model_rows: int = Field(
        default=200_000, gt=0, description="rows the model alone runs on, scaled to the table"
    )
    targets: NightlyTargets = Field(default_factory=NightlyTargets)

    @model_validator(mode="after")
    def _two_sizes(self):
        too_big = [n for n in self.torch_batch_sizes if n <= 0 or n > self.arrow_batch_rows]
        if too_big:
            raise ValueError(
                f"torch_batch_sizes: {too_big} must be between 1 and arrow_batch_rows "
                f"({self.arrow_batch_rows}); predict_batch_udf never sees more rows than one "
                "Arrow batch"
            )
        if self.large_rows <= self.small_rows:
            raise ValueError(
                f"large_rows ({self.large_rows}) must be more than small_rows "
                f"({self.small_rows}): the fixed cost is the intercept of two sizes"
            )
        return self


@dataclass(frozen=True)
class Line:
    """time = fixed_s + rows x per_row_s."""

    fixed_s: float
    per_row_s: float

    def at(self, rows: int) -> float:
        return self.fixed_s + rows * self.per_row_s


def line_through(rows: list[int], seconds: list[float]) -> Line:
    """The least-squares line of ``seconds`` against ``rows``: the intercept is the fixed cost,
    the slope the cost per row (exact through two points)."""
    if len(rows) != len(seconds):
        raise ValueError(f"{len(rows)} sizes but {len(seconds)} times")
    if len(set(rows)) < 2:
        raise ValueError(f"need at least two different table sizes, got {sorted(set(rows))}")
    mean_rows = statistics.fmean(rows)
    mean_s = statistics.fmean(seconds)
    slope = sum((r - mean_rows) * (s - mean_s) for r, s in zip(rows, seconds, strict=True)) / sum(
        (r - mean_rows) ** 2 for r in rows
    )
    return Line(fixed_s=mean_s - slope * mean_rows, per_row_s=slope)


def check_targets(
    *,
    small_x: float,
    large_x: float,
    fixed_s: float,
    targets: NightlyTargets,
    fixed_cost_before_s: float | None,
    limit_x: float | None = None,
    per_row_x: float | None = None,
    before_scoring_s: float | None = None,
    before_scoring_before_s: float | None = None,
) -> list[dict]:
    """One row per target: its measured value, the target and whether it is met."""
    rows = [
        {
            "target": "leanscore process vs PyTorch process, small table",
            "value": small_x,
            "want": f">= {targets.small_x:g}x",
            "met": small_x >= targets.small_x,
        },
        {
            "target": "leanscore process vs PyTorch process, large table",
            "value": large_x,
            "want": f">= {targets.large_x:g}x",
            "met": large_x >= targets.large_x,
        },
    ]
    if fixed_cost_before_s is not None:
        cut = fixed_cost_before_s / fixed_s if fixed_s > 0 else float("inf")
        rows.append(
            {
                "target": f"leanscore fixed cost cut from {fixed_cost_before_s:g} s",
                "value": cut,
                "want": f">= {targets.fixed_cost_cut_x:g}x",
                "met": cut >= targets.fixed_cost_cut_x,
            }
        )
    if before_scoring_s is not None and before_scoring_before_s is not None:
        cut = before_scoring_before_s / before_scoring_s if before_scoring_s > 0 else float("inf")
        rows.append(
            {
                "target": "leanscore phases before scoring (before the job, open, count, plan) "
                f"cut from {before_scoring_before_s:g} s",
                "value": cut,
                "want": f">= {targets.before_scoring_cut_x:g}x",
                "met": cut >= targets.before_scoring_cut_x,
            }
        )
    if limit_x is not None:
        rows.append(
            {
                "target": "leanscore score+write / its limit (read, model, write alone), large",
                "value": limit_x,
                "want": f"<= {targets.limit_x:g}x",
                "met": limit_x <= targets.limit_x,
            }
        )
    if per_row_x is not None:
        rows.append(
            {
                "target": "leanscore cost per row vs PyTorch's (slopes through the two sizes)",
                "value": per_row_x,
                "want": f">= {targets.per_row_x:g}x",
                "met": per_row_x >= targets.per_row_x,
            }
        )
    return rows


def ceilings(report: dict) -> dict:
    """What the ratios can reach on this machine whatever leanscore does per row, from a
    report's measured lines: the whole job's ratio at each size if leanscore's cost per row
    were nothing (PyTorch's run over leanscore's fixed cost), and the per-row ratio if
    score+write took only its limit (PyTorch's slope over the slope of the limit's sum). The
    first is a bound; the second a reference, since the job's parts overlap and may beat
    their sum alone. A target above either needs the fixed cost, or reading and writing
    alone, to fall."""
    lines = report.get("fixed_and_per_row") or {}
    if not {"leanscore", "pytorch"} <= lines.keys():
        return {}
    walls = {r["rows"]: r["wall_s"] for r in report["results"] if r["variant"] == "pytorch"}
    fixed = lines["leanscore"]["fixed_s"]
    out: dict = {
        "x_with_no_per_row_cost": {
            str(n): walls[n] / fixed for n in report["sizes"] if n in walls and fixed > 0
        }
    }
    limit = report.get("limit") or {}
    if len(limit) >= 2:
        sizes = sorted(int(n) for n in limit)
        slope = line_through(sizes, [limit[str(n)]["limit_s"] for n in sizes]).per_row_s * 1e6
        if slope > 0:
            out["per_row_x_at_limit"] = lines["pytorch"]["per_million_rows_s"] / slope
    return out


@dataclass(frozen=True)
class Workload:
    """What the two jobs score: the table, the compressed artifact, the PyTorch model."""

    name: str  # the bench config's workload, as its reports name it
    table: str
    artifact: str
    state_dict: str
    factory: str
    features: list[str]
    size: int
    keep: list[str]
    torch_batch_size: int
    torch_batch_sweep: dict | None = None


def _resolve(path: str, base: Path) -> str:
    from leanscore.bench.compare import resolve_path

    return resolve_path(path, base)


def prepare_workload(config: NightlyBenchConfig, *, config_dir: Path) -> tuple[Workload, dict]:
    """Build the workload's models and table where missing (its bench's prepare step), and the
    two size tables under ``workdir``; return the workload and ``{rows: table path}``."""
    from leanscore.bench.paths import feature_matrix_column
    from leanscore.bench.prepare import delta_rows
    from leanscore.bench.workload import prepare_workload_source, workload_config
    from leanscore.compression.mlflow_registry import load_artifact
    from leanscore.jobs.runtime.spark import get_spark

    bench, workload_path = workload_config(config.workload, config_dir=config_dir)
    if bench.torch_model is None:
        raise ValueError(
            f"workload {workload_path} has no torch_model: the baseline job needs the "
            "uncompressed PyTorch model (state_dict and factory)"
        )
    # the size tables (and a prepared source) are the workload's own: a table cut for another
    # workload under the same workdir is never taken for this one's
    tables_dir = Path(config.workdir, "tables", workload_path.stem)
    spark = get_spark("leanscore-bench-nightly")
    try:
        prepared = prepare_workload_source(
            spark,
            config.workload,
            config_dir=config_dir,
            rows=config.large_rows,
            tables_dir=tables_dir,
        )
        artifacts, state_dict, table = prepared.artifacts, prepared.state_dict, prepared.table
        artifact_path = _resolve(config.artifact, config_dir) if config.artifact else artifacts[-1]
        artifact = load_artifact(artifact_path)
        features, shapes = feature_matrix_column(artifact)
        source = spark.read.format("delta").load(table)
        have = source.count()
        if have < config.large_rows:
            raise ValueError(
                f"workload table {table} has {have:,} rows, fewer than large_rows="
                f"{config.large_rows:,}; give the workload a prepare step or a larger table"
            )
        keep = list(config.key_columns)
        if config.passthrough_columns is None:
            keep += [c for c in source.columns if c not in features and c not in keep]
        else:
            keep += [c for c in config.passthrough_columns if c not in keep]
        tables = {}
        for rows in (config.small_rows, config.large_rows):
            path = (tables_dir / f"input-{rows}").resolve()
            if delta_rows(spark, path) != rows:
                (
                    source.limit(rows)
                    .repartition(max(2, rows // 250_000))
                    .write.format("delta")
                    .mode("overwrite")
                    .save(str(path))
                )
            tables[rows] = str(path)
        sweep = _sweep_torch_batch(config, bench.torch_model.factory, state_dict, source, artifact)
    finally:
        spark.stop()
    workload = Workload(
        name=bench.workload,
        table=table,
        artifact=str(artifact.path),
        state_dict=state_dict,
        factory=bench.torch_model.factory,
        features=features,
        size=sum(s[0] for s in shapes) if len(features) == 1 else len(features),
        keep=keep,
        torch_batch_size=sweep["chosen"] if sweep else config.batch_size,
        torch_batch_sweep=sweep,
    )
    return workload, tables


def _sweep_torch_batch(config: NightlyBenchConfig, factory: str, state_dict: str, source, artifact):
    """PyTorch's best batch for its job, measured as the tabular bench measures it; None
    where no sizes are configured (the job then runs at ``batch_size``)."""
    if not config.torch_batch_sizes:
        return None
    from leanscore.bench.compare import sweep_torch_batch_size
    from leanscore.bench.paths import TorchModel, input_matrix

    matrix = input_matrix(source, artifact, config.torch_sweep_rows)
    return sweep_torch_batch_size(
        TorchModel.load(factory, state_dict), matrix, config.torch_batch_sizes, rounds=3
    )


def committed_rows(table: str | Path) -> int:
    """Rows the latest commit of a Delta table wrote, read from its log file (no Spark):
    ``commitInfo.operationMetrics.numOutputRows``."""
    log_dir = Path(table) / "_delta_log"
    commits = sorted(log_dir.glob("*.json"))
    if not commits:
        raise RuntimeError(f"{table} has no Delta commit: the job wrote nothing")
    for line in commits[-1].read_text().splitlines():
        action = json.loads(line)
        if "commitInfo" in action:
            return int(action["commitInfo"]["operationMetrics"]["numOutputRows"])
    raise RuntimeError(f"{commits[-1]} has no commitInfo")


def leanscore_command() -> list[str]:
    """The installed ``leanscore`` console script next to this interpreter, else the module."""
    script = Path(sys.executable).with_name("leanscore")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "leanscore.jobs.cli"]


def score_config(
    config: NightlyBenchConfig, workload: Workload, table: str, output: Path, summary: Path
) -> dict:
    """The real ``leanscore score`` config this run uses (written next to its logs)."""
    return {
        "artifact": workload.artifact,
        "input": {"path": table, "format": "delta"},
        "output": {"path": str(output), "format": "delta"},
        "key_columns": list(config.key_columns),
        "passthrough_columns": [c for c in workload.keep if c not in config.key_columns],
        "batch_size": config.batch_size,
        "arrow_batch_rows": config.arrow_batch_rows,
        "summary_path": str(summary),
    }


def variant_command(
    variant: str, config: NightlyBenchConfig, workload: Workload, table: str, run_dir: Path
) -> list[str]:
    output = run_dir / "output"
    if variant == "leanscore":
        path = run_dir / "score.yaml"
        path.write_text(
            yaml.safe_dump(score_config(config, workload, table, output, run_dir / "summary.json"))
        )
        return [
            *leanscore_command(),
            "score",
            "--config",
            str(path),
            "--run-date",
            config.run_date,
        ]
    from leanscore.jobs.runtime.jars import cached_jars, delta_coordinates, resolve_jars

    jars = cached_jars() or resolve_jars(delta_coordinates())
    return [
        sys.executable,
        "-m",
        "leanscore.bench.pytorch_job",
        "--input",
        table,
        "--output",
        str(output),
        "--run-date",
        config.run_date,
        "--state-dict",
        workload.state_dict,
        "--factory",
        workload.factory,
        "--features",
        ",".join(workload.features),
        "--size",
        str(workload.size),
        "--keep",
        ",".join(workload.keep),
        "--batch-size",
        str(workload.torch_batch_size),
        "--jars",
        ",".join(jars),
        "--master",
        process_master(),
        "--driver-memory",
        os.environ.get("LEANSCORE_DRIVER_MEMORY", "4g"),
    ]


def process_master() -> str:
    """The Spark master both jobs' processes run on (leanscore's default, or the environment's)."""
    from leanscore.jobs.runtime.spark import default_master

    return default_master()


def local_cores(master: str) -> int | None:
    """The cores a ``local[N]`` or ``local[*]`` master runs on; None for a cluster's master."""
    if master == "local" or master == "local[1]":
        return 1
    if master.startswith("local[") and master.endswith("]"):
        inner = master[len("local[") : -1]
        return os.cpu_count() if inner == "*" else int(inner) if inner.isdigit() else None
    return None


PROCESS_KINDS = ("driver", "jvm", "python_workers", "other")


def process_kind(is_root: bool, name: str) -> str:
    """Which of ``PROCESS_KINDS`` a process in a job's tree is, from its command name."""
    if is_root:
        return "driver"
    if name == "java":
        return "jvm"
    return "python_workers" if name.startswith("python") else "other"


class TreeCpuMeter:
    """CPU seconds (user + system) of a process and every process below it (the JVM, Spark's
    Python daemon and workers), sampled from Linux ``/proc`` while it runs: each process's own
    time as last seen, summed. A process living less than one sampling interval can be missed.
    On a shared machine CPU time moves far less with the load than wall time does.

    ``by_process`` splits the same seconds by kind of process: the ``driver`` (the process
    measured), the ``jvm`` (Spark's driver JVM, which runs the tasks on a local master), the
    ``python_workers`` (every Python process below the driver: Spark's daemon and workers) and
    ``other`` (the shell that starts the JVM, helpers). On a local master this is where a job's
    CPU goes: in the JVM's reading, conversion and writing, or in the Python tasks."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.own: dict[tuple[int, int], float] = {}  # (pid, start tick) -> CPU seconds
        self.kind: dict[tuple[int, int], str] = {}  # (pid, start tick) -> kind of process

    def sample(self) -> None:
        procs = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                text = (entry / "stat").read_text()
            except OSError:
                continue
            name, fields = text.split("(", 1)[1].rsplit(")", 1)
            fields = fields.split()
            # after the name: state, ppid, ..., utime (12th), stime (13th), ..., starttime (20th)
            procs[int(entry.name)] = (
                int(fields[1]),
                int(fields[11]) + int(fields[12]),
                fields[19],
                name,
            )
        tree, frontier = {self.root}, [self.root]
        children: dict[int, list[int]] = {}
        for pid, (ppid, *_) in procs.items():
            children.setdefault(ppid, []).append(pid)
        while frontier:
            for child in children.get(frontier.pop(), []):
                if child not in tree:
                    tree.add(child)
                    frontier.append(child)
        for pid in tree & procs.keys():
            _, cpu, started, name = procs[pid]
            self.own[(pid, started)] = cpu / self.ticks
            # as last seen: the shell Spark starts the JVM with becomes the JVM when it execs
            self.kind[(pid, started)] = process_kind(pid == self.root, name)

    @property
    def seconds(self) -> float:
        return sum(self.own.values())

    @property
    def by_process(self) -> dict[str, float]:
        split = dict.fromkeys(PROCESS_KINDS, 0.0)
        for key, seconds in self.own.items():
            split[self.kind[key]] += seconds
        return split


def run_process(
    variant: str, rows: int, command: list[str], run_dir: Path, *, sample_s: float = 0.25
) -> dict:
    """Run one job as a fresh process into an empty output; its wall time, the CPU time of its
    process tree (Linux), and what it wrote."""
    output = run_dir / "output"
    shutil.rmtree(output, ignore_errors=True)
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    stdout, stderr = run_dir / "stdout.log", run_dir / "stderr.log"
    with stdout.open("w") as out, stderr.open("w") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=err, env=env, text=True)
        meter = TreeCpuMeter(proc.pid) if Path("/proc/self/stat").exists() else None
        while True:
            if meter is not None:
                meter.sample()
            try:  # returns as the process ends, not at the next sample: the wall is its own
                proc.wait(timeout=sample_s)
                break
            except subprocess.TimeoutExpired:
                continue
        wall = time.perf_counter() - started
    if proc.returncode != 0:
        last = (stderr.read_text().strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(
            f"the {variant} job at {rows:,} rows exited {proc.returncode}: {last} "
            f"(logs in {run_dir})"
        )
    written = committed_rows(output)
    if written != rows:
        raise RuntimeError(f"the {variant} job wrote {written:,} rows of {rows:,} ({run_dir})")
    result = {"variant": variant, "rows": rows, "wall_s": wall, "rows_per_s": rows / wall}
    if meter is not None:
        result["cpu_s"] = meter.seconds
        result["cpu_by_process"] = meter.by_process
    summary = run_dir / "summary.json"
    if variant == "leanscore" and summary.is_file():
        data = json.loads(summary.read_text())
        result["job_s"] = data["seconds"]
        phases = {"before_job": data.get("seconds_before_job")} | data.get("phase_seconds", {})
        counted = sum(v for v in phases.values() if v is not None)
        phases["exit"] = wall - counted  # interpreter and JVM shutdown, untimed gaps
        result["phases"] = phases
    return result


def median_run(runs: list[dict]) -> dict:
    """The run with the median wall time (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda r: r["wall_s"])
    return ordered[(len(ordered) - 1) // 2]


def measure(config: NightlyBenchConfig, workload: Workload, tables: dict[int, str]) -> list[dict]:
    """Every variant at every size, ``repeats`` times interleaved; the median run of each."""
    runs: dict[tuple[str, int], list[dict]] = {}
    for repeat in range(config.repeats):
        for rows, table in tables.items():
            for variant in VARIANTS:
                run_dir = Path(config.workdir, "runs", f"{variant}-{rows}-{repeat}").resolve()
                run_dir.mkdir(parents=True, exist_ok=True)
                command = variant_command(variant, config, workload, table, run_dir)
                runs.setdefault((variant, rows), []).append(
                    run_process(variant, rows, command, run_dir)
                )
    return [median_run(r) for r in runs.values()]


def measure_limits(
    config: NightlyBenchConfig, workload: Workload, tables: dict[int, str]
) -> dict[int, dict]:
    """leanscore's limit at each size (``leanscore.bench.limit``), in one Spark session on the
    jobs' master, with the same score config the job ran."""
    from leanscore.bench.limit import measure_limit
    from leanscore.jobs.runtime.spark import get_spark
    from leanscore.jobs.score import ScoreConfig, parse_run_date

    cores = limit_cores()
    scratch = Path(config.workdir, "limit").resolve()
    scratch.mkdir(parents=True, exist_ok=True)
    spark = get_spark("leanscore-bench-limit")
    try:
        limits = {}
        for rows, table in tables.items():
            # the job's own config; the limit writes only under scratch, never to its output
            job = ScoreConfig.model_validate(
                score_config(config, workload, table, scratch / "output", scratch / "summary.json")
            )
            limits[rows] = measure_limit(
                spark,
                job,
                parse_run_date(config.run_date),
                cores=cores,
                rounds=config.repeats,
                model_rows=config.limit_model_rows,
                scratch=scratch,
            )
        return limits
    finally:
        spark.stop()


def limit_cores() -> int:
    """The cores the limit's parts run on: the jobs' local master's; a cluster's master is
    refused (its cores are not this machine's)."""
    cores = local_cores(process_master())
    if cores is None:
        raise ValueError(
            f"the limit is measured on a local master's cores; {process_master()} is a "
            "cluster's: set limit: false"
        )
    return cores


def limit_rows(results: list[dict], limits: dict[int, dict]) -> dict[str, dict]:
    """Per size: leanscore's score+write phase (its median run's) beside the parts alone and
    their sum; ``x`` is the phase over the sum."""
    by = {r["rows"]: r for r in results if r["variant"] == "leanscore"}
    rows = {}
    for size, limit in sorted(limits.items()):
        phase = (by.get(size, {}).get("phases") or {}).get("score_write")
        parts = {k: limit[k] for k in ("read_s", "model_s", "write_s", "limit_s")}
        rows[str(size)] = parts | {
            "score_write_s": phase,
            "x": phase / limit["limit_s"] if phase is not None and limit["limit_s"] > 0 else None,
        }
    return rows


def analyse(
    results: list[dict], config: NightlyBenchConfig, limits: dict[int, dict] | None = None
) -> dict:
    """Ratios per size, fixed and per-row cost per variant and per leanscore phase, leanscore's
    score+write against its limit where ``limits`` are given, targets, and how far the ratios
    can go (``ceilings``)."""
    by = {(r["variant"], r["rows"]): r for r in results}
    sizes = [config.small_rows, config.large_rows]
    lines = {
        v: line_through(sizes, [by[(v, n)]["wall_s"] for n in sizes])
        for v in VARIANTS
        if all((v, n) in by for n in sizes)
    }
    ratios = {n: by[("pytorch", n)]["wall_s"] / by[("leanscore", n)]["wall_s"] for n in sizes}
    phase_lines = {}
    small_phases = by[("leanscore", sizes[0])].get("phases") or {}
    large_phases = by[("leanscore", sizes[1])].get("phases") or {}
    for phase, small_s in small_phases.items():
        large_s = large_phases.get(phase)
        if small_s is None or large_s is None:
            continue
        line = line_through(sizes, [small_s, large_s])
        phase_lines[phase] = {
            "small_s": small_s,
            "large_s": large_s,
            "fixed_s": line.fixed_s,
            "per_million_rows_s": line.per_row_s * 1e6,
        }
    against_limit = limit_rows(results, limits) if limits else {}
    cpu_lines = {
        v: line_through(sizes, [by[(v, n)]["cpu_s"] for n in sizes])
        for v in VARIANTS
        if all("cpu_s" in by.get((v, n), {}) for n in sizes)
    }
    process_lines = {
        v: {
            kind: line_through(sizes, [by[(v, n)]["cpu_by_process"][kind] for n in sizes])
            for kind in PROCESS_KINDS
        }
        for v in VARIANTS
        if all("cpu_by_process" in by.get((v, n), {}) for n in sizes)
    }
    report = {
        "sizes": sizes,
        "results": results,
        "cpu_by_process": {
            v: {
                kind: {"fixed_cpu_s": line.fixed_s, "per_million_rows_cpu_s": line.per_row_s * 1e6}
                for kind, line in kinds.items()
            }
            for v, kinds in process_lines.items()
        },
        "cpu_fixed_and_per_row": {
            v: {"fixed_cpu_s": line.fixed_s, "per_million_rows_cpu_s": line.per_row_s * 1e6}
            for v, line in cpu_lines.items()
        },
        "x_pytorch": {str(n): ratios[n] for n in sizes},
        "fixed_and_per_row": {
            v: {"fixed_s": line.fixed_s, "per_million_rows_s": line.per_row_s * 1e6}
            for v, line in lines.items()
        },
        "leanscore_phases": phase_lines,
        "limit": against_limit,
        "limit_how": next(iter(limits.values()))["how"] if limits else None,
        "targets": check_targets(
            small_x=ratios[sizes[0]],
            large_x=ratios[sizes[1]],
            fixed_s=lines["leanscore"].fixed_s,
            targets=config.targets,
            fixed_cost_before_s=config.fixed_cost_before_s,
            limit_x=(against_limit.get(str(sizes[1])) or {}).get("x"),
            per_row_x=(
                lines["pytorch"].per_row_s / lines["leanscore"].per_row_s
                if "pytorch" in lines and lines["leanscore"].per_row_s > 0
                else None
            ),
            before_scoring_s=(
                sum(phase_lines[p]["fixed_s"] for p in BEFORE_SCORING)
                if all(p in phase_lines for p in BEFORE_SCORING)
                else None
            ),
            before_scoring_before_s=config.before_scoring_before_s,
        ),
    }
    return report | {"ceilings": ceilings(report)}


def report_lines(report: dict) -> list[str]:
    """The report as Markdown tables."""
    small, large = report["sizes"]
    lines = [
        f"Nightly job as a process, Delta in and out, {small:,} and {large:,} rows "
        f"(model: {report.get('artifact', '?')}); each process run {report.get('repeats', 1)} "
        "times, interleaved, median shown",
        "",
        *_batch_lines(report),
        "| variant | rows | process wall s | CPU s (process tree) | rows/s | leanscore x PyTorch |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in sorted(report["results"], key=lambda r: (r["rows"], r["variant"])):
        ratio = report["x_pytorch"][str(r["rows"])] if r["variant"] == "leanscore" else None
        cpu = f"{r['cpu_s']:.1f}" if "cpu_s" in r else ""
        lines.append(
            f"| {r['variant']} | {r['rows']:,} | {r['wall_s']:.2f} | {cpu} | "
            f"{r['rows_per_s']:,.0f} | " + (f"{ratio:.2f}x |" if ratio is not None else "|")
        )
    from leanscore.bench.docs import (
        ceiling_lines,
        fixed_cost_lines,
        limit_lines,
        nightly_target_lines,
    )

    lines += fixed_cost_lines(report)
    if report["leanscore_phases"]:
        lines += [
            "",
            f"| leanscore phase | s at {small:,} | s at {large:,} | fixed s | s per million |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for phase, p in report["leanscore_phases"].items():
            lines.append(
                f"| {phase} | {p['small_s']:.2f} | {p['large_s']:.2f} | {p['fixed_s']:.2f} | "
                f"{p['per_million_rows_s']:.2f} |"
            )
    return lines + limit_lines(report) + ceiling_lines(report) + nightly_target_lines(report)


def _batch_lines(report: dict) -> list[str]:
    sweep = report.get("torch_batch_sweep")
    if report.get("torch_batch_size") is None:
        return []
    how = ""
    if sweep:
        speeds = ", ".join(f"{int(n):,}: {v:,.0f}" for n, v in sweep["rows_per_s_by_size"].items())
        how = f", its best ({sweep['how']}; rows/s by batch: {speeds})"
    return [
        f"leanscore scores batches of {report['batch_size']:,} rows; PyTorch in "
        f"predict_batch_udf batches of {report['torch_batch_size']:,}{how}.",
        "",
    ]


def run_nightly_bench(config: NightlyBenchConfig, out: str | Path, *, config_dir: Path) -> dict:
    """Prepare, run both jobs at both sizes, write ``nightly.json`` and ``nightly.md``."""
    out = Path(out).resolve()
    commit = source_commit()  # the code measured: taken before the run, not after it
    if config.limit:
        limit_cores()  # a master the limit cannot be measured on fails before any work
    workload, tables = prepare_workload(config, config_dir=config_dir)
    results = measure(config, workload, tables)
    limits = measure_limits(config, workload, tables) if config.limit else None
    report = analyse(results, config, limits) | {
        "workload": workload.name,
        "artifact": workload.artifact,
        "repeats": config.repeats,
        "batch_size": config.batch_size,
        "torch_batch_size": workload.torch_batch_size,
        "torch_batch_sweep": workload.torch_batch_sweep,
        "cores": local_cores(process_master()),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "run_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "cpu_model": cpu_info()["cpu_model"],
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "nightly.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "nightly.md").write_text("\n".join(report_lines(report)) + "\n")
    return report
