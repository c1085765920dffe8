# Databricks notebook source
# MAGIC %md
# MAGIC # Embed a text table (the nightly embedding task)
# MAGIC
# MAGIC Embeds a text column of a Parquet/Delta table with a leanscore text artifact (MiniLM,
# MAGIC fp32 or int8) into the run date's partition of a Delta table: the same function as
# MAGIC `leanscore embed --config CONFIG --run-date DATE [--set key=value ...]`.
# MAGIC A rerun for the same date replaces exactly that date's rows.
# MAGIC
# MAGIC | widget | meaning |
# MAGIC | --- | --- |
# MAGIC | `config` | nightly embedding config (YAML) |
# MAGIC | `run_date` | the partition to (re)write, `YYYY-MM-DD` (empty: today) |
# MAGIC | `artifact` | optional: text artifact directory, overrides the config |
# MAGIC | `input_path` / `input_table` | optional: the table to embed (a path, or a catalog table) |
# MAGIC | `output_path` / `output_table` | optional: where the embeddings go |
# MAGIC | `summary_path` | optional: where the run summary JSON goes |
# MAGIC | `set` | optional: more `key=value` config overrides, `;`-separated (as `--set`) |

# COMMAND ----------

# ruff: noqa: E402, F821
import json

from leanscore.jobs.embed import EmbedConfig, score_text_table
from leanscore.jobs.notebook_support import (
    nightly_config,
    notebook_spark,
    show,
    widgets,
)
from leanscore.jobs.score import RUN_DATE_COLUMN, read_table

params = widgets(
    globals(),
    {
        "config": "conf/nightly-embed.yaml",
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
config, run_date = nightly_config(params, EmbedConfig)
print(config.model_dump_json(indent=2))

# COMMAND ----------

# MAGIC %md
# MAGIC ## The default artifact and table, built when missing
# MAGIC
# MAGIC The shipped config embeds a table of standard-library docstrings with MiniLM compressed
# MAGIC by the shipped `minilm-dynamic-int8` recipe, both under `demo-output/embed/`. Where they
# MAGIC do not exist yet (after `make demo` alone), this cell builds them as the embedding
# MAGIC bench's first run does (`leanscore bench --config conf/bench-embed.yaml --out
# MAGIC bench-output/embed`): the table, then the artifact, gated on held-out sentences. It
# MAGIC does nothing when the run names its own artifact and table.

# COMMAND ----------

from pathlib import Path

spark = notebook_spark(globals(), "leanscore-embed")
EMBED_BENCH = "conf/bench-embed.yaml"
missing = not (Path(config.artifact) / "manifest.json").is_file() or (
    config.input.path is not None and not Path(config.input.path).exists()
)
if missing:
    from leanscore.bench.embed import BenchEmbedConfig, prepare
    from leanscore.jobs.config import find_config, load_config

    bench = load_config(
        BenchEmbedConfig, EMBED_BENCH, ["recipes=[recipes/minilm-dynamic-int8.yaml]"]
    )
    paths = {str(Path(p).resolve()) for p in (config.artifact, config.input.path) if p}
    workdir = Path(bench.workdir).resolve()
    defaults = {
        str(workdir / "artifacts" / "minilm-dynamic-int8"),
        str(workdir / "tables" / "docstrings"),
    }
    if not paths <= defaults:
        raise SystemExit(
            f"{config.artifact} or {config.input.path} does not exist; build the artifact with "
            "`leanscore compress` and point the config at your own table"
        )
    built, rejected = prepare(spark, bench, config_dir=find_config(EMBED_BENCH).parent)
    print(f"built {built}" + (f"; rejected {rejected}" if rejected else ""))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Embed

# COMMAND ----------

summary = score_text_table(spark, config, run_date)
print(json.dumps(summary, indent=2))

# COMMAND ----------

# MAGIC %md
# MAGIC ## The partition just written

# COMMAND ----------

from pyspark.sql import functions as F

written = read_table(spark, config.output).where(F.col(RUN_DATE_COLUMN) == F.lit(run_date))
show(
    globals(),
    written.select(*config.key_columns, F.size("embedding").alias("dims"), "embedding_error"),
    rows=5,
)
print(
    f"embedded {summary['rows_out']:,} rows into {summary['output']} for {summary['run_date']} "
    f"({summary['flagged_rows']} flagged, {summary['sentences_per_s']:,.0f} sentences/s)"
)
