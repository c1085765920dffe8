"""The compress job: a config names the model, the recipe and the data; it writes an artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from compression.artifact import Artifact
from compression.build import compress_to_artifact
from compression.data import DIGITS_FEATURES
from compression.recipe import Recipe
from jobs.config import load_config, read_yaml, validate  # noqa: F401


class BuiltinDigitsModel(BaseModel):
    """The reference MLP, trained here on scikit-learn's real digits (no checkpoint needed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["builtin-digits-mlp"]
    epochs: int = Field(default=8, ge=1)
    seed: int = 0


class CompressConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    recipe: str | Recipe = Field(description="a recipe file (relative to this config) or inline")
    model: BuiltinDigitsModel
    feature_column: str = "features"


def load_recipe(recipe: str | Recipe, config_dir: Path) -> Recipe:
    if isinstance(recipe, Recipe):
        return recipe
    path = Path(recipe)
    path = path if path.is_absolute() else config_dir / path
    return validate(Recipe, read_yaml(path), source=str(path))


def run_compress(config: CompressConfig, out: str | Path, *, config_dir: Path) -> Artifact:
    from jobs.demo import train_digits_model

    recipe = load_recipe(config.recipe, config_dir)
    model, train, evaluation = train_digits_model(
        epochs=config.model.epochs, seed=config.model.seed
    )
    return compress_to_artifact(
        recipe,
        model,
        out,
        example_input=torch.from_numpy(evaluation.features[:8]),
        train=train,
        evaluation=evaluation,
        features={"array_column": config.feature_column, "size": DIGITS_FEATURES},
        class_labels=[str(d) for d in range(10)],
    )


__all__ = ["CompressConfig", "load_config", "run_compress"]
