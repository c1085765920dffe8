"""Shadow fidelity for the nightly jobs: each run proves, on a deterministic sample of that
night's rows, that the compressed model still agrees with the model it replaced.

The config's ``shadow`` block names the reference (by default the fp32 model ``leanscore
compress`` wrote into the artifact's ``reference/`` folder and linked from its manifest), the
sampled fraction, the thresholds of the artifact's task and what a breach does. The reference
scores the sample in the same tasks, from the same Arrow batches, as the compressed model
(``leanscore.udfs.shadow``): the table is read once. Each batch's summary of its comparisons is
collected by a Spark ``Observation`` while the output is written and is never written itself;
the driver adds the summaries up.

Under ``on_breach: fail`` the pass writes to a staging table beside the output, and the rows
are published into the output only when the sample passes: a breach leaves the output as it
was (its current version stays current, not restored) and raises one line naming the metric
and its threshold; under ``warn`` the output stands and the CLI exits with
``WARN_EXIT_CODE``. Either way the run summary and the history table (``shadow.history``, a
Delta path, one row per run) record the metrics with their 95% intervals and the verdict.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from leanscore.compression.artifact import Artifact, Manifest
from leanscore.compression.errors import LeanscoreError
from leanscore.compression.mlflow_registry import load_artifact, registry_summary
from leanscore.udfs.options import ShadowSpec
from leanscore.udfs.shadow import COSINE, SUMMARY, date_seed, shadow_fields
from pydantic import BaseModel, ConfigDict, Field
from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F

WARN_EXIT_CODE = 3
"""The exit code of a nightly run whose shadow breached under ``on_breach: warn``: the output
was written, and the breach recorded; schedulers alert on it."""

Z95 = 1.959963984540054
P1 = 0.01
# Quantiles the cosine's 1st percentile and its interval are read from (order statistics).
QUANTILE_GRID = tuple(round(q / 2000, 6) for q in range(0, 201)) + (0.15, 0.2, 0.3, 0.5, 1.0)

THRESHOLDS = {
    "classification": {"min_agreement": 0.97, "max_probability_diff": 0.05},
    "embedding": {"min_cosine_mean": 0.98, "min_cosine_p1": 0.95},
    "regression": {"max_relative_error": 0.05},
}
# threshold -> (metric it bounds, whether the metric must stay at or above it)
BOUNDS = {
    "min_agreement": ("agreement", True),
    "max_probability_diff": ("probability_diff", False),
    "min_cosine_mean": ("cosine_mean", True),
    "min_cosine_p1": ("cosine_p1", True),
    "max_relative_error": ("relative_error", False),
}


class ShadowBreach(LeanscoreError, RuntimeError):
    """The shadow sample breached a threshold under ``on_breach: fail``; the output was not
    touched. ``shadow`` holds the run's shadow record."""

    def __init__(self, message: str, *, shadow: dict):
        super().__init__(message)
        self.shadow = shadow


class ShadowConfig(BaseModel):
    """The nightly config's ``shadow`` block. Thresholds left out take the task's default
    (``THRESHOLDS``); one of another task than the artifact's is refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reference: str | None = Field(
        default=None,
        description="artifact directory or MLflow URI (models:/NAME@ALIAS) of the model the "
        "compressed one replaced; default: the reference its manifest links",
    )
    fraction: float = Field(default=0.01, gt=0.0, le=1.0, description="rows shadowed, in (0, 1]")
    min_agreement: float | None = Field(default=None, ge=0.0, le=1.0)
    max_probability_diff: float | None = Field(default=None, ge=0.0, le=1.0)
    min_cosine_mean: float | None = Field(default=None, ge=-1.0, le=1.0)
    min_cosine_p1: float | None = Field(default=None, ge=-1.0, le=1.0)
    max_relative_error: float | None = Field(default=None, ge=0.0)
    on_breach: Literal["fail", "warn"] = "fail"
    history: str | None = Field(
        default=None,
        description="Delta path or catalog table (main.scoring.shadow_history): one row per run",
    )

    def thresholds(self, task: str) -> dict[str, float]:
        """The task's thresholds, the given ones in place of the defaults; a threshold given
        for another task is refused."""
        own = THRESHOLDS[task]
        for name in BOUNDS:
            if getattr(self, name) is not None and name not in own:
                raise ValueError(
                    f"shadow.{name} is a threshold of another task, but the artifact's task is "
                    f"{task!r}; use {', '.join(own)}"
                )
        given = {name: getattr(self, name) for name in own}
        return {name: own[name] if v is None else v for name, v in given.items()}


@dataclass(frozen=True)
class ShadowRun:
    """One run's shadow, prepared on the driver before any Spark job."""

    config: ShadowConfig
    artifact: Artifact
    reference: Artifact
    spec: ShadowSpec
    run_date: dt.date
    thresholds: dict[str, float]

    @property
    def task(self) -> str:
        return self.artifact.manifest.task


def prepare(config: ShadowConfig, artifact: Artifact, run_date: dt.date) -> ShadowRun:
    """Load the reference and refuse, in one line, one whose contract differs."""
    thresholds = config.thresholds(artifact.manifest.task)
    reference = load_artifact(config.reference or linked_reference(artifact))
    check_contract(artifact.manifest, reference.manifest, str(config.reference or "the link"))
    spec = ShadowSpec(
        reference=str(reference.path),
        fraction=config.fraction,
        seed=date_seed(run_date.isoformat()),
    )
    return ShadowRun(config, artifact, reference, spec, run_date, thresholds)


def linked_reference(artifact: Artifact) -> str:
    link = artifact.manifest.reference
    if link is None:
        raise ValueError(
            f"artifact {artifact.manifest.name!r} ({artifact.path}) links no reference model; "
            "set shadow.reference to the uncompressed artifact or its models:/ URI, or rebuild "
            "it with 'leanscore compress', which writes one"
        )
    folder = artifact.path / link
    if not folder.is_dir():
        raise ValueError(
            f"artifact {artifact.manifest.name!r} links reference {link!r}, but {folder} is "
            "missing (a registry copy holds the compressed model only); set shadow.reference "
            "to the uncompressed artifact or its models:/ URI"
        )
    return str(folder)


def _width(manifest: Manifest) -> int | None:
    name = manifest.result_output or manifest.outputs[0].name
    shape = next(o.shape for o in manifest.outputs if o.name == name)
    return shape[-1] if shape and isinstance(shape[-1], int) else None


def check_contract(ours: Manifest, theirs: Manifest, where: str) -> None:
    """The reference must read the same columns and give the same kind of result."""
    problems = []
    if ours.task != theirs.task:
        problems.append(f"task {theirs.task!r}, the artifact's is {ours.task!r}")
    layout = ("columns", "array_column", "text_column", "image_column", "size")
    for key in layout:
        a, b = getattr(ours.features, key), getattr(theirs.features, key)
        if key == "size" and ours.features.text_column is not None:
            continue  # texts: the token budget may differ, the column is what counts
        if a != b:
            problems.append(f"features.{key} {b!r}, the artifact's is {a!r}")
    if ours.task == "classification" and ours.class_labels != theirs.class_labels:
        problems.append(f"classes {theirs.class_labels}, the artifact's are {ours.class_labels}")
    widths = (_width(ours), _width(theirs))
    if ours.task != "regression" and None not in widths and widths[0] != widths[1]:
        what = "classes" if ours.task == "classification" else "embedding size"
        problems.append(f"{widths[1]} {what}, the artifact's is {widths[0]}")
    if problems:
        raise ValueError(
            f"shadow reference {where} ({theirs.name!r}) does not score like artifact "
            f"{ours.name!r}: {problems[0]}; name a reference with the same inputs and outputs"
        )


def classes(manifest: Manifest) -> int:
    if manifest.class_labels:
        return len(manifest.class_labels)
    return _width(manifest) or 0


def n_features(manifest: Manifest) -> int:
    return 0 if manifest.input_range is None else len(manifest.input_range.low)


def aggregates(run: ShadowRun) -> list[Column]:
    """What the Observation collects while the output is written: every batch's summary (one
    non-null value per Arrow batch) and, for embeddings, the quantiles of the rows' cosines."""
    aggs = [F.collect_list(F.col(SUMMARY)).alias("batches")]
    if run.task == "embedding":
        grid = F.array(*[F.lit(q) for q in QUANTILE_GRID])
        aggs.append(F.percentile_approx(F.col(COSINE), grid, 100_000).alias("quantiles"))
    return aggs


def observe(run: ShadowRun, scored: DataFrame) -> tuple[DataFrame, Observation]:
    """``scored`` observed by the shadow's aggregates, without its comparison columns."""
    observation = Observation("leanscore_shadow")
    hidden = {name for name, _ in shadow_fields(run.task)}
    observed = scored.observe(observation, *aggregates(run))
    return observed.select(*[c for c in scored.columns if c not in hidden]), observation


SUMS = ("n", "sum", "sum_sq", "diff_sum", "diff_sum_sq", "seconds")


def totals(run: ShadowRun, observed: dict) -> dict:
    """The batches' summaries added up: the ``SUMS``, ``class_n_k`` and ``class_agree_k`` per
    class, ``oor_j`` per feature, and the embedding's ``quantiles``."""
    batches = observed["batches"]
    manifest = run.artifact.manifest
    row: dict = {k: sum(b[k] for b in batches) for k in SUMS}
    n_classes = classes(manifest) if run.task == "classification" else 0
    for name, width, prefix in (
        ("class_n", n_classes, "class_n_"),
        ("class_agree", n_classes, "class_agree_"),
        ("out_of_range", n_features(manifest), "oor_"),
    ):
        added = _padded_sum([b[name] for b in batches], width)
        row.update({f"{prefix}{k}": value for k, value in enumerate(added)})
    row["quantiles"] = observed.get("quantiles")
    return row


def _padded_sum(vectors: list, width: int) -> list[float]:
    """Element-wise sum of vectors of up to ``width`` entries (a batch with no shadowed row
    has an empty per-class vector)."""
    total = np.zeros(width)
    for vector in vectors:
        values = np.asarray(vector or [], dtype=np.float64)[:width]
        total[: len(values)] += values
    return total.tolist()


def wilson(successes: float, n: int) -> tuple[float, float]:
    """The Wilson score 95% interval of a proportion (sound near 0 and 1, unlike Wald's)."""
    p = successes / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(
    total: float, total_sq: float, n: int
) -> tuple[float, float | None, float | None]:
    """Mean and its normal-approximation 95% interval (none from a single row)."""
    mean = total / n
    if n < 2:
        return mean, None, None
    var = max(0.0, (total_sq - n * mean * mean) / (n - 1))
    half = Z95 * math.sqrt(var / n)
    return mean, mean - half, mean + half


def quantile_interval(quantiles: list[float], n: int, p: float = P1) -> tuple[float, float, float]:
    """The ``p`` quantile and its distribution-free 95% interval: the order statistics at
    ranks n*p -/+ 1.96*sqrt(n*p*(1-p)), read from the quantiles at ``QUANTILE_GRID``."""
    half = Z95 * math.sqrt(p * (1 - p) / n)
    at = dict(zip(QUANTILE_GRID, quantiles, strict=True))
    lower = max((q for q in QUANTILE_GRID if q <= max(0.0, p - half)), default=0.0)
    upper = min((q for q in QUANTILE_GRID if q >= min(1.0, p + half)), default=1.0)
    return at[p], at[lower], at[upper]


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 6)


def metric_values(run: ShadowRun, row: dict) -> dict[str, tuple]:
    """metric name -> (value, 95% low, 95% high) from the Observation's row."""
    n = int(row["n"])
    if run.task == "classification":
        agree = float(row["sum"])
        return {
            "agreement": (agree / n, *wilson(agree, n)),
            "probability_diff": mean_interval(row["diff_sum"], row["diff_sum_sq"], n),
        }
    if run.task == "embedding":
        return {
            "cosine_mean": mean_interval(row["sum"], row["sum_sq"], n),
            "cosine_p1": quantile_interval(row["quantiles"], n),
        }
    return {"relative_error": mean_interval(row["sum"], row["sum_sq"], n)}


def judge(run: ShadowRun, row: dict) -> list[dict]:
    """Each metric with its interval, threshold and whether it breached (its value on the
    wrong side of the threshold)."""
    if int(row["n"]) == 0:
        return []
    values = metric_values(run, row)
    out = []
    for threshold, limit in run.thresholds.items():
        name, at_least = BOUNDS[threshold]
        value, low, high = values[name]
        breached = value < limit if at_least else value > limit
        out.append(
            {
                "name": name,
                "value": _round(value),
                "ci_low": _round(low),
                "ci_high": _round(high),
                "threshold": threshold,
                "limit": limit,
                "breached": bool(breached),
            }
        )
    return out


def per_class(run: ShadowRun, row: dict) -> list[dict]:
    """Agreement among the shadowed rows of each class the reference predicted."""
    if run.task != "classification":
        return []
    labels = run.artifact.manifest.class_labels
    out = []
    for k in range(classes(run.artifact.manifest)):
        n = int(row[f"class_n_{k}"])
        agree = float(row[f"class_agree_{k}"] or 0.0)
        low, high = wilson(agree, n) if n else (None, None)
        out.append(
            {
                "label": labels[k] if labels else str(k),
                "rows": n,
                "agreement": _round(agree / n) if n else None,
                "ci_low": _round(low),
                "ci_high": _round(high),
            }
        )
    return out


def feature_names(manifest: Manifest) -> list[str]:
    spec = manifest.features
    if spec.columns:
        return list(spec.columns)
    name = spec.array_column or spec.image_column
    return [f"{name}[{j}]" for j in range(n_features(manifest))]


def results(run: ShadowRun, observation: Observation, rows_scored: int) -> dict:
    """The run's shadow record: counts, metrics with intervals, verdict, per-feature
    out-of-range counts, per-class agreement, and the task-seconds the shadow cost."""
    row = totals(run, observation.get)
    n = int(row["n"])
    metrics = judge(run, row)
    breached = [m for m in metrics if m["breached"]]
    verdict = "empty_sample" if n == 0 else ("breach" if breached else "pass")
    names = feature_names(run.artifact.manifest)
    return {
        "verdict": verdict,
        "on_breach": run.config.on_breach,
        "fraction": run.config.fraction,
        "rows_scored": rows_scored,
        "rows_shadowed": n,
        "metrics": metrics,
        "per_class": per_class(run, row),
        "out_of_range": {names[j]: int(row[f"oor_{j}"] or 0) for j in range(len(names))},
        "shadow_task_seconds": round(float(row["seconds"]), 3),
        "reference": {
            "name": run.reference.manifest.name,
            "version": run.reference.manifest.version,
            "sha256": run.reference.sha256,
            "path": str(run.reference.path),
            **registry_summary(run.reference),
        },
        "reason": breach_reason(breached, n, rows_scored, run.config.fraction),
    }


def breach_reason(breached: list[dict], n: int, rows: int, fraction: float) -> str | None:
    if n == 0:
        return (
            f"shadow sample is empty: none of {rows} rows fell in the {fraction:g} sample; "
            "nothing was compared (raise shadow.fraction for a table this small)"
        )
    if not breached:
        return None
    first = breached[0]
    side = "below" if first["threshold"].startswith("min_") else "above"
    interval = (
        f" (95% interval {first['ci_low']}..{first['ci_high']})"
        if first["ci_low"] is not None
        else ""
    )
    return (
        f"shadow {first['name']} {first['value']}{interval} on {n} rows is {side} "
        f"{first['threshold']}={first['limit']}"
    )


HISTORY_SCHEMA = (
    "run_date date, recorded_at timestamp, job string, output string, output_version bigint, "
    "model_name string, model_version string, model_sha256 string, model_registered_version "
    "string, reference_name string, reference_version string, reference_sha256 string, "
    "reference_registered_version string, rows_scored bigint, rows_shadowed bigint, "
    "fraction double, verdict string, on_breach string, shadow_task_seconds double, "
    "metrics array<struct<name: string, value: double, ci_low: double, ci_high: double, "
    "threshold: string, limit: double, breached: boolean>>, "
    "per_class array<struct<label: string, rows: bigint, agreement: double, ci_low: double, "
    "ci_high: double>>, out_of_range map<string, bigint>"
)


def record(
    spark: SparkSession, run: ShadowRun, shadow: dict, *, job: str, output: str, version
) -> None:
    """Append the run's row to the history table (a Delta path), when the config names one."""
    if not run.config.history:
        return
    manifest = run.artifact.manifest
    row = {
        "run_date": run.run_date,
        "recorded_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
        "job": job,
        "output": output,
        "output_version": version,
        "model_name": manifest.name,
        "model_version": manifest.version,
        "model_sha256": run.artifact.sha256,
        "model_registered_version": registry_summary(run.artifact).get("registered_version"),
        "reference_name": shadow["reference"]["name"],
        "reference_version": shadow["reference"]["version"],
        "reference_sha256": shadow["reference"]["sha256"],
        "reference_registered_version": shadow["reference"].get("registered_version"),
        **{k: shadow[k] for k in ("rows_scored", "rows_shadowed", "fraction", "verdict")},
        "on_breach": shadow["on_breach"],
        "shadow_task_seconds": shadow["shadow_task_seconds"],
        "metrics": shadow["metrics"],
        "per_class": shadow["per_class"],
        "out_of_range": shadow["out_of_range"],
    }
    writer = spark.createDataFrame([row], HISTORY_SCHEMA).write.format("delta").mode("append")
    if is_table_name(run.config.history):
        writer.saveAsTable(run.config.history)
    else:
        writer.save(run.config.history)


def is_table_name(history: str) -> bool:
    """``main.scoring.shadow_history`` names a catalog table; anything with a slash a path."""
    return "/" not in history


def read_history(spark: SparkSession, history: str) -> DataFrame:
    """The history table, by catalog name or Delta path."""
    if is_table_name(history):
        return spark.read.table(history)
    return spark.read.format("delta").load(history)
