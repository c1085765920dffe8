# Databricks notebook source
# MAGIC %md
# MAGIC # Cost report: what each model costs per million rows
# MAGIC
# MAGIC Runs the benchmark (the same function as `leanscore bench --config CONFIG --out OUT`):
# MAGIC every model variant on the same table in one Spark session, warmed and repeated. Then
# MAGIC charts throughput, $ per million rows and accuracy against cost, and queries the benchmark
# MAGIC history table across runs.
# MAGIC
# MAGIC | widget | meaning |
# MAGIC | --- | --- |
# MAGIC | `config` | bench config (YAML): input table, artifacts (uncompressed first), pricing |
# MAGIC | `out` | report directory (`report.json`, `report.md`, charts) |
# MAGIC | `run_bench` | `true`: run the bench; `false`: report on the `report.json` in `out` |
# MAGIC | `input_path` | optional: the table to benchmark, overrides the config |
# MAGIC | `artifacts` | optional: comma-separated artifact directories, uncompressed first |
# MAGIC | `repeats` | optional: timed repeats per variant |
# MAGIC | `history` | optional: the Delta history table (path or table); default: the report's |
# MAGIC | `set` | optional: more `key=value` config overrides, `;`-separated (as `--set`) |
# MAGIC | `shadow_history` | optional: the nightly shadow's history (path or table) to chart |

# COMMAND ----------

# ruff: noqa: E402, F821
import json
from pathlib import Path

import pandas as pd
from leanscore.bench.compare import BenchConfig
from leanscore.bench.run import run_bench
from leanscore.jobs.config import load_config
from leanscore.jobs.notebook_support import (
    notebook_spark,
    overrides,
    project_path,
    set_overrides,
    show,
    widgets,
)

params = widgets(
    globals(),
    {
        "config": "conf/bench.yaml",
        "out": "bench-output",
        "run_bench": "true",
        "input_path": "",
        "artifacts": "",
        "repeats": "",
        "history": "",
        "set": "",
        "shadow_history": "",
    },
)
if params["run_bench"] not in ("true", "false"):
    raise ValueError(f"widget run_bench must be true or false, got {params['run_bench']!r}")
out = Path(params["out"])
config_path = project_path(params["config"])
sets = overrides(params, {"input_path": "input.path", "repeats": "repeats", "history": "history"})
if params["artifacts"].strip():
    sets.append("artifacts=" + json.dumps([a.strip() for a in params["artifacts"].split(",")]))
config = load_config(BenchConfig, config_path, [*sets, *set_overrides(params["set"])])
spark = notebook_spark(globals(), "leanscore-bench")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Run the benchmark

# COMMAND ----------

if params["run_bench"] == "true":
    run_bench(spark, config, out, config_dir=config_path.resolve().parent)
report_file = out / "report.json"
if not report_file.is_file():
    raise FileNotFoundError(f"{report_file} does not exist; run with run_bench=true first")
report = json.loads(report_file.read_text())
variants = pd.DataFrame(report["variants"])
columns = ["name", "rows", "rows_per_s", "usd_per_million_rows", "monthly_usd", "savings_pct"]
columns += ["model_bytes", "accuracy", "accuracy_interval"]
show(globals(), variants[[c for c in columns if c in variants]])
# what each part buys: one ratio per effect, between two variants differing in one thing
effects = (report.get("decomposition") or {}).get("effects") or {}
show(globals(), pd.DataFrame([{"effect": k, **v} for k, v in effects.items()]))
print(report.get("cost_model", ""))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Charts
# MAGIC The bench's own PNGs: what each part buys, where the time goes, throughput per variant,
# MAGIC $ per million rows, accuracy against cost.

# COMMAND ----------

import matplotlib.pyplot as plt

charts = report.get("charts") or {}
if not charts:
    raise FileNotFoundError(f"{report_file} names no charts; rerun the bench with run_bench=true")
fig, axes = plt.subplots(1, len(charts), figsize=(7 * len(charts), 5), squeeze=False)
for ax, (title, name) in zip(axes[0], charts.items(), strict=True):
    ax.imshow(plt.imread(out / name))
    ax.set_title(title)
    ax.set_axis_off()
fig.suptitle(f"{report['rows']:,} rows on {report['cores']} cores, run {report.get('run_id')}")
fig.tight_layout()
fig.savefig(out / "cost_report_notebook.png", dpi=80)
show(globals(), fig)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Across runs: the benchmark history table
# MAGIC One row per variant per run, appended by every bench run; query it like any Delta table.

# COMMAND ----------

history = params["history"] or (report.get("history") or {}).get("path")
if not history:
    raise ValueError("the report names no history table and the history widget is empty")
if "/" in history:
    spark.read.format("delta").load(history).createOrReplaceTempView("bench_history")
else:
    spark.read.table(history).createOrReplaceTempView("bench_history")
by_variant = spark.sql(
    """
    SELECT name,
           count(DISTINCT run_id)               AS runs,
           max(run_at)                          AS last_run_at,
           round(avg(rows_per_s), 0)            AS avg_rows_per_s,
           round(min(usd_per_million_rows), 6)  AS best_usd_per_million_rows,
           round(avg(savings_pct), 1)           AS avg_savings_pct
    FROM bench_history
    GROUP BY name
    ORDER BY best_usd_per_million_rows
    """
)
show(globals(), by_variant)
by_variant.toPandas().to_csv(out / "history_by_variant.csv", index=False)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Shadow fidelity over time
# MAGIC What the nightly jobs' shadow measured on each night's sample (docs/shadow.md): each
# MAGIC metric per run date with its 95% interval against its threshold. Skipped when the
# MAGIC `shadow_history` widget is empty.

# COMMAND ----------

if params["shadow_history"].strip():
    from leanscore.jobs.shadow import read_history
    from leanscore.jobs.shadow_report import metrics_by_run, plot_metrics

    shadow_rows = metrics_by_run(read_history(spark, params["shadow_history"].strip()))
    show(globals(), shadow_rows)
    shadow_rows.to_csv(out / "shadow_metrics.csv", index=False)
    print(f"chart: {plot_metrics(shadow_rows, out / 'shadow_metrics.png')}")
