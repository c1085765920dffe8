"""The whole story once, on an embedded default: train -> compress -> score -> compare.

A real model (an MLP) is trained on real handwritten digits shipped with scikit-learn,
exported and compressed into two artifacts (fp32 baseline and pruned + int8), a labelled
Delta table of augmented held-out digits is written, both models score it through the pandas
UDF into date-partitioned Delta tables, and a comparison table is printed.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import torch
from leanscore.compression.build import compress_to_artifact
from leanscore.compression.data import DIGITS_FEATURES
from leanscore.compression.recipe import Recipe
from leanscore.jobs.bench.compare import (
    compare_variants,
    comparison_table,
    default_keep,
    scan_plan,
    wide_console,
)
from leanscore.jobs.bench.pricing import load_pricing
from leanscore.jobs.config import load_config, packaged_config
from leanscore.jobs.demo.datagen import FEATURE_COLUMN, write_digits_table
from leanscore.jobs.demo.digits_model import train_digits_model
from leanscore.jobs.score import InputConfig, ScoreConfig, run_score
from pyspark.sql import SparkSession
from rich.console import Console

CONF = packaged_config(".")
RECIPES = ("digits-mlp-fp32.yaml", "digits-mlp-demo.yaml")


def run_demo(
    spark: SparkSession,
    workdir: str | Path,
    *,
    rows: int = 1_000_000,
    run_date: str | None = None,
    epochs: int = 8,
    pricing_path: str | Path = CONF / "pricing.yaml",
    console: Console | None = None,
) -> dict:
    console = console or wide_console()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    day = run_date or dt.date.today().isoformat()
    pricing = load_pricing(pricing_path)
    started = time.perf_counter()

    console.rule("[bold]leanscore demo")
    console.log("1/5 training an MLP on scikit-learn's real handwritten digits")
    model, train, evaluation = train_digits_model(epochs=epochs, console=console)
    # The PyTorch baseline `leanscore bench` can time (torch_model.state_dict in its config).
    (workdir / "models").mkdir(exist_ok=True)
    torch.save(model.state_dict(), workdir / "models" / "digits-mlp.pt")

    console.log("2/5 compressing: fp32 baseline, then structured pruning + static int8")
    artifacts = []
    example = torch.from_numpy(evaluation.features[:8])
    features = {"array_column": FEATURE_COLUMN, "size": DIGITS_FEATURES}
    for recipe_file in RECIPES:
        recipe = load_config(Recipe, CONF / "recipes" / recipe_file)
        artifact = compress_to_artifact(
            recipe,
            model,
            workdir / "artifacts" / recipe.name,
            example_input=example,
            train=train,
            evaluation=evaluation,
            features=features,
            class_labels=[str(d) for d in range(10)],
            progress=lambda msg: console.log(f"  {msg}"),
        )
        console.log(f"  wrote {artifact}")
        artifacts.append(artifact)

    table_path = str(workdir / "tables" / "digits_features")
    console.log(
        f"3/5 writing {rows:,} labelled rows (augmented held-out digits) to Delta {table_path}"
    )
    t0 = time.perf_counter()
    version = write_digits_table(spark, table_path, rows, split="held_out")
    console.log(f"  Delta version {version}, {time.perf_counter() - t0:.1f}s")

    console.log(
        "4/5 scoring with each model through leanscore's engine: timed side by side into "
        "Spark's noop sink, then the nightly job into date-partitioned Delta tables"
    )
    source = spark.read.format("delta").load(table_path)
    keep = default_keep(source, artifacts[0])
    table = InputConfig(path=table_path, format="delta")
    report = compare_variants(
        spark,
        source,
        artifacts,
        pricing,
        label_column="label",
        repeats=2,
        console=console,
        keep=keep,
        scan=scan_plan(spark, table, artifacts[0], keep, console),
    )
    for artifact, variant in zip(artifacts, report["variants"], strict=True):
        out_path = str(workdir / "tables" / "predictions" / artifact.manifest.name)
        config = ScoreConfig(
            artifact=str(artifact.path),
            input={"path": table_path, "format": "delta"},
            output={"path": out_path, "format": "delta"},
            key_columns=["row_id"],
            passthrough_columns=["label"],
            summary_path=str(workdir / "runs" / f"{artifact.manifest.name}-{day}.json"),
        )
        summary = run_score(spark, config, day)
        variant["predictions"] = out_path
        variant["held_out_accuracy"] = artifact.manifest.metrics["final"]["accuracy"]
        console.log(
            f"  nightly job wrote {summary['rows_out']:,} rows to {out_path} "
            f"(run_date={day}, {summary['seconds']:.1f}s)"
        )

    console.log("5/5 comparison")
    report.update(
        {
            "run_date": day,
            "table": table_path,
            "table_delta_version": version,
            "seconds": round(time.perf_counter() - started, 1),
        }
    )
    (workdir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    console.print(
        comparison_table(
            report, title=f"{report['rows']:,} rows, {report['cores']} cores, run_date {day}"
        )
    )
    console.log(f"report: {workdir / 'report.json'}  ({report['seconds']:.0f}s in all)")
    return report
