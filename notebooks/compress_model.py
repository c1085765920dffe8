# Databricks notebook source
# MAGIC %md
# MAGIC # Compress a model into a leanscore artifact
# MAGIC
# MAGIC Runs a compression recipe and writes an **artifact** (`model.onnx` + `manifest.json`):
# MAGIC the same function as `leanscore compress --config CONFIG --out OUT`. A result that loses
# MAGIC more accuracy than the recipe allows is refused and no artifact is written.
# MAGIC
# MAGIC | widget | meaning |
# MAGIC | --- | --- |
# MAGIC | `config` | compress config (YAML): model, recipe, feature column |
# MAGIC | `out` | artifact directory to write (a Volume or DBFS path on Databricks) |
# MAGIC | `recipe` | optional: another recipe file (relative to the config) |
# MAGIC | `epochs` | optional: training epochs of the built-in model |
# MAGIC | `set` | optional: more `key=value` config overrides, `;`-separated (as `--set`) |
# MAGIC | `register` | optional: register the artifact in MLflow as a new version of this model |
# MAGIC | `alias` | optional: point this alias (e.g. `champion`) at the new version |
# MAGIC
# MAGIC The registry is MLflow's (`MLFLOW_TRACKING_URI` / `MLFLOW_REGISTRY_URI`; on Databricks the
# MAGIC workspace's or Unity Catalog's, `catalog.schema.model` names).
# MAGIC
# MAGIC Locally: `python notebooks/compress_model.py --out /tmp/artifact --epochs 1`.

# COMMAND ----------

# ruff: noqa: E402, F821
from leanscore.jobs.compress import CompressConfig, run_compress
from leanscore.jobs.config import load_config
from leanscore.jobs.notebook_support import (
    overrides,
    project_path,
    set_overrides,
    show,
    widgets,
)

params = widgets(
    globals(),
    {
        "config": "conf/compress-digits-mlp.yaml",
        "out": "demo-output/artifacts/digits-mlp-notebook",
        "recipe": "",
        "epochs": "",
        "set": "",
        "register": "",
        "alias": "",
    },
)
if params["alias"] and not params["register"]:
    raise ValueError(f"alias {params['alias']!r} needs the register widget (the model to alias)")
if params["register"]:
    from leanscore.compression.mlflow_log import check_registry

    check_registry(params["register"])  # before minutes of work, not after
config_path = project_path(params["config"])
config = load_config(
    CompressConfig,
    config_path,
    [
        *overrides(params, {"recipe": "recipe", "epochs": "model.epochs"}),
        *set_overrides(params["set"]),
    ],
)
print(config.model_dump_json(indent=2))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Compress
# MAGIC Trains (or loads) the model, applies the recipe step by step, measures after every step.

# COMMAND ----------

artifact = run_compress(config, params["out"], config_dir=config_path.resolve().parent)
print(f"wrote {artifact.path} (sha256 {artifact.sha256})")
if params["register"]:
    from leanscore.jobs.compress import register_artifact

    version = register_artifact(artifact, name=params["register"], alias=params["alias"] or None)
    print(f"registered {version.model_uri} (run {version.run_id}, alias {version.alias})")

# COMMAND ----------

# MAGIC %md
# MAGIC ## What each step cost and kept

# COMMAND ----------

import pandas as pd

manifest = artifact.manifest
steps = pd.json_normalize(manifest.metrics.get("steps") or [manifest.metrics.get("final", {})])
wanted = ["step", "params", "onnx_bytes", "rows_per_s_1thread", "accuracy", "fidelity.agreement"]
show(globals(), steps[[c for c in wanted if c in steps]])
print(f"{manifest.name}: {manifest.model_bytes:,} bytes, task {manifest.task}")
