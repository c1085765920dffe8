"""Autotune: run every candidate recipe on the same model and data, and keep the cheapest one
within budget -- the highest measured single-thread rows/s (rows/s per core), not the first
that passes. The whole table of candidates is kept for the report."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from leanscore.compression.recipe import (
    AccuracyGateError,
    CompressionResult,
    LabelledData,
    Recipe,
    RecipeError,
    measure_baseline,
    run_recipe,
)

TABLE_COLUMNS = (
    "rank",
    "recipe",
    "passed",
    "chosen",
    "rows_per_s_per_core",
    "speedup_1thread",
    "onnx_bytes",
    "zipped_bytes",
    "params",
    "accuracy",
    "accuracy_interval",
    "distinct_examples",
    "accuracy_drop_points",
    "fidelity",
    "reason",
)


@dataclass
class AutotuneResult:
    best: CompressionResult | None
    table: list[dict]
    baseline: dict


def autotune(
    recipes: list[Recipe],
    model,
    *,
    example_input=None,
    train: LabelledData | None = None,
    evaluation: LabelledData,
    calibration: LabelledData | None = None,
    task: str = "classification",
    also_evaluate: dict[str, LabelledData] | None = None,
    progress: Callable[[str], None] | None = None,
    result_output: str | None = None,
    recipe_family: str = "tabular",
    exporter=None,
) -> AutotuneResult:
    say = progress or (lambda msg: None)
    names = [r.name for r in recipes]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"candidates: recipe names must be unique, {dupes} repeat")
    # what the baseline and every candidate are measured on, said once
    measured_on = dict(
        example_input=example_input,
        evaluation=evaluation,
        task=task,
        also_evaluate=also_evaluate,
        result_output=result_output,
        exporter=exporter,
    )
    baseline = measure_baseline(model, **measured_on)
    results: dict[str, CompressionResult] = {}
    rows = []
    for i, recipe in enumerate(recipes, 1):
        say(f"candidate {i}/{len(recipes)}: {recipe.name}")
        try:
            result = run_recipe(
                recipe,
                model,
                **measured_on,
                train=train,
                calibration=calibration,
                baseline=baseline,
                family=recipe_family,
                progress=lambda msg: say(f"  {msg}"),
            )
        except AccuracyGateError as err:
            rows.append(_row(recipe, err.metrics, passed=False, reason=str(err)))
            say(f"  refused: {err}")
            continue
        except RecipeError as err:
            rows.append(_row(recipe, None, passed=False, reason=str(err)))
            say(f"  cannot run: {err}")
            continue
        results[recipe.name] = result
        rows.append(_row(recipe, result.metrics, passed=True, reason="within budget"))
    ranked = _ranked(rows)
    best = ranked[0] if ranked and ranked[0]["passed"] else None
    if best:
        best["chosen"] = True
    return AutotuneResult(results[best["recipe"]] if best else None, ranked, baseline.metrics)


def _ranked(rows: list[dict]) -> list[dict]:
    """Passed first, then the cheapest (most rows per core-second; ties go to the smaller
    file), each numbered by its rank."""
    ranked = sorted(
        rows,
        key=lambda r: (not r["passed"], -(r["rows_per_s_per_core"] or 0), r["onnx_bytes"] or 0),
    )
    for rank, row in enumerate(ranked, 1):
        row["rank"] = rank
    return ranked


def _row(recipe: Recipe, metrics: dict | None, *, passed: bool, reason: str) -> dict:
    final = (metrics or {}).get("final", {})
    fid = final.get("fidelity") or {}
    return {
        "rank": None,
        "recipe": recipe.name,
        "passed": passed,
        "chosen": False,
        "rows_per_s_per_core": final.get("rows_per_s_1thread"),
        "speedup_1thread": (final.get("vs_baseline") or {}).get("speedup_1thread"),
        "onnx_bytes": final.get("onnx_bytes"),
        "zipped_bytes": final.get("zipped_bytes"),
        "params": final.get("params"),
        "accuracy": final.get("accuracy"),
        # Wilson 95% over the distinct held-out examples (copies of one count once)
        "accuracy_interval": final.get("accuracy_interval"),
        "distinct_examples": (metrics or {}).get("gate", {}).get("distinct_examples"),
        "accuracy_drop_points": (metrics or {}).get("gate", {}).get("accuracy_drop_points"),
        "fidelity": fid.get("agreement", fid.get("cosine_mean")),
        "reason": reason,
    }


def write_table(table: list[dict], base: str | Path) -> tuple[Path, Path]:
    """Write ``<base>.candidates.json`` and ``.csv`` next to the artifact directory."""
    base = Path(base)
    base.parent.mkdir(parents=True, exist_ok=True)
    json_path = base.with_name(base.name + ".candidates.json")
    csv_path = base.with_name(base.name + ".candidates.csv")
    json_path.write_text(json.dumps(table, indent=2) + "\n")
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=TABLE_COLUMNS)
        writer.writeheader()
        writer.writerows(table)
    return json_path, csv_path
