"""Make what the benchmark measures when it is absent, so ``make bench`` runs on a clean clone.

Two workloads. ``digits`` (the reader-bound case): the demo's MLP trained on scikit-learn's real
digits (``demo.digits_model.train_digits_model``) and a table of augmented held-out digits. ``wide``
(the model-bound case): a 256-2048-1024-512-10 MLP (or the ``features`` and ``hidden`` given)
trained on generated rows (``wide_model.train_wide_model``, ``bench.wide_data``) and a table of rows
from a stream no recipe sees. Either way the trained model's state_dict is saved for the PyTorch
baseline and every artifact is written from that same model: an entry of ``recipes`` is one recipe
file, or ``{candidates: [...]}``, which autotune runs, keeping the cheapest within budget
(``compress.autotune_to_artifact``; the candidates table lands next to the artifact). What already
exists is kept: the model and its artifacts are rebuilt together (never one without the others, so
the baseline is always the model the artifacts were made from), the table only when it is missing or
too small.

"Exists" means built from what the config names now: every artifact carries a build key
(``build_basis``: its recipe files' text, how the source model is trained, the data's version
and leanscore's version) and the hash of the state_dict it was compressed from. A changed
recipe, training setting, data or leanscore release, or a replaced state_dict, rebuilds the
model and its artifacts: a report never measures old artifacts under current names.
"""

from __future__ import annotations

import hashlib
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Literal

from leanscore.jobs.config import packaged_config
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pyspark.sql import SparkSession
from rich.console import Console

CONF = packaged_config(".")


class AutotuneCandidates(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    candidates: list[str] = Field(
        min_length=1, description="recipe files autotune runs; the cheapest within budget wins"
    )


class PrepareConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    workload: Literal["digits", "wide", "images"] = Field(
        default="digits",
        description="digits: the demo MLP on augmented real digits (reader-bound); wide: the "
        "256-2048-1024-512-10 MLP on generated rows (model-bound); images: a VGG-style CNN on "
        "Fashion-MNIST PNGs (jobs.bench.images_prepare)",
    )
    rows: int = Field(gt=0, description="rows of the labelled input table to generate")
    recipes: list[str | AutotuneCandidates] = Field(
        min_length=1,
        description="one entry per artifact, in the order of 'artifacts': a recipe file, or "
        "{candidates: [recipe files]} for autotune",
    )
    epochs: int = Field(default=8, gt=0)
    augmented_rows: int = Field(
        default=40_000, gt=0, description="digits: augmented training copies"
    )
    train_rows: int = Field(default=32_768, gt=0, description="wide: generated training rows")
    evaluation_rows: int = Field(
        default=5_000,
        gt=0,
        description="wide: generated rows the recipes' gate decides on; images: the training "
        "split's hold-out (calibration, gate, autotune)",
    )
    recipe_train_rows: int = Field(
        default=20_000, gt=0, description="images: 'fit' rows the recipes fine-tune on"
    )
    features: int | None = Field(
        default=None, gt=0, description="wide: numeric features per row (default 256)"
    )
    hidden: list[Annotated[int, Field(gt=0)]] | None = Field(
        default=None,
        min_length=1,
        description="wide: the MLP's hidden layer widths (default 2048, 1024, 512); the bench "
        "config's torch_model.factory must build the same network",
    )
    seed: int = 0

    @model_validator(mode="after")
    def _wide_shape_only_for_wide(self) -> PrepareConfig:
        if self.workload != "wide" and (self.features is not None or self.hidden is not None):
            raise ValueError(
                f"prepare.features and prepare.hidden shape the wide workload's MLP; "
                f"workload {self.workload!r} takes neither: remove them"
            )
        return self


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
    if prepare.workload == "images":
        from leanscore.bench.images_prepare import prepare_images

        return prepare_images(
            spark,
            prepare,
            table_path=table_path,
            artifact_paths=artifact_paths,
            state_dict_path=state_dict_path,
            console=console,
            table_rows=delta_rows,
        )
    built = {"model": False, "table": False}
    stale = stale_artifacts(prepare, artifact_paths, state_dict_path)
    if stale:
        console.log("prepare: rebuilding the model and its artifacts: " + "; ".join(stale))
        _build_models(prepare, artifact_paths, state_dict_path, console)
        built["model"] = True
    rows = delta_rows(spark, table_path)
    if rows is None or rows < prepare.rows:
        from leanscore.bench.demo.datagen import write_digits_table, write_wide_table

        console.log(f"prepare: writing {prepare.rows:,} labelled rows to Delta {table_path}")
        if prepare.workload == "wide":
            write_wide_table(
                spark, table_path, prepare.rows, seed=prepare.seed, features=prepare.features
            )
        else:
            write_digits_table(spark, table_path, prepare.rows, split="held_out")
        built["table"] = True
    return built


def _version_of(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _recipe_texts(entry: str | AutotuneCandidates) -> list[str]:
    files = entry.candidates if isinstance(entry, AutotuneCandidates) else [entry]
    return [_recipe_path(f).read_text() for f in files]


def build_basis(prepare: PrepareConfig, entry: str | AutotuneCandidates) -> dict:
    """What one artifact is built from, short of the trained weights: its recipe files' text,
    how the source model is trained, the version of the data it is trained and evaluated on
    (generated from scikit-learn's bundled digits or a seeded stream) and leanscore's
    version."""
    return {
        "recipes": [hashlib.sha256(t.encode()).hexdigest() for t in _recipe_texts(entry)],
        "training": prepare.model_dump(exclude={"rows", "recipes"}, exclude_none=True),
        "data_version": {
            "workload": prepare.workload,
            "seed": prepare.seed,
            "scikit-learn": _version_of("scikit-learn"),
        },
        "leanscore": _version_of("leanscore"),
    }


def build_key(basis: dict) -> str:
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:16]


def _file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def stale_artifacts(
    prepare: PrepareConfig, artifact_paths: list[str], state_dict_path: str | None
) -> list[str]:
    """Why the model and artifacts must be (re)built; empty when every artifact's recorded
    build key is the one the config gives now, and each was compressed from the state_dict on
    disk."""
    if state_dict_path and not Path(state_dict_path).is_file():
        return [f"no state_dict at {state_dict_path}"]
    source = _file_sha256(state_dict_path) if state_dict_path else None
    why = []
    for entry, path in zip(prepare.recipes, artifact_paths, strict=True):
        manifest = Path(path) / "manifest.json"
        if not manifest.is_file():
            why.append(f"{path}: no artifact")
            continue
        built = (json.loads(manifest.read_text()).get("data") or {}).get("model_source") or {}
        if built.get("build_key") != build_key(build_basis(prepare, entry)):
            why.append(f"{path}: built from other recipes, training, data or leanscore")
        elif source is not None and built.get("source_model_sha256") != source:
            why.append(f"{path}: compressed from another state_dict than {state_dict_path}")
    return why


def delta_rows(spark: SparkSession, path: str | Path) -> int | None:
    """Rows of the Delta table at ``path``; None where there is none (a table a bench wrote
    earlier is kept when it already holds the rows it needs)."""
    from delta.tables import DeltaTable

    path = str(path)
    if not Path(path).exists() or not DeltaTable.isDeltaTable(spark, path):
        return None
    return spark.read.format("delta").load(path).count()


def _trained_model(prepare: PrepareConfig, console: Console):
    """(model, train, evaluation, feature spec, class labels) of the configured workload."""
    from leanscore.bench.demo.datagen import FEATURE_COLUMN

    if prepare.workload == "wide":
        from leanscore.bench.wide_data import WIDE_CLASSES, WIDE_FEATURES
        from leanscore.bench.wide_model import train_wide_model

        console.log("prepare: training the wide MLP (the uncompressed PyTorch model)")
        size = prepare.features or WIDE_FEATURES
        model, train, evaluation = train_wide_model(
            train_rows=prepare.train_rows,
            evaluation_rows=prepare.evaluation_rows,
            epochs=prepare.epochs,
            seed=prepare.seed,
            features=size,
            hidden=prepare.hidden,
            console=console,
        )
        classes = WIDE_CLASSES
    else:
        from leanscore.bench.demo.digits_model import train_digits_model
        from leanscore.compression.data import DIGITS_CLASSES, DIGITS_FEATURES

        console.log("prepare: training the digits MLP (the uncompressed PyTorch model)")
        model, train, evaluation = train_digits_model(
            augmented_rows=prepare.augmented_rows,
            epochs=prepare.epochs,
            seed=prepare.seed,
            console=console,
        )
        size, classes = DIGITS_FEATURES, DIGITS_CLASSES
    features = {"array_column": FEATURE_COLUMN, "size": size}
    return model, train, evaluation, features, [str(c) for c in range(classes)]


def _recipe_path(recipe_file: str) -> Path:
    recipe_path = Path(recipe_file)
    if not recipe_path.is_absolute() and not recipe_path.exists():
        recipe_path = CONF / "recipes" / recipe_path
    return recipe_path


def _recipe(recipe_file: str):
    from leanscore.compression.recipe import Recipe
    from leanscore.jobs.config import load_config

    return load_config(Recipe, _recipe_path(recipe_file))


def _build_models(
    prepare: PrepareConfig,
    artifact_paths: list[str],
    state_dict_path: str | None,
    console: Console,
) -> None:
    import copy
    import io

    import torch
    from leanscore.compression.build import compress_to_artifact
    from leanscore.jobs.compress import autotune_to_artifact

    model, train, evaluation, features, class_labels = _trained_model(prepare, console)
    if state_dict_path:
        Path(state_dict_path).parent.mkdir(parents=True, exist_ok=True)
        # Saved before compression: pruning recipes change the model they are given.
        torch.save(model.state_dict(), state_dict_path)
        console.log(f"prepare: saved the PyTorch state_dict to {state_dict_path}")
        source_sha = _file_sha256(state_dict_path)
    else:
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        source_sha = hashlib.sha256(buffer.getvalue()).hexdigest()
    example = torch.from_numpy(evaluation.features[:8])
    progress = lambda msg: console.log(f"  {msg}")  # noqa: E731
    for entry, out in zip(prepare.recipes, artifact_paths, strict=True):
        basis = build_basis(prepare, entry)
        source = {
            "built_by": "leanscore bench prepare",
            "build_key": build_key(basis),
            "build_basis": basis,
            "source_model_sha256": source_sha,
        }
        if isinstance(entry, AutotuneCandidates):
            console.log(f"prepare: autotune over {len(entry.candidates)} candidates for {out}")
            artifact = autotune_to_artifact(
                [_recipe(r) for r in entry.candidates],
                model,  # autotune copies the model for each candidate
                out,
                common={
                    "example_input": example,
                    "train": train,
                    "evaluation": evaluation,
                    "calibration": None,
                    "task": "classification",
                    "also_evaluate": None,
                    "progress": progress,
                },
                features=features,
                class_labels=class_labels,
                model_source=source,
                console=console,
            )
        else:
            artifact = compress_to_artifact(
                _recipe(entry),
                copy.deepcopy(model),  # recipes may prune the model they are given in place
                out,
                example_input=example,
                train=train,
                evaluation=evaluation,
                features=features,
                class_labels=class_labels,
                progress=progress,
                model_source=source,
            )
        console.log(f"prepare: wrote {artifact}")
