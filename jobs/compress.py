"""The compress job: a config names the model, the recipe (or candidate recipes to autotune)
and the data; it writes an artifact. Parsing and printing live here, the work in compression."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from leanscore.compression.artifact import Artifact, ImageSpec
from leanscore.compression.build import (
    calibrated_range,
    compress_to_artifact,
    data_lineage,
    write_result,
)
from leanscore.compression.data import LabelledData
from leanscore.compression.recipe import AccuracyGateError, Recipe
from leanscore.compression.sources import (
    DataSpec,
    DigitsSample,
    ModelSource,
    load_data,
    load_model,
    text_inputs,
)
from leanscore.jobs.config import ConfigError, load_config, packaged_config, read_yaml, validate
from leanscore.jobs.tables import TextTable, percent, print_table
from pydantic import BaseModel, ConfigDict, Field, model_validator
from rich.console import Console


def _default_train() -> DigitsSample:
    return DigitsSample(kind="digits", split="train", augmented_rows=40_000)


def _default_evaluation() -> DigitsSample:
    return DigitsSample(kind="digits", split="held_out")


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    train: DataSpec | None = Field(default_factory=_default_train)
    calibration: DataSpec | None = Field(
        default=None, description="rows for static quantization (default: a sample of train)"
    )
    evaluation: DataSpec = Field(
        default_factory=_default_evaluation, description="held-out rows the gate is decided on"
    )
    also_evaluate: dict[str, DataSpec] = Field(
        default_factory=dict, description="more held-out sets, reported but not gated on"
    )


class CompressConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    recipe: str | Recipe | None = Field(
        default=None,
        description="a recipe file (relative to this config), a shipped recipe's name, or inline",
    )
    candidates: list[str | Recipe] | None = Field(
        default=None,
        min_length=1,
        description="autotune: recipe files, shipped recipes' names or inline recipes",
    )
    model: ModelSource
    data: DataConfig = Field(default_factory=DataConfig)
    task: Literal["classification", "regression", "embedding"] = "classification"
    feature_column: str = "features"
    class_labels: list[str] | None = None
    image: ImageSpec | None = Field(
        default=None,
        description="an image model: how the data's image_column (PNG/JPEG bytes) or pixel "
        "array becomes its (channels, height, width) input; recorded in the manifest for "
        "scoring",
    )

    @model_validator(mode="before")
    @classmethod
    def _onnx_columns_feed_the_data(cls, raw):
        """An ONNX model as given names its feature columns once, under ``model``: table
        samples that name none read those; one that names others is refused. Such a model is
        not trained here, so ``data.train`` defaults to none."""
        model = raw.get("model") if isinstance(raw, dict) else None
        if not isinstance(model, dict) or model.get("kind") != "onnx":
            return raw
        layout = {k: model[k] for k in ("feature_columns", "feature_column") if model.get(k)}
        if not layout and model.get("outputs") is None:
            return raw
        data = dict(raw.get("data") or {})
        data.setdefault("train", None)

        def fill(spec, where: str):
            if not isinstance(spec, dict) or spec.get("kind") != "table" or not layout:
                return spec
            named = {k: spec[k] for k in ("feature_columns", "feature_column") if spec.get(k)}
            if named and named != layout:
                raise ValueError(
                    f"{where} reads {named} but model declares {layout}: drop them from {where} "
                    "(it reads the model's columns)"
                )
            return {**spec, **layout}

        for role in ("train", "calibration", "evaluation"):
            if role in data:
                data[role] = fill(data[role], f"data.{role}")
        if isinstance(data.get("also_evaluate"), dict):
            data["also_evaluate"] = {
                k: fill(v, f"data.also_evaluate.{k}") for k, v in data["also_evaluate"].items()
            }
        return {**raw, "data": data}

    @model_validator(mode="after")
    def _recipe_or_candidates(self) -> CompressConfig:
        if (self.recipe is None) == (self.candidates is None):
            raise ValueError("recipe: give exactly one of 'recipe' or 'candidates' (autotune)")
        return self

    @model_validator(mode="after")
    def _text_models_classify_or_embed(self) -> CompressConfig:
        if self.model.kind == "huggingface" and self.task == "regression":
            raise ValueError(
                "task: a Hugging Face model (model.kind: huggingface) is a sequence classifier "
                "(task: classification) or a sentence encoder (task: embedding), not 'regression'"
            )
        return self

    @model_validator(mode="after")
    def _images_need_an_image_spec(self) -> CompressConfig:
        data = self.data
        specs = {"train": data.train, "calibration": data.calibration}
        specs |= {"evaluation": data.evaluation}
        specs |= {f"also_evaluate.{k}": v for k, v in data.also_evaluate.items()}
        for where, spec in specs.items():
            if getattr(spec, "image_column", None) is not None and self.image is None:
                raise ValueError(
                    f"data.{where}.image_column needs 'image' (channels, height, width, mean, "
                    "std, resize) to decode the images"
                )
        return self


def load_recipe(recipe: str | Recipe, config_dir: Path) -> Recipe:
    if isinstance(recipe, Recipe):
        return recipe
    path = recipe_path(recipe, config_dir)
    return validate(Recipe, read_yaml(path), source=str(path))


def shipped_recipes() -> list[str]:
    """The names of the recipes that ship with leanscore (``conf/recipes/NAME.yaml``)."""
    return sorted(p.stem for p in packaged_config("recipes").glob("*.yaml"))


def recipe_path(recipe: str, config_dir: Path) -> Path:
    """Where a config's ``recipe: X`` lives: a file at X (relative to the config) wins; else a
    shipped recipe named X (``minilm-dynamic-int8``, also written ``recipes/NAME.yaml`` or
    ``conf/recipes/NAME.yaml``), so a config anywhere can use the packaged recipes."""
    given = Path(recipe)
    path = given if given.is_absolute() else config_dir / given
    if path.is_file():
        return path
    folders = given.parts[:-1]
    if folders in ((), ("recipes",), ("conf", "recipes")):
        name = given.name.removesuffix(".yaml").removesuffix(".yml")
        shipped = packaged_config("recipes") / f"{name}.yaml"
        if shipped.is_file():
            return shipped
    raise ConfigError(
        f"recipe {recipe!r}: no file {path}, and no shipped recipe of that name; name a file "
        f"(relative to the config) or one of: {', '.join(shipped_recipes())}"
    )


def _features(config: CompressConfig, n_features: int) -> dict:
    spec = config.data.evaluation
    if config.image is not None:
        image_column = getattr(spec, "image_column", None)
        layout = (
            {"image_column": image_column}
            if image_column
            else {"array_column": getattr(spec, "feature_column", None) or config.feature_column}
        )
        return {**layout, "image": config.image.model_dump(), "size": config.image.size}
    if getattr(spec, "feature_columns", None):
        return {"columns": list(spec.feature_columns), "size": n_features}
    column = getattr(spec, "feature_column", None) or config.feature_column
    return {"array_column": column, "size": n_features}


def run_compress(
    config: CompressConfig, out: str | Path, *, config_dir: Path, console: Console | None = None
) -> Artifact:
    """Load the model and data, run the recipe (or autotune the candidates), write the
    artifact and print its numbers. Raises AccuracyGateError (nothing written) over budget."""
    console = console or Console(width=160)
    say = console.log
    recipes = (
        [load_recipe(config.recipe, config_dir)]
        if config.recipe is not None
        else [load_recipe(r, config_dir) for r in config.candidates]
    )
    io = _as_given(config, config_dir)  # before any data is read: a bad mapping fails now
    say("loading data")
    sets = _load_datasets(config, config_dir)
    model, example, source = load_model(
        config.model, base_dir=config_dir, train=sets.train, progress=say, task=config.task
    )
    text = text_inputs(config.model, base_dir=config_dir, task=config.task)  # None: not text
    sets, class_labels, scoring = _fit_to_model(config, sets, model, text, io)
    common = dict(
        example_input=example,
        train=sets.train,
        evaluation=sets.evaluation,
        calibration=sets.calibration,
        task=config.task,
        also_evaluate=sets.also or None,
        progress=say,
        recipe_family=_recipe_family(config, text, io),
        exporter=text.exporter() if text is not None else None,
    )
    if text is not None:
        features = text.features(getattr(config.data.evaluation, "text_column", None) or "text")
    else:
        features = _features(config, int(np.prod(sets.evaluation.features.shape[1:])))
    named = dict(features=features, class_labels=class_labels, model_source=source)
    if config.candidates is not None:
        return autotune_to_artifact(
            recipes, model, out, common=common, console=console, scoring=scoring, **named
        )
    artifact = compress_to_artifact(recipes[0], model, out, **named, **scoring, **common)
    print_table(console, steps_table(artifact.manifest.metrics, title=recipes[0].name))
    console.print(accuracy_line(artifact.manifest.metrics, sets.evaluation))
    return artifact


@dataclass(frozen=True)
class Datasets:
    """The labelled rows of one compression: trained on, gated on, calibrated on, reported."""

    train: LabelledData | None
    evaluation: LabelledData
    calibration: LabelledData | None
    also: dict[str, LabelledData]

    def named(self) -> dict[str, LabelledData]:
        """Each set present, under its key in the config's ``data``, in the config's order."""
        named = {
            "train": self.train,
            "evaluation": self.evaluation,
            "calibration": self.calibration,
            **{f"also_evaluate.{k}": v for k, v in self.also.items()},
        }
        return {key: data for key, data in named.items() if data is not None}

    def map(self, fn: Callable[[LabelledData, str], LabelledData]) -> Datasets:
        """Each present set replaced by ``fn(set, its key)``."""
        new = {key: fn(data, key) for key, data in self.named().items()}
        also = {k: new[f"also_evaluate.{k}"] for k in self.also}
        return Datasets(new.get("train"), new["evaluation"], new.get("calibration"), also)


def _load_datasets(config: CompressConfig, config_dir: Path) -> Datasets:
    data = config.data
    specs = [data.train, data.evaluation, data.calibration, *data.also_evaluate.values()]
    if any(getattr(spec, "kind", None) == "table" for spec in specs):
        from leanscore.jobs.runtime.spark import get_spark, mentions_s3a

        # the session the table samples are read with
        get_spark("leanscore-compress", s3a=mentions_s3a(config))
    read = dict(base_dir=config_dir, image=config.image)
    return Datasets(
        train=load_data(data.train, **read) if data.train else None,
        evaluation=load_data(data.evaluation, **read),
        calibration=load_data(data.calibration, **read) if data.calibration else None,
        also={k: load_data(v, **read) for k, v in data.also_evaluate.items()},
    )


def _fit_to_model(
    config: CompressConfig, sets: Datasets, model, text, io
) -> tuple[Datasets, list[str] | None, dict]:
    """(the rows as the model reads them, its class labels, the manifest fields its scoring
    family needs: family, result_output, extra_files). A text model tokenizes the rows; an
    ONNX model as given checks their width and maps label values to its class columns."""
    scoring: dict = {}
    if text is not None:
        sets = sets.map(lambda data, key: text.attach(data, name=key))
        scoring = {"family": text.family, "extra_files": text.files()}
    class_labels = config.class_labels or (text.class_labels if text is not None else None)
    if class_labels is None and config.model.kind.startswith("builtin-digits"):
        class_labels = [str(d) for d in range(10)]
    if io is not None:
        _check_width(io, sets)
        class_labels = class_labels or io.class_labels
        sets = _labels_as_classes(class_labels, sets)
        if io.label_output is not None:
            from leanscore.compression.sources.onnx_model import check_label_output

            check_label_output(model, io, sets.evaluation.features, class_labels)
        scoring = {"result_output": io.result_output, "family": AS_GIVEN_FAMILY}
    if config.image is not None:
        scoring["family"] = "image"
    return sets, class_labels, scoring


def _recipe_family(config: CompressConfig, text, io) -> str:
    """The family the recipe's steps are checked against (``compression.steps.base``)."""
    if text is not None:
        return text.recipe_family
    if io is not None:
        return AS_GIVEN_FAMILY
    return "image" if config.image is not None else "tabular"


def accuracy_line(metrics: dict, evaluation) -> str:
    """The held-out accuracy with its 95% interval next to chance (the share of the most
    frequent class, what always guessing it scores); for embeddings, the cosine to the model
    as given."""
    gate, final = metrics["gate"], metrics["final"]
    if "cosine_p1" in gate:
        fid = final.get("fidelity") or {}
        return (
            f"held-out fidelity on {gate['rows']:,} texts: mean cosine to the model as given "
            f"{fid['cosine_mean']:.5f} (budget {gate['min_fidelity']}), 1st percentile "
            f"{fid['cosine_p1']:.5f} (budget {gate['min_cosine_p1']}), min {fid['cosine_min']:.5f}"
        )
    if final.get("accuracy") is None or gate.get("accuracy_interval") is None:
        return "held-out accuracy: n/a (no labels)"
    import numpy as np

    labels = evaluation.labels
    chance = float(np.bincount(labels).max() / len(labels))
    low, high = gate["accuracy_interval"]
    drop = gate.get("accuracy_drop_points")
    return (
        f"held-out accuracy {100 * final['accuracy']:.2f}% (95% interval {100 * low:.2f}-"
        f"{100 * high:.2f}%, {gate['rows']:,} rows; chance {100 * chance:.2f}%), "
        f"baseline {100 * metrics['baseline']['accuracy']:.2f}%, drop {drop} points "
        f"(budget {gate['max_accuracy_drop']})"
    )


AS_GIVEN_FAMILY = "onnx_model"  # leanscore.udfs.families.onnx_model


def _as_given(config: CompressConfig, config_dir: Path):
    """The checked input/output mapping of an ONNX model as given; None for other models."""
    from leanscore.compression.sources import OnnxModel

    spec = config.model
    if not isinstance(spec, OnnxModel) or not spec.as_given:
        return None
    from leanscore.compression.sources.onnx_model import resolve_io

    path = Path(spec.path) if Path(spec.path).is_absolute() else config_dir / spec.path
    if not path.is_file():
        raise FileNotFoundError(f"model.path: ONNX file {path} does not exist")
    return resolve_io(path.read_bytes(), spec, task=config.task, path=str(path))


def _check_width(io, sets: Datasets) -> None:
    """Every sample must have as many features as the graph's input takes."""
    if io.width is None:
        return
    for key, data in sets.named().items():
        if data.features.shape[1] != io.width:
            raise ValueError(
                f"data.{key} has {data.features.shape[1]} features per row but input {io.input!r} "
                f"of model.path takes {io.width}; read the model's feature columns (a table "
                "sample with model.feature_columns)"
            )


def _labels_as_classes(class_labels, sets: Datasets) -> Datasets:
    """Label values that are the model's classes (2, 5, 7) as the probability columns they
    name (0, 1, 2); labels already 0..k-1 stay as they are."""
    from leanscore.compression.sources.onnx_model import label_indices

    if not class_labels or class_labels == [str(i) for i in range(len(class_labels))]:
        return sets

    def mapped(data, key):
        if data.labels is None:
            return data
        labels = label_indices(data.labels, class_labels, where=f"data.{key}")
        return type(data)(data.features, labels, data.source)

    return sets.map(mapped)


def autotune_to_artifact(
    recipes: list[Recipe],
    model,
    out: str | Path,
    *,
    common: dict,
    features: dict,
    class_labels: list[str] | None,
    model_source: dict | None,
    console: Console,
    scoring: dict | None = None,
) -> Artifact:
    """Run every candidate (``common``: ``compression.autotune.autotune``'s data keywords),
    print and save the candidates table next to ``out``, and write the artifact of the cheapest
    one within budget; AccuracyGateError (nothing written) when none is. ``scoring``:
    ``write_result``'s manifest fields a family needs (family, result_output, extra_files)."""
    scoring = scoring or {}
    from leanscore.compression.autotune import autotune, write_table

    result = autotune(recipes, model, result_output=scoring.get("result_output"), **common)
    json_path, csv_path = write_table(result.table, Path(out).resolve())
    print_table(console, candidates_table(result.table))
    console.log(f"candidates table: {json_path} and {csv_path}")
    if result.best is None:
        raise AccuracyGateError(
            f"autotune: none of the {len(recipes)} candidate recipes stays within its budget; "
            f"no artifact was written. See {json_path}."
        )
    chosen = result.best
    artifact = write_result(
        chosen,
        out,
        name=chosen.recipe.name,
        features=features,
        task=common["task"],
        class_labels=class_labels,
        input_range=calibrated_range(
            calibration=common["calibration"],
            train=common["train"],
            evaluation=common["evaluation"],
        ),
        data=data_lineage(
            train=common["train"],
            evaluation=common["evaluation"],
            calibration=common["calibration"],
            also_evaluate=common["also_evaluate"],
            model_source=model_source,
        ),
        extra_metrics={
            "autotune": {
                "chosen": chosen.recipe.name,
                "rule": "highest single-thread rows/s (rows/s per core) among candidates "
                "within budget",
                "candidates": result.table,
            }
        },
        **scoring,
    )
    print_table(
        console, steps_table(artifact.manifest.metrics, title=f"chosen: {chosen.recipe.name}")
    )
    return artifact


def _distinct_note(n) -> list[str]:
    return [f"Accuracy and agreement measured on {n:,} distinct held-out examples."] if n else []


def steps_table(metrics: dict, *, title: str) -> TextTable:
    """Each step's size, speed and quality against the baseline, printed complete by
    ``print_table``; says how many distinct examples the quality figures count."""
    columns = [
        "stage",
        "params",
        "onnx bytes",
        "zipped",
        "rows/s 1 thread",
        "speed-up",
        "smaller",
        "accuracy",
        "agreement",
        "note",
    ]
    base = metrics["baseline"]
    stages = [("baseline", base, "")] + [
        (f"{s['index']} {s['step']}", s, s.get("effect") or s.get("mode") or s.get("method") or "")
        for s in metrics["steps"]
    ]
    rows = []
    for stage, m, note in stages:
        vs = m.get("vs_baseline") or {}
        fid = m.get("fidelity") or {}
        rows.append(
            [
                stage,
                f"{m['params']:,}",
                f"{m['onnx_bytes']:,}",
                f"{m['zipped_bytes']:,}",
                f"{m['rows_per_s_1thread']:,.0f}",
                f"{vs.get('speedup_1thread', 1.0):.2f}x",
                f"{vs.get('onnx_bytes_smaller', 1.0):.1f}x",
                percent(m.get("accuracy")),
                percent(fid.get("agreement", fid.get("cosine_mean"))),
                str(note),
            ]
        )
    return TextTable(
        title,
        columns,
        rows,
        left={"stage", "note"},
        notes=_distinct_note(base.get("distinct_examples")),
    )


def candidates_table(rows: list[dict]) -> TextTable:
    columns = [
        "recipe",
        "rank",
        "passed",
        "rows/s per core",
        "speed-up",
        "onnx bytes",
        "zipped",
        "accuracy [95%]",
        "drop (points)",
        "agreement",
    ]
    cells = []
    for r in rows:
        interval = r.get("accuracy_interval")
        accuracy = percent(r["accuracy"]) + (
            "" if not interval else f" [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"
        )
        cells.append(
            [
                r["recipe"],
                str(r["rank"]) + (" *" if r["chosen"] else ""),
                "yes" if r["passed"] else "no",
                "n/a" if r["rows_per_s_per_core"] is None else f"{r['rows_per_s_per_core']:,.0f}",
                "n/a" if r["speedup_1thread"] is None else f"{r['speedup_1thread']:.2f}x",
                "n/a" if r["onnx_bytes"] is None else f"{r['onnx_bytes']:,}",
                "n/a" if r["zipped_bytes"] is None else f"{r['zipped_bytes']:,}",
                accuracy,
                "n/a" if r["accuracy_drop_points"] is None else f"{r['accuracy_drop_points']:.2f}",
                percent(r["fidelity"]),
            ]
        )
    n = next((r.get("distinct_examples") for r in rows if r.get("distinct_examples")), None)
    return TextTable(
        "autotune candidates (cheapest within budget first; * chosen)",
        columns,
        cells,
        left={"recipe", "passed"},
        notes=_distinct_note(n),
    )


def register_artifact(artifact: Artifact, *, name: str, alias: str | None = None):
    """Log ``artifact`` to MLflow and register it as a new version of ``name`` (see
    ``leanscore.compression.mlflow_log``); return the registered version."""
    from leanscore.compression.mlflow_log import log_and_register

    return log_and_register(artifact, name=name, alias=alias)


__all__ = ["CompressConfig", "load_config", "register_artifact", "run_compress"]
