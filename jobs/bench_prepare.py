"""Make what the benchmark measures when it is absent, so ``make bench`` runs on a clean clone.

The demo's own functions do the work: the MLP is trained on scikit-learn's real digits
(``digits_model.train_digits_model``), its state_dict is saved for the PyTorch baseline, every
recipe writes its artifact from that same trained model, and the labelled table of augmented
held-out digits is written with ``datagen``. What already exists is kept: the model and
its artifacts are rebuilt together (never one without the others, so the baseline is always
the model the artifacts were made from), the table only when it is missing or too small.
"""

from __future__ import annotations

from pathlib import Path

from leanscore.jobs.config import packaged_config
from pydantic import BaseModel, ConfigDict, Field
from pyspark.sql import SparkSession
from rich.console import Console

CONF = packaged_config(".")


class PrepareConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rows: int = Field(gt=0, description="rows of the labelled input table to generate")
    recipes: list[str] = Field(
        min_length=1, description="one recipe per artifact, in the order of 'artifacts'"
    )
    epochs: int = Field(default=8, gt=0)
    augmented_rows: int = Field(default=40_000, gt=0)
    seed: int = 0


def prepare_inputs(
    spark: SparkSession,
    prepare: PrepareConfig,
    *,
    table_path: str,
    artifact_paths: list[str],
    state_dict_path: str | None,
    console: Console,
) -> dict[str, bool]:
    """Build whatever of (model + artifacts, table) is missing; return what was built."""
    if len(prepare.recipes) != len(artifact_paths):
        raise ValueError(
            f"prepare.recipes has {len(prepare.recipes)} entries but artifacts has "
            f"{len(artifact_paths)}; give one recipe per artifact, in the same order"
        )
    built = {"model": False, "table": False}
    model_files = [Path(p) / "manifest.json" for p in artifact_paths]
    if state_dict_path:
        model_files.append(Path(state_dict_path))
    if not all(p.exists() for p in model_files):
        _build_models(prepare, artifact_paths, state_dict_path, console)
        built["model"] = True
    rows = _table_rows(spark, table_path)
    if rows is None or rows < prepare.rows:
        from leanscore.jobs.datagen import write_digits_table

        console.log(f"prepare: writing {prepare.rows:,} labelled rows to Delta {table_path}")
        write_digits_table(spark, table_path, prepare.rows, split="held_out")
        built["table"] = True
    return built


def _table_rows(spark: SparkSession, path: str) -> int | None:
    from delta.tables import DeltaTable

    if not Path(path).exists() or not DeltaTable.isDeltaTable(spark, path):
        return None
    return spark.read.format("delta").load(path).count()


def _build_models(
    prepare: PrepareConfig,
    artifact_paths: list[str],
    state_dict_path: str | None,
    console: Console,
) -> None:
    import copy

    import torch
    from leanscore.compression.build import compress_to_artifact
    from leanscore.compression.data import DIGITS_FEATURES
    from leanscore.compression.recipe import Recipe
    from leanscore.jobs.config import load_config
    from leanscore.jobs.datagen import FEATURE_COLUMN
    from leanscore.jobs.digits_model import train_digits_model

    console.log("prepare: training the digits MLP (the uncompressed PyTorch model)")
    model, train, evaluation = train_digits_model(
        augmented_rows=prepare.augmented_rows,
        epochs=prepare.epochs,
        seed=prepare.seed,
        console=console,
    )
    if state_dict_path:
        Path(state_dict_path).parent.mkdir(parents=True, exist_ok=True)
        # Saved before compression: pruning recipes change the model they are given.
        torch.save(model.state_dict(), state_dict_path)
        console.log(f"prepare: saved the PyTorch state_dict to {state_dict_path}")
    example = torch.from_numpy(evaluation.features[:8])
    for recipe_file, out in zip(prepare.recipes, artifact_paths, strict=True):
        recipe_path = Path(recipe_file)
        if not recipe_path.is_absolute() and not recipe_path.exists():
            recipe_path = CONF / "recipes" / recipe_path
        recipe = load_config(Recipe, recipe_path)
        artifact = compress_to_artifact(
            recipe,
            copy.deepcopy(model),  # recipes may prune the model they are given in place
            out,
            example_input=example,
            train=train,
            evaluation=evaluation,
            features={"array_column": FEATURE_COLUMN, "size": DIGITS_FEATURES},
            class_labels=[str(d) for d in range(10)],
            progress=lambda msg: console.log(f"  {msg}"),
        )
        console.log(f"prepare: wrote {artifact}")
