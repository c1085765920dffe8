"""The whole story once, on an embedded default: train -> compress -> score -> compare.

Two workloads by default, each a real model trained here on real data, exported and
compressed into two artifacts (the fp32 export, and a compressed one gated on held-out rows),
scored side by side through leanscore's engine over the same Delta table of rows no recipe
saw, and priced with the workload's pricing file:

- the headline: a VGG-style CNN on Zalando's Fashion-MNIST product photos (Debian's
  dataset-fashion-mnist), where the model is most of the cost of scoring, distilled into a
  student a fifth its size with int8 weights, so compression cuts the bill; its compressed
  model then runs as the nightly job into a date-partitioned Delta table;
- the digits MLP on scikit-learn's real handwritten digits, where the model is so cheap that
  reading the table and the cluster's fixed cost per night dominate: compression barely moves
  the bill, and the demo says from how many rows a night it would.

A third, the wide tabular classifier on generated rows (256 features, 3.2M parameters), runs
when named (``--workload wide-mlp``).

The terminal gets one line per phase, the tables and the total time; the details (each
compression step, each timed round) go to ``<workdir>/logs/demo.log`` and the JVM's own output
to ``<workdir>/logs/spark.log``.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from leanscore.bench.compare import (
    compare_variants,
    comparison_table,
    default_keep,
    scan_plan,
)
from leanscore.bench.demo.datagen import (
    FEATURE_COLUMN,
    fashion_distinct_examples,
    write_digits_table,
    write_fashion_table,
    write_wide_table,
)
from leanscore.bench.images_prepare import class_labels, image_spec
from leanscore.bench.metrics import environment, source_commit
from leanscore.bench.pricing import Pricing, cost, load_pricing
from leanscore.compression.build import compress_to_artifact
from leanscore.compression.data import DIGITS_FEATURES, LabelledData
from leanscore.compression.recipe import Recipe
from leanscore.jobs.config import load_config, packaged_config
from leanscore.jobs.score import InputConfig, ScoreConfig, run_score
from leanscore.jobs.tables import print_table
from leanscore.udfs.families.image import ImageFamily
from pyspark.sql import SparkSession
from rich.console import Console

CONF = packaged_config(".")

Trained = tuple[torch.nn.Module, LabelledData, LabelledData]


@dataclass(frozen=True)
class DemoWorkload:
    """One comparison the demo runs: how to train its model and write its table, and the two
    recipes (the fp32 export first)."""

    name: str
    title: str
    table: str
    features: dict  # the artifact's input, as the manifest names it
    recipes: tuple[str, str]
    train: Callable[[Console], Trained]
    write_table: Callable[[SparkSession, str, int], int]  # returns the Delta version
    distinct_examples: Callable[[LabelledData, int], int | None]  # (evaluation, rows)
    pricing: str = "pricing.yaml"  # in conf/
    batch_size: int = 4096  # rows per ONNX Runtime call, both models
    class_labels: tuple[str, ...] = tuple(str(d) for d in range(10))


def _train_wide(console: Console) -> Trained:
    from leanscore.bench.wide_model import train_wide_model

    return train_wide_model(train_rows=16_384, evaluation_rows=5_000, epochs=3, console=console)


def _train_fashion(console: Console) -> Trained:
    from leanscore.bench.fashion_model import train_demo_model

    return train_demo_model(console=console)


def _fashion_features() -> dict:
    from leanscore.compression.artifact import ImageSpec

    spec = ImageSpec(**image_spec())
    return {"image_column": "image", "image": spec.model_dump(), "size": spec.size}


def _train_digits(console: Console) -> Trained:
    from leanscore.bench.demo.digits_model import train_digits_model

    return train_digits_model(epochs=8, console=console)


FASHION = DemoWorkload(
    name="fashion-cnn",
    title="VGG-style CNN on Fashion-MNIST's product photos: the model is the cost",
    table="fashion_scoring",
    features=_fashion_features(),
    recipes=("fashion-cnn-fp32.yaml", "fashion-cnn-tiny-student-w8.yaml"),
    train=_train_fashion,
    write_table=write_fashion_table,
    # the table repeats the test split's photos, which no recipe saw
    distinct_examples=lambda evaluation, rows: fashion_distinct_examples(rows),
    pricing="pricing-images.yaml",
    class_labels=tuple(class_labels()),
    batch_size=ImageFamily.default_batch_size,  # a CNN's activations stay in the core's cache
)
WIDE = DemoWorkload(
    name="wide-mlp",
    title="wide tabular classifier, 256 features, 3.2M parameters: the model is the cost",
    table="wide_features",
    features={"array_column": FEATURE_COLUMN, "size": 256},
    recipes=("wide-mlp-fp32.yaml", "wide-mlp-distilled-tiny-int8.yaml"),
    train=_train_wide,
    write_table=lambda spark, path, rows: write_wide_table(spark, path, rows, seed=0),
    # every row of the wide table is an independent draw from a stream no recipe saw
    distinct_examples=lambda evaluation, rows: None,
)
DIGITS = DemoWorkload(
    name="digits-mlp",
    title="digits MLP on scikit-learn's real handwritten digits: reading is the cost",
    table="digits_features",
    features={"array_column": FEATURE_COLUMN, "size": DIGITS_FEATURES},
    recipes=("digits-mlp-fp32.yaml", "digits-mlp-demo.yaml"),
    train=_train_digits,
    write_table=lambda spark, path, rows: write_digits_table(spark, path, rows, split="held_out"),
    # the table augments copies of the held-out images: only these are distinct examples
    distinct_examples=lambda evaluation, rows: len(evaluation.labels),
)
WORKLOADS = (FASHION, DIGITS)  # what the demo runs unless told
KNOWN = (FASHION, WIDE, DIGITS)


def chosen_workloads(names: list[str] | None) -> tuple[DemoWorkload, ...]:
    """The workloads named, in the order given (None or empty: all); an unknown name is
    refused with the known ones."""
    if not names:
        return WORKLOADS
    by_name = {w.name: w for w in KNOWN}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown demo workload {unknown[0]!r}: choose from {', '.join(by_name)}")
    return tuple(by_name[n] for n in dict.fromkeys(names))


def run_demo(
    spark: SparkSession,
    workdir: str | Path,
    *,
    rows: int = 50_000,
    run_date: str | None = None,
    pricing_path: str | Path | None = None,
    console: Console | None = None,
    workloads: tuple[DemoWorkload, ...] = WORKLOADS,
) -> dict:
    """Run every workload (the first is the headline: its compressed model also runs as the
    nightly job), print a table each, and write ``report.json`` (one report per workload).
    Each is priced with its own pricing file in conf/, or all with ``pricing_path``."""
    if console is None:
        console = Console()
        # in a log rich would assume 80 columns and wrap every line; the tables are 100 wide
        console = console if console.is_terminal else Console(width=100, soft_wrap=True)
    workdir = Path(workdir).resolve()
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    day = run_date or dt.date.today().isoformat()
    pricings = {
        w.name: load_pricing(pricing_path or CONF / w.pricing) for w in workloads
    }  # all read before any work, so a bad file fails first
    started = time.perf_counter()
    run_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    commit = source_commit()  # the code that runs, before anything could change it
    reports = {}
    with (workdir / "logs" / "demo.log").open("w") as log_file:
        details = Console(file=log_file, width=160)
        for index, workload in enumerate(workloads):
            console.print(f"[bold]{workload.name}[/]: {workload.title}")
            pricing = pricings[workload.name]
            report = _run_workload(
                spark, workload, workdir, rows, pricing, console=console, details=details
            )
            if index == 0:
                report["nightly_job"] = _nightly_job(spark, report, workdir, day, console)
            reports[workload.name] = report
            print_table(console, comparison_table(report, title=_title(workload, report, day)))
            console.print(_bill_sentence(report, pricing))
    seconds = round(time.perf_counter() - started, 1)
    cores = next(iter(reports.values()))["cores"]
    result = {
        "run_date": day,
        "run_at": run_at,
        "seconds": seconds,
        "environment": {**environment(spark, cores=cores), "commit": commit},
        "workloads": reports,
    }
    (workdir / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    console.print(
        f"report {workdir / 'report.json'}, details {workdir / 'logs'}; {seconds:.0f} s in all"
    )
    return result


def _run_workload(
    spark: SparkSession,
    workload: DemoWorkload,
    workdir: Path,
    rows: int,
    pricing: Pricing,
    *,
    console: Console,
    details: Console,
) -> dict:
    phase = _Phases(console)
    phase.start("training the PyTorch model")
    model, train, evaluation = workload.train(details)
    (workdir / "models").mkdir(exist_ok=True)
    torch.save(model.state_dict(), workdir / "models" / f"{workload.name}.pt")

    phase.start("compressing: the fp32 export, then the compressed recipe")
    artifacts = _compress(workload, model, train, evaluation, workdir, details)

    table_path = str(workdir / "tables" / workload.table)
    phase.start(f"writing {rows:,} labelled rows no recipe saw to Delta")
    version = workload.write_table(spark, table_path, rows)

    phase.start("timing both models over the table, side by side")
    source = spark.read.format("delta").load(table_path)
    keep = default_keep(source, artifacts[0])
    whole_table = InputConfig(path=table_path, format="delta")
    report = compare_variants(
        spark,
        source,
        artifacts,
        pricing,
        label_column="label",
        repeats=2,
        batch_size=workload.batch_size,
        console=details,
        keep=keep,
        scan=scan_plan(spark, whole_table, artifacts[0], keep, details),
        distinct_examples=workload.distinct_examples(evaluation, rows),
    )
    phase.done()
    report.update({"workload": workload.name, "table": table_path, "table_delta_version": version})
    report["artifacts"] = [str(a.path) for a in artifacts]
    return report


def _compress(workload, model, train, evaluation, workdir: Path, details: Console) -> list:
    example = torch.from_numpy(evaluation.features[:8])
    artifacts = []
    for recipe_file in workload.recipes:
        recipe = load_config(Recipe, CONF / "recipes" / recipe_file)
        artifacts.append(
            compress_to_artifact(
                recipe,
                copy.deepcopy(model),  # recipes may change the model they are given
                workdir / "artifacts" / recipe.name,
                example_input=example,
                train=train,
                evaluation=evaluation,
                features=workload.features,
                class_labels=list(workload.class_labels),
                progress=lambda msg: details.log(f"  {msg}"),
            )
        )
    return artifacts


def _nightly_job(spark: SparkSession, report: dict, workdir: Path, day: str, console) -> dict:
    """The compressed model as the nightly job: the table in, predictions out to Delta."""
    phase = _Phases(console)
    artifact = report["artifacts"][-1]
    name = Path(artifact).name
    out_path = str(workdir / "tables" / "predictions" / name)
    phase.start(f"nightly job: {name} scores the table into Delta, run_date {day}")
    config = ScoreConfig(
        artifact=artifact,
        input={"path": report["table"], "format": "delta"},
        output={"path": out_path, "format": "delta"},
        key_columns=["row_id"],
        passthrough_columns=["label"],
        summary_path=str(workdir / "runs" / f"{name}-{day}.json"),
    )
    summary = run_score(spark, config, day)
    phase.done(f"{summary['rows_out']:,} rows to {out_path}")
    return {"predictions": out_path, "rows_out": summary["rows_out"], "seconds": summary["seconds"]}


class _Phases:
    """One terminal line per phase, with the time it took."""

    def __init__(self, console: Console):
        self.console, self.name, self.t0 = console, None, 0.0

    def start(self, name: str) -> None:
        self.done()
        self.name, self.t0 = name, time.perf_counter()

    def done(self, what: str = "") -> None:
        if self.name is not None:
            took = time.perf_counter() - self.t0
            self.console.print(f"  {self.name}{': ' + what if what else ''} ({took:.0f} s)")
        self.name = None


def _title(workload: DemoWorkload, report: dict, day: str) -> str:
    distinct = report.get("distinct_examples") or report["rows"]
    return (
        f"{workload.name}: {report['rows']:,} rows ({distinct:,} distinct examples), "
        f"{report['cores']} cores, run_date {day}"
    )


def rows_to_halve_bill(pricing: Pricing, baseline: dict, variant: dict) -> int | None:
    """The rows per night from which ``variant``'s nightly bill is at most half the
    baseline's under ``pricing`` (and stays so for every larger night, up to a trillion
    rows), or None where it never does: the fixed cost per night must be paid whatever the
    model, so the per-row part must more than halve. Both are compare results; each night is
    priced as ``cost`` prices it, the cluster sized for that night where the pricing has a
    window. Found on a grid of 40 points a decade, then narrowed to the row."""

    def halved(rows: int) -> bool:
        night = pricing.model_copy(update={"nightly_rows": rows})
        return nightly_usd(night, variant) <= nightly_usd(night, baseline) / 2

    grid = [int(10 ** (k / 40)) for k in range(12 * 40 + 1)]
    if not halved(grid[-1]):
        return None
    first = len(grid) - 1
    while first > 0 and halved(grid[first - 1]):
        first -= 1
    if first == 0:
        return 1
    low, high = grid[first - 1], grid[first]  # not halved at low, halved at high
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if halved(mid) else (mid, high)
    return high


def nightly_usd(pricing: Pricing, result: dict) -> float:
    """A compare result's nightly bill under ``pricing``, from its core-seconds per row."""
    core_s = result["core_seconds_per_million_rows"]
    return cost(pricing, rows=1_000_000, wall_s=core_s, cores=1)["nightly_usd"]


def _bill_sentence(report: dict, pricing: Pricing) -> str:
    baseline, best = report["variants"][0], report["variants"][-1]
    saved = best.get("savings_pct", 0.0)
    fixed = best["fixed_usd_per_night"]
    sentence = (
        f"At {pricing.nightly_rows:,} rows a night the compressed model saves {saved:.0f}% of "
        f"the monthly bill; every night also pays ${fixed:,.2f} of fixed cost (start-up, driver)."
    )
    if saved >= 50:
        return sentence
    halve = rows_to_halve_bill(pricing, baseline, best)
    return sentence + (
        f" Compression halves this bill only from {halve:,} rows a night."
        if halve
        else " Compression never halves this bill: the model is too small a part of it."
    )
