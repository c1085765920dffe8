# Databricks notebook source
# MAGIC %md
# MAGIC # Score a table (the nightly task)
# MAGIC
# MAGIC Scores a Parquet/Delta table with a leanscore artifact into the run date's partition of a
# MAGIC Delta table: the same function as
# MAGIC `leanscore score --config CONFIG --run-date DATE [--set key=value ...]`.
# MAGIC A rerun for the same date replaces exactly that date's rows.
# MAGIC
# MAGIC | widget | meaning |
# MAGIC | --- | --- |
# MAGIC | `config` | nightly scoring config (YAML) |
# MAGIC | `run_date` | the partition to (re)write, `YYYY-MM-DD` (empty: today) |
# MAGIC | `artifact` | optional: artifact folder or `models:/NAME@ALIAS`; overrides the config |
# MAGIC | `input_path` / `input_table` | optional: the table to score (a path, or a catalog table) |
# MAGIC | `output_path` / `output_table` | optional: where predictions go |
# MAGIC | `summary_path` | optional: where the run summary JSON goes |
# MAGIC | `set` | optional: more `key=value` config overrides, `;`-separated (as `--set`) |
# MAGIC
# MAGIC Works on classic clusters and on serverless / Spark Connect (no `sparkContext` needed).

# COMMAND ----------

# ruff: noqa: E402, F821
import json

from leanscore.jobs.notebook_support import (
    nightly_config,
    notebook_spark,
    show,
    widgets,
)
from leanscore.jobs.score import RUN_DATE_COLUMN, ScoreConfig, read_table, run_score

params = widgets(
    globals(),
    {
        "config": "conf/nightly.yaml",
        "run_date": "",
        "artifact": "",
        "input_path": "",
        "input_table": "",
        "output_path": "",
        "output_table": "",
        "summary_path": "",
        "set": "",
    },
)
config, run_date = nightly_config(params, ScoreConfig)
print(config.model_dump_json(indent=2))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Score

# COMMAND ----------

spark = notebook_spark(globals(), "leanscore-score")
summary = run_score(spark, config, run_date)
print(json.dumps(summary, indent=2))

# COMMAND ----------

# MAGIC %md
# MAGIC ## The partition just written

# COMMAND ----------

from pyspark.sql import functions as F

written = read_table(spark, config.output).where(F.col(RUN_DATE_COLUMN) == F.lit(run_date))
show(globals(), written.groupBy("model_name", "prediction").count().orderBy("prediction"))
show(globals(), written, rows=5)
print(
    f"scored {summary['rows_out']:,} rows into {summary['output']} for {summary['run_date']} "
    f"({summary['flagged_rows']} flagged, {summary['rows_per_s']:,.0f} rows/s)"
)
