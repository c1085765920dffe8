"""The images workload's ``prepare``: Fashion-MNIST tables, the VGG baseline, its artifacts.

What already exists is kept, in this order:

1. ``fashion_train`` / ``fashion_test`` Delta tables (PNG bytes, label, row id; the published
   split, the training split's seeded hold-out marked ``part = 'holdout'``);
2. the baseline, trained on the training split's 'fit' part and cached as a state_dict (the
   PyTorch model the bench times in ``predict_batch_udf``);
3. the artifacts, each through ``leanscore compress`` (``jobs.compress.run_compress``, what the
   CLI runs) from that state_dict: the model reads the same tables through a compress config,
   fine-tunes on 'fit' rows, calibrates and is gated on 'holdout' rows; an entry of
   ``recipes`` may be ``{candidates: [...]}``, which autotune runs (the fastest within budget);
4. the scoring table: the 10,000 test images repeated to ``rows`` rows.

The test split is read by nothing here but the scoring table: no recipe, gate or autotune sees
it, so the bench's accuracy on it is the final, unbiased one.
"""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import SparkSession
from rich.console import Console

IMAGE = {"channels": 1, "height": 28, "width": 28}
FACTORY = "leanscore.bench.fashion_model:fashion_vgg"


def image_spec() -> dict:
    from leanscore.bench.fashion_model import MEAN, STD

    return {**IMAGE, "mean": [MEAN], "std": [STD], "convert": False}


def compress_config(
    recipe, *, tables: dict[str, str], checkpoint: str, fit_rows: int, holdout_rows: int
) -> dict:
    """The compress config (as ``leanscore compress`` reads it) of one recipe, or of autotune's
    ``{candidates: [...]}``, on the Fashion-MNIST tables and the cached baseline."""
    sample = {"kind": "table", "path": tables["train"], "image_column": "image"}
    sample["label_column"] = "label"
    chosen = {"candidates": list(recipe)} if isinstance(recipe, list) else {"recipe": recipe}
    return {
        **chosen,
        "model": {
            "kind": "torch",
            "factory": FACTORY,
            "checkpoint": checkpoint,
            "input_shape": [1, 28, 28],
        },
        "image": image_spec(),
        "class_labels": class_labels(),
        "data": {
            "train": {**sample, "filter": "part = 'fit'", "limit": fit_rows},
            "calibration": {**sample, "filter": "part = 'holdout'", "limit": holdout_rows},
            "evaluation": {**sample, "filter": "part = 'holdout'", "limit": holdout_rows},
        },
    }


def class_labels() -> list[str]:
    from leanscore.bench.fashion_data import CLASSES

    return list(CLASSES)


def prepare_images(
    spark: SparkSession,
    prepare,
    *,
    table_path: str,
    artifact_paths: list[str],
    state_dict_path: str | None,
    console: Console,
    table_rows,
) -> dict[str, bool]:
    """Build whatever of (tables, baseline, artifacts, scoring table) is missing.
    ``table_rows``: rows of a Delta table, None when there is none (``prepare.delta_rows``)."""
    if state_dict_path is None:
        raise ValueError("the images workload needs torch_model.state_dict (the cached baseline)")
    built = {"model": False, "table": False}
    tables_dir = Path(table_path).parent
    tables = {s: str(tables_dir / f"fashion_{s}") for s in ("train", "test")}
    if any(table_rows(spark, p) is None for p in tables.values()):
        from leanscore.bench.fashion_data import write_training_tables

        console.log(f"prepare: writing the Fashion-MNIST train/test Delta tables to {tables_dir}")
        write_training_tables(spark, tables_dir, holdout=prepare.evaluation_rows, seed=prepare.seed)
    missing = [p for p in artifact_paths if not (Path(p) / "manifest.json").exists()]
    if not Path(state_dict_path).is_file():
        train_baseline(prepare, state_dict_path, console)
        missing = list(artifact_paths)  # artifacts are always made from the cached baseline
    for recipe, out in zip(prepare.recipes, artifact_paths, strict=True):
        if out in missing:
            compress_one(recipe, out, tables=tables, checkpoint=state_dict_path, prepare=prepare)
            built["model"] = True
    rows = table_rows(spark, table_path)
    if rows is None or rows < prepare.rows:
        from leanscore.bench.fashion_data import write_scoring_table

        console.log(f"prepare: writing {prepare.rows:,} image rows to Delta {table_path}")
        write_scoring_table(spark, tables["test"], table_path, prepare.rows)
        built["table"] = True
    return built


def train_baseline(prepare, state_dict_path: str, console: Console) -> None:
    import torch
    from leanscore.bench.fashion_model import train_fashion_model

    console.log(
        f"prepare: training the Fashion-MNIST VGG for {prepare.epochs} epochs (the uncompressed "
        "PyTorch model)"
    )
    model, _, held_out = train_fashion_model(
        epochs=prepare.epochs,
        fit_rows=prepare.train_rows,
        holdout=prepare.evaluation_rows,
        seed=prepare.seed,
        console=console,
    )
    Path(state_dict_path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), state_dict_path)
    console.log(f"prepare: saved the PyTorch state_dict to {state_dict_path}")


def compress_one(recipe, out: str, *, tables, checkpoint: str, prepare) -> None:
    """One artifact through ``leanscore compress``'s own function and config."""
    from leanscore.jobs.compress import CompressConfig, run_compress
    from leanscore.jobs.config import packaged_config, validate

    candidates = getattr(recipe, "candidates", None)  # prepare.AutotuneCandidates
    entry = list(candidates) if candidates is not None else recipe
    raw = compress_config(
        entry,
        tables=tables,
        checkpoint=checkpoint,
        fit_rows=prepare.recipe_train_rows,
        holdout_rows=prepare.evaluation_rows,
    )
    config = validate(CompressConfig, raw, source=f"the images workload's recipe {entry}")
    run_compress(config, out, config_dir=packaged_config("recipes"))
