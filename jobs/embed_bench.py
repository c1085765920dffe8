"""Embedding bench: the MiniLM variants and the PyTorch model, one Spark run, same table.

    python -m jobs.embed_bench --config conf/bench-embed.yaml            # prepare + measure
    python -m jobs.embed_bench --config conf/bench-embed.yaml --prepare-only

``prepare`` writes the docstring table (Delta) and builds each recipe's artifact with the text
pipeline (``compression.text_compress``), gated on fidelity. ``measure`` embeds the table with
every variant into Spark's noop sink, then once more collecting the embeddings for fidelity
against the fp32 ONNX model; the PyTorch model runs in ``predict_batch_udf``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from pydantic import BaseModel, ConfigDict, Field

from compression.text_fidelity import embedding_fidelity


class BenchEmbedConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    out: str = "demo-output/embed"
    rows: int = Field(default=2000, gt=10, description="rows of the docstring table to embed")
    eval_rows: int = Field(default=400, gt=10, description="held-out sentences for the gate")
    train_rows: int = Field(default=1600, gt=10, description="distillation/calibration sentences")
    recipes: list[str] = Field(min_length=1, description="recipe YAMLs; the first is fp32")
    max_length: int = Field(default=128, gt=0)
    sub_batch_rows: int = Field(default=32, gt=0)
    arrow_batch_rows: int = Field(default=1000, gt=0)
    torch_batch_size: int = Field(default=32, gt=0)
    include_torch: bool = True
    include_unsorted_fp32: bool = True


def _paths(config: BenchEmbedConfig) -> dict[str, Path]:
    root = Path(config.out)
    return {"table": root / "tables" / "docstrings", "artifacts": root / "artifacts"}


def prepare(spark, config: BenchEmbedConfig, *, progress=print) -> dict[str, str]:
    """Write the text table (if absent) and every recipe's artifact; return name -> path."""
    from delta.tables import DeltaTable

    from compression.text_build import write_text_artifact
    from compression.text_compress import TextGateError, TextRecipe, compress_text
    from compression.text_data import stdlib_sentences, text_table
    from jobs.config import load_config

    paths = _paths(config)
    table = str(paths["table"])
    if not DeltaTable.isDeltaTable(spark, table):
        spark.createDataFrame(text_table(config.rows, seed=0)).write.format("delta").save(table)
    version = DeltaTable.forPath(spark, table).history(1).first()["version"]
    # Distinct sentences: held-out ones gate the recipe, others train/calibrate it.
    sentences = stdlib_sentences()
    import random

    random.Random(1).shuffle(sentences)
    eval_texts = sentences[: config.eval_rows]
    train_texts = sentences[config.eval_rows : config.eval_rows + config.train_rows]
    built = {}
    for recipe_path in config.recipes:
        recipe = load_config(TextRecipe, recipe_path)
        target = paths["artifacts"] / recipe.name
        if (target / "manifest.json").is_file():
            built[recipe.name] = str(target)
            continue
        progress(f"compress {recipe.name}")
        try:
            onnx_bytes, metrics = compress_text(
                recipe, train_texts=train_texts, eval_texts=eval_texts, progress=progress
            )
        except TextGateError as err:  # over budget: reported, not benchmarked, not written
            progress(f"REJECTED {err}")
            continue
        source = {"path": table, "format": "delta", "delta_version": version}
        write_text_artifact(
            onnx_bytes,
            target,
            name=recipe.name,
            max_length=recipe.max_length,
            recipe=recipe.model_dump(),
            metrics=metrics,
            data={
                "evaluation": {"sentences": len(eval_texts), "source": "stdlib docstrings"},
                "train": {"sentences": len(train_texts), "source": "stdlib docstrings"},
                "scored_table": source,
            },
        )
        built[recipe.name] = str(target)
    return built


def _torch_predict_fn(max_length: int):
    def make_predict_fn():
        import torch

        from compression.text_model import load_encoder, load_tokenizer, tokenize

        torch.set_num_threads(1)
        encoder, tokenizer = load_encoder(), load_tokenizer()

        def predict(texts: np.ndarray) -> np.ndarray:
            ids, mask = tokenize(tokenizer, [str(t) for t in texts], max_length=max_length)
            with torch.no_grad():
                return encoder(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()

        return predict

    return make_predict_fn


def _timed(df) -> float:
    start = time.perf_counter()
    df.write.format("noop").mode("overwrite").save()
    return time.perf_counter() - start


def measure(spark, config: BenchEmbedConfig, artifacts: dict[str, str]) -> dict:
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, FloatType

    from udfs.text import embed_dataframe

    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(config.arrow_batch_rows))
    table = spark.read.format("delta").load(str(_paths(config)["table"])).cache()
    rows = table.count()
    runs: list[tuple[str, str | None, dict]] = []
    names = list(artifacts)
    for name in names:
        runs.append((name, artifacts[name], {"sort_by_length": True}))
    if config.include_unsorted_fp32:
        runs.append(
            (f"{names[0]} (no length sort)", artifacts[names[0]], {"sort_by_length": False})
        )
    if config.include_torch:
        runs.append(("pytorch predict_batch_udf", None, {}))
    report, reference = [], None
    for label, path, options in runs:
        if path is None:
            embed = predict_batch_udf(
                _torch_predict_fn(config.max_length),
                return_type=ArrayType(FloatType()),
                batch_size=config.torch_batch_size,
            )
            df = table.select("doc_id", embed("text").alias("embedding"))
        else:
            df = embed_dataframe(
                table,
                path,
                key_columns=["doc_id"],
                max_length=config.max_length,
                sub_batch_rows=config.sub_batch_rows,
                **options,
            ).select("doc_id", "embedding")
        _timed(df.limit(50))  # warm the workers' sessions
        seconds = _timed(df)
        got = df.orderBy("doc_id").select(F.col("embedding")).toPandas()["embedding"]
        emb = np.stack(got.to_list()).astype(np.float32)
        reference = emb if reference is None else reference
        entry = {
            "variant": label,
            "sentences_per_s": round(rows / seconds, 1),
            "seconds": round(seconds, 2),
            **embedding_fidelity(reference, emb),
        }
        if path is not None:
            entry["model_bytes"] = Path(path, "model.onnx").stat().st_size
        report.append(entry)
        print(json.dumps(entry), flush=True)
    base = report[0]["sentences_per_s"]
    torch_row = next((r for r in report if r["variant"].startswith("pytorch")), None)
    for r in report:
        r["x_vs_fp32_onnx"] = round(r["sentences_per_s"] / base, 2)
        if torch_row:
            r["x_vs_pytorch"] = round(r["sentences_per_s"] / torch_row["sentences_per_s"], 2)
    return {"rows": rows, "spark_master": spark.sparkContext.master, "variants": report}


app = typer.Typer(add_completion=False)


@app.command()
def main(
    config: Annotated[Path, typer.Option(help="bench YAML, e.g. conf/bench-embed.yaml")],
    prepare_only: Annotated[bool, typer.Option(help="build table and artifacts only")] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override: a.b=value")] = None,
) -> None:
    from jobs.config import load_config
    from jobs.spark import get_spark

    cfg = load_config(BenchEmbedConfig, config, set_ or [])
    spark = get_spark("leanscore-embed-bench")
    artifacts = prepare(spark, cfg)
    if prepare_only:
        typer.echo(json.dumps(artifacts, indent=2))
        return
    result = measure(spark, cfg, artifacts)
    out = Path(cfg.out) / "bench" / "embed-bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    _print_table(result)
    typer.echo(f"report: {out}")


def _print_table(result: dict) -> None:
    head = f"{'variant':42s} {'sent/s':>8s} {'x fp32':>7s} {'x torch':>7s} {'cos mean':>8s} "
    typer.echo(head + f"{'cos p1':>7s} {'cos min':>7s} {'top10':>6s}")
    for r in result["variants"]:
        typer.echo(
            f"{r['variant']:42s} {r['sentences_per_s']:8.1f} {r['x_vs_fp32_onnx']:7.2f} "
            f"{r.get('x_vs_pytorch', float('nan')):7.2f} {r['cosine_mean']:8.4f} "
            f"{r['cosine_p1']:7.4f} {r['cosine_min']:7.4f} {r['top10_overlap']:6.3f}"
        )


if __name__ == "__main__":
    app()
