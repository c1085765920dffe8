"""The nightly scoring job: read a table, score it, write the run date's partition, checked
before it counts (``leanscore.jobs.output``), and summarise the run."""

from __future__ import annotations

import datetime as dt
import json
import logging
import operator
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from types import EllipsisType
from typing import Literal

from leanscore.compression.artifact import Artifact
from leanscore.compression.mlflow_registry import load_artifact, registry_summary
from leanscore.jobs import shadow as shadowing
from leanscore.jobs import task_write
from leanscore.jobs.output import (
    RUN_DATE_COLUMN,
    PhaseClock,
    Staging,
    TableRef,
    check_output_location,
    read_table,
    write_checked,
)
from leanscore.jobs.shadow import ShadowConfig
from leanscore.udfs.delta_log import DeltaFiles, read_delta_log
from leanscore.udfs.distribution import is_connect
from leanscore.udfs.engines import (
    TableInput,
    check_name,
    reads_whole_tables_only,
    score_with,
    scores_shadow,
)
from leanscore.udfs.options import (
    ArrowBatchRows,
    BatchSize,
    IntraOpThreads,
    OutOfRange,
    PathThresholdBytes,
    RangeMargin,
    ScoringOptions,
    ShadowSpec,
)
from leanscore.udfs.shadow import SHADOW_PREFIX
from leanscore.udfs.warmup import start_warming_workers
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

log = logging.getLogger(__name__)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputConfig(TableRef):
    filter: str | None = Field(
        default=None, description="a Spark SQL predicate, e.g. day = '2026-01-01'"
    )
    partition: dict[str, str | int] | None = Field(
        default=None, description="partition values to read, e.g. {day: '2026-01-01'}"
    )


class SessionOptions(_Strict):
    """ONNX Runtime options for the executors."""

    intra_op_threads: IntraOpThreads
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    memory_arena: bool = True


class NightlyConfig(_Strict):
    """What every nightly job's config holds (``score``, ``embed``): where to read and write,
    the kept columns, the row policy, the engine and the scoring options they share."""

    artifact: str = Field(
        min_length=1,
        description="artifact directory (model.onnx + manifest.json), or an MLflow model URI: "
        "models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/PATH",
    )
    input: InputConfig
    output: TableRef
    key_columns: list[str] = Field(default_factory=list)
    passthrough_columns: list[str] = Field(default_factory=list)
    bad_rows: Literal["fail", "flag"] = "fail"
    max_flagged_fraction: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="fail (the output left as it was) when more than this fraction of rows is "
        "flagged; default: no limit",
    )
    batch_size: BatchSize
    arrow_batch_rows: ArrowBatchRows
    engine: str = Field(
        default="auto",
        description="a registered engine (leanscore.udfs.engines: scan, arrow, pandas) or auto: "
        "the scan engine for a whole Parquet/Delta path where it applies, else mapInArrow over "
        "Spark's reader; scan: the scan engine or an error saying why not",
    )
    writer: Literal["auto", "spark"] = Field(
        default="auto",
        description="auto: where the scan engine reads the input and the output is a Delta "
        "path on a local master's file system, the score job's tasks write the output's "
        "Parquet files and the driver commits them in one Delta transaction, after checking "
        "them (leanscore.jobs.task_write); spark: Spark's writer always",
    )
    session: SessionOptions = Field(default_factory=SessionOptions)
    path_threshold_bytes: PathThresholdBytes
    summary_path: str | None = None
    shadow: ShadowConfig | None = Field(
        default=None,
        description="score a deterministic sample again with the reference model and compare "
        "(leanscore.jobs.shadow); default: off",
    )

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, name: str) -> str:
        return check_name(name)

    @model_validator(mode="after")
    def _whole_table_engines_read_whole_paths(self):
        if reads_whole_tables_only(self.engine) and not scans_whole_table(self.input):
            raise ValueError(
                f"engine {self.engine!r} reads a whole Parquet/Delta path: remove input.filter "
                "and input.partition (or name a path, not a table), or use engine 'auto'"
            )
        return self

    @model_validator(mode="after")
    def _shadow_needs_keys_and_an_arrow_engine(self):
        if self.shadow is None:
            return self
        if not self.key_columns:
            raise ValueError(
                "shadow samples rows by a hash of their key columns: set key_columns, or remove "
                "the shadow block"
            )
        if not scores_shadow(self.engine):
            raise ValueError(
                f"engine {self.engine!r} scores no shadow sample: use engine auto, arrow or "
                "scan, or remove the shadow block"
            )
        return self

    def scoring_options(self, keep_columns: list[str]) -> ScoringOptions:
        """The run's one ``ScoringOptions``, from this config and the columns it keeps."""
        return ScoringOptions(
            key_columns=tuple(self.key_columns),
            keep_columns=tuple(keep_columns),
            batch_size=self.batch_size,
            arrow_batch_rows=self.arrow_batch_rows,
            bad_rows=self.bad_rows,
            intra_op_threads=self.session.intra_op_threads,
            graph_optimization=self.session.graph_optimization,
            memory_arena=self.session.memory_arena,
            path_threshold_bytes=self.path_threshold_bytes,
            **self.family_options(),
        )

    def family_options(self) -> dict:
        """The ``ScoringOptions`` fields only this job's config holds."""
        return {}

    def scoring_artifact(self, artifact: Artifact) -> Artifact:
        """The artifact as this job scores it (the embed job may read another text column)."""
        return artifact


class ScoreConfig(NightlyConfig):
    out_of_range: OutOfRange
    range_margin: RangeMargin
    probabilities: bool = False

    def family_options(self) -> dict:
        return {
            "out_of_range": self.out_of_range,
            "range_margin": self.range_margin,
            "probabilities": self.probabilities,
        }


def scans_whole_table(ref: InputConfig) -> bool:
    """Whether the scan engine may read ``ref``: a path, not filtered or partition-selected."""
    return bool(ref.path) and not ref.filter and not ref.partition


def tasks_may_write(config: ScoreConfig, *, master: str) -> bool:
    """Whether the score job's tasks may write its output (``leanscore.jobs.task_write``), as
    far as its config and Spark master tell before a session starts: where they do, the JVM
    converts and writes no row (``get_spark(rows_in_jvm=False)``)."""
    why = task_write.config_problem(
        config,
        master=master,
        shadowed=config.shadow is not None,
        whole_input=scans_whole_table(config.input),
    )
    return why is None


def parse_run_date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValueError(f"run date {value!r} is not a date in YYYY-MM-DD form") from None


def read_input(spark: SparkSession, ref: InputConfig) -> DataFrame:
    """The input table with its ``partition`` and ``filter`` applied."""
    df = read_table(spark, ref)
    for column, value in (ref.partition or {}).items():
        if column not in df.columns:
            raise ValueError(
                f"input.partition names column {column!r}, which {ref.describe()} does not have"
            )
        df = df.where(F.col(column) == F.lit(value))
    if not ref.filter:
        return df
    from pyspark.errors import PySparkException

    try:
        return df.where(ref.filter)
    except PySparkException as err:
        first = str(err).strip().splitlines()[0]
        raise ValueError(
            f"input.filter {ref.filter!r} is not a valid boolean Spark SQL predicate on "
            f"{ref.describe()}: {first}"
        ) from None


def count_input(
    df: DataFrame, config: ScoreConfig, *, logged: DeltaFiles | None | EllipsisType = ...
) -> int:
    """Rows in the input, refusing an empty input (it would replace the run date's rows with
    nothing) and null keys (a null key names no row), before anything is written, without
    reading the data where the table's metadata answers: a whole Delta table's rows and null
    keys are summed from its log's per-file statistics (``leanscore.udfs.delta_log``, no Spark
    job); otherwise Spark counts, Delta from the same statistics after rebuilding the table's
    state, and the look for null keys skips every file or Parquet row group whose statistics
    say it holds none. ``logged``: the input's log as the caller read it already
    (``whole_delta_log``, None where it could not); by default it is read here."""
    keys = [k for k in config.key_columns if k in df.columns]
    if logged is ...:
        logged = whole_delta_log(df, config.input)
    from_log = logged is not None and logged.rows is not None
    rows = logged.rows if from_log else df.count()
    if rows == 0:
        raise RuntimeError(
            f"input {config.input.describe()} has no rows (after input.filter/partition); "
            "nothing was written. Check the upstream table or the filter"
        )
    if from_log and set(keys) <= logged.null_counts.keys():
        problem = null_key_message(
            next(((k, logged.null_counts[k]) for k in keys if logged.null_counts[k]), None), rows
        )
    else:
        problem = null_key_problem(df, keys, rows)
    if problem:
        raise ValueError(problem)
    return rows


def whole_delta_log(df: DataFrame, ref: InputConfig) -> DeltaFiles | None:
    """The log's account of a whole Delta table read by path (None for anything else, or where
    Delta Kernel cannot read it here)."""
    if ref.format != "delta" or not scans_whole_table(ref):
        return None
    return read_delta_log(df.sparkSession, ref.path)


def null_key_problem(df: DataFrame, keys: list[str], rows: int) -> str | None:
    """What is wrong when a key column of ``df`` holds nulls, else None. Only when some key is
    null are the nulls counted, for the message."""
    if not keys:
        return None
    null_keys = df.where(reduce(operator.or_, [F.col(k).isNull() for k in keys]))
    if null_keys.isEmpty():
        return None
    row = null_keys.agg(
        *[F.count(F.when(F.col(k).isNull(), 1)).alias(f"null_{i}") for i, k in enumerate(keys)]
    ).first()
    return null_key_message(
        next((k, row[f"null_{i}"]) for i, k in enumerate(keys) if row[f"null_{i}"]), rows
    )


def null_key_message(null_key: tuple[str, int] | None, rows: int) -> str | None:
    """The error for the first key column found null (and in how many rows), else None."""
    if null_key is None:
        return None
    key, nulls = null_key
    return (
        f"key column {key!r} is null in {nulls} of {rows} input rows; "
        "keys must identify rows: fix the input or filter those rows out"
    )


def kept_columns(df: DataFrame, config) -> list[str]:
    """Key then passthrough columns, once each; every one must be in the input."""
    keep = list(dict.fromkeys([*config.key_columns, *config.passthrough_columns]))
    missing = [c for c in keep if c not in df.columns]
    if missing:
        raise ValueError(
            f"column {missing[0]!r} named in key_columns/passthrough_columns is not in "
            f"{config.input.describe()}; it has {', '.join(df.columns)}"
        )
    return keep


LINEAGE_COLUMNS = ("model_name", "model_version", "model_sha256", "scored_at")
"""Which model scored each row and when: the same on every row of a run."""


def statistics_columns(columns: list[str], config) -> list[str]:
    """Those of the output's ``columns`` a Delta output the job creates keeps file statistics
    on: the keys and the model's outputs, which readers filter on. Not the lineage columns
    (one value per run, and the run date's partition already selects a run) nor the
    passthrough columns (copies of input columns, text among them), whose statistics Delta
    would compute row by row for no reader (``leanscore.jobs.output.statistics_property``)."""
    copied = set(config.passthrough_columns) - set(config.key_columns)
    skipped = copied | set(LINEAGE_COLUMNS) | {RUN_DATE_COLUMN}
    return [c for c in columns if c not in skipped and not c.startswith(SHADOW_PREFIX)]


def lineage_columns(scored: DataFrame) -> list[str]:
    """The lineage columns among ``scored``'s: one value each for the whole run."""
    return [c for c in LINEAGE_COLUMNS if c in scored.columns]


def score_frame(
    df: DataFrame,
    config: NightlyConfig,
    artifact: Artifact,
    run_date: dt.date,
    shadow: ShadowSpec | None = None,
) -> tuple[DataFrame, str]:
    """The output rows (keys, passthrough columns, model outputs and lineage columns) and the
    engine that scores them; with ``shadow``, the shadow's comparison columns after them."""
    keep = kept_columns(df, config)
    options = config.scoring_options(keep).model_copy(update={"shadow": shadow})
    artifact = config.scoring_artifact(artifact)
    whole = scans_whole_table(config.input)
    table = TableInput(df, path=config.input.path if whole else None, format=config.input.format)
    scored, engine = score_with(
        config.engine,
        table,
        artifact,
        options,
        on_fallback=lambda why: log.info("engine auto: the next engine scores, since %s", why),
    )
    manifest = artifact.manifest
    outputs = [c for c in scored.columns if c not in keep and not c.startswith(SHADOW_PREFIX)]
    name, version, sha256, scored_at = LINEAGE_COLUMNS
    return scored.select(
        *keep,
        *outputs,
        F.lit(manifest.name).alias(name),
        F.lit(manifest.version).alias(version),
        F.lit(manifest.sha256).alias(sha256),
        F.current_timestamp().alias(scored_at),
        F.lit(run_date).cast("date").alias(RUN_DATE_COLUMN),
        *[c for c in scored.columns if c.startswith(SHADOW_PREFIX)],
    ), engine


def peak_driver_rss_mb(spark: SparkSession) -> dict[str, float | None]:
    """Peak resident memory of the driver: this Python process and, on classic local Spark,
    the driver JVM it launched (in local mode that JVM runs the tasks too)."""
    python_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    jvm_mb = None
    if not is_connect(spark):
        proc = getattr(getattr(spark.sparkContext, "_gateway", None), "proc", None)
        status = Path(f"/proc/{proc.pid}/status") if proc is not None else None
        if status is not None and status.exists():
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    jvm_mb = int(line.split()[1]) / 1024
    return {
        "peak_driver_python_rss_mb": round(python_mb, 1),
        "peak_driver_jvm_rss_mb": None if jvm_mb is None else round(jvm_mb, 1),
    }


def write_summary(config, summary: dict, *, job: str = "score") -> None:
    """Log the run summary a key a line and write it as JSON to ``config.summary_path``."""
    for key, value in summary.items():
        log.info("%s summary %s=%s", job, key, value)
    if config.summary_path:
        Path(config.summary_path).parent.mkdir(parents=True, exist_ok=True)
        Path(config.summary_path).write_text(json.dumps(summary, indent=2) + "\n")


def process_age_s() -> float | None:
    """Seconds since this process started (Linux ``/proc``; None elsewhere): what passed before
    the job's first step, the interpreter, imports and the Spark session with Delta.

    ``/proc/self/stat`` counts the start in clock ticks since boot on the boot-time clock, so
    it is read against that clock: the wall clock minus ``btime`` (whole seconds) would add
    up to a second."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        started_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        now = time.clock_gettime(time.CLOCK_BOOTTIME)
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return round(now - started_ticks / ticks, 3)


@dataclass(frozen=True)
class NightlyJob:
    """What differs between the nightly jobs (``score``, ``embed``); everything else, from the
    output-location check to the failed-run summary, is ``run_nightly``'s.

    ``frame(df, config, artifact, day, shadow_spec)`` gives the output rows and the engine that
    scores them;
    ``error_column`` is the output's per-row error column, ``rate_key`` the summary's speed key;
    ``tasks_write``: its scoring tasks may write the output themselves (``task_write``).
    """

    name: str
    frame: Callable[..., tuple[DataFrame, str]]
    error_column: str
    rate_key: str
    tasks_write: bool = False


def run_score(spark: SparkSession, config: ScoreConfig, run_date: str | dt.date) -> dict:
    """Score ``config.input`` into the ``run_date`` partition of ``config.output``; return the
    run summary (see ``run_nightly``)."""
    return run_nightly(spark, config, run_date, SCORE_JOB)


def run_nightly(spark: SparkSession, config, run_date: str | dt.date, job: NightlyJob) -> dict:
    """The nightly core every job shares: read, check (output location, empty input, null
    keys), score, write the run date's partition, verify before it counts (restoring the
    previous version on a mismatch), and summarise. Returns the run summary (also written to
    ``config.summary_path`` when set). On failure the output is left as it was, a summary with
    ``status: failed`` is written, and the error is raised."""
    day = run_date if isinstance(run_date, dt.date) else parse_run_date(run_date)
    before_job = process_age_s()
    start = time.perf_counter()
    try:
        return _run(spark, config, day, start, before_job, job)
    except Exception as err:
        write_summary(
            config,
            {
                "status": "failed",
                "run_date": day.isoformat(),
                "input": config.input.describe(),
                "output": config.output.describe(),
                "error": str(err).strip().splitlines()[0] if str(err).strip() else repr(err),
                "seconds": round(time.perf_counter() - start, 3),
                **({"shadow": err.shadow} if isinstance(err, shadowing.ShadowBreach) else {}),
            },
            job=job.name,
        )
        raise


def _run(
    spark: SparkSession,
    config,
    day: dt.date,
    start: float,
    before_job: float | None,
    job: NightlyJob,
) -> dict:
    phases = PhaseClock()
    artifact = shadow = None
    if config.shadow is not None:  # a reference of another contract is refused before any job
        artifact = load_artifact(config.artifact)
        shadow = shadowing.prepare(config.shadow, artifact, day)
    start_warming_workers(spark)  # Python workers start while the driver reads and plans
    artifact = artifact or load_artifact(config.artifact)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(config.arrow_batch_rows))
    check_output_location(config.output)
    source = read_input(spark, config.input)
    phases.lap("open_input")
    logged = whole_delta_log(source, config.input)  # one snapshot to count and to scan
    rows_in = count_input(source, config, logged=logged)
    phases.lap("count")
    tasks = _tasks_write(
        source, config, artifact, day, job, shadowed=shadow is not None, snapshot=logged
    )
    if tasks is not None:
        engine = "scan"
        log.info("%s: scoring with the scan engine, whose tasks write the output", job.name)
        phases.lap("plan")
        written, shadow_record = task_write.run(tasks, config, rows_in=rows_in, phases=phases), None
    else:
        scored, engine = job.frame(source, config, artifact, day, shadow.spec if shadow else None)
        log.info("%s: scoring with the %s engine", job.name, engine)
        if shadow is not None:
            scored, observation = shadowing.observe(shadow, scored)
        phases.lap("plan")
        if shadow is None:
            written, shadow_record = _write(scored, config, day, rows_in, job, phases), None
        else:
            written, shadow_record = _write_shadowed(
                spark, config, shadow, observation, scored, day, rows_in, job, phases
            )
    seconds = time.perf_counter() - start
    summary = {
        "status": "succeeded",
        "run_date": day.isoformat(),
        "model_name": artifact.manifest.name,
        "model_version": artifact.manifest.version,
        "model_sha256": artifact.sha256,
        **registry_summary(artifact),
        "input": config.input.describe(),
        "output": config.output.describe(),
        "output_version": written["version"],
        "engine": engine,
        "rows_in": rows_in,
        "rows_out": written["rows_out"],
        "flagged_rows": written["flagged_rows"],
        "seconds": round(seconds, 3),
        job.rate_key: round(written["rows_out"] / seconds, 1) if seconds > 0 else None,
        "seconds_before_job": before_job,
        "phase_seconds": phases.seconds,
        **peak_driver_rss_mb(spark),
        **({"shadow": shadow_record} if shadow_record is not None else {}),
    }
    write_summary(config, summary, job=job.name)
    return summary


def _tasks_write(
    source: DataFrame,
    config,
    artifact: Artifact,
    day: dt.date,
    job: NightlyJob,
    *,
    shadowed: bool,
    snapshot: DeltaFiles | None,
) -> task_write.TaskWrite | None:
    """The write by the scoring tasks where it applies (``leanscore.jobs.task_write``), else
    None: Spark's writer writes, and the log says why."""
    if not job.tasks_write:
        return None
    spark = source.sparkSession
    whole = scans_whole_table(config.input)
    why = task_write.unavailable(spark, config, shadowed=shadowed, whole_input=whole)
    if why:
        log.info("writer auto: Spark's writer writes the output, since %s", why)
        return None
    manifest = config.scoring_artifact(artifact).manifest
    name, version, sha256, scored_at = LINEAGE_COLUMNS
    return task_write.prepare(
        source,
        config,
        artifact,
        day,
        keep=kept_columns(source, config),
        statistics_columns=lambda columns: statistics_columns(columns, config),
        lineage={name: manifest.name, version: manifest.version, sha256: manifest.sha256},
        scored_at=scored_at,
        error_column=job.error_column,
        snapshot=snapshot,
    )


def _write(scored, config, day, rows_in: int, job: NightlyJob, phases, staging=None) -> dict:
    """``write_checked`` with the job's error column and flagged-row limit."""
    return write_checked(
        scored,
        config.output,
        day,
        rows_in=rows_in,
        error_column=job.error_column,
        max_flagged_fraction=config.max_flagged_fraction,
        phases=phases,
        staging=staging,
        statistics_columns=statistics_columns(scored.columns, config),
        constant_columns=lineage_columns(scored),
    )


def _write_shadowed(
    spark, config, shadow, observation, scored, day, rows_in: int, job: NightlyJob, phases
) -> tuple[dict, dict]:
    """Write ``scored`` and judge the shadow on what the write observed; return (written,
    shadow record), the record appended to the history either way. Under ``on_breach: fail``
    the rows wait in staging for the verdict: a breach discards them (the output is not
    touched) and raises ``ShadowBreach``, a pass publishes them. Under ``warn`` they are
    written directly and a breach is logged."""
    staged = shadow.config.on_breach == "fail"
    staging = Staging.beside(spark, config.output, day) if staged else None
    written = _write(scored, config, day, rows_in, job, phases, staging=staging)
    record = shadowing.results(shadow, observation, written["rows_out"])
    output = config.output.describe()
    if staging is not None and record["verdict"] == "breach":
        record["output_kept"] = staging.discard()
        shadowing.record(spark, shadow, record, job=job.name, output=output, version=None)
        raise shadowing.ShadowBreach(f"{record['reason']}; {record['output_kept']}", shadow=record)
    phases.lap("shadow_record")
    if staging is not None:
        written = staging.publish(
            scored.schema,
            day,
            rows=written["rows_out"],
            error_column=job.error_column,
            statistics_columns=statistics_columns(scored.columns, config),
            constant_columns=lineage_columns(scored),
        ) | {"flagged_rows": written["flagged_rows"]}
        phases.lap("publish")
    elif record["reason"]:
        log.warning("%s: %s", job.name, record["reason"])
    shadowing.record(spark, shadow, record, job=job.name, output=output, version=written["version"])
    phases.lap("shadow_record")  # the history's append
    return written, record


SCORE_JOB = NightlyJob("score", score_frame, "prediction_error", "rows_per_s", tasks_write=True)
