"""Embedding bench: MiniLM variants and the PyTorch model on one text table, one Spark run.

    leanscore bench --config conf/bench-embed.yaml --out bench-output/embed

The bench config says ``kind: embedding``; ``leanscore bench`` sends it here. ``prepare``
writes the docstring table (Delta) and builds each recipe's artifact with the recipe engine
(``leanscore.compression.recipe``, the one ``leanscore compress`` runs: MiniLM is a Hugging
Face encoder, task embedding), gated on the mean cosine to the model as given: a recipe over its
budget is reported with its numbers and not measured. Artifacts and rejections are kept in
``workdir`` and reused while their recipe and data are unchanged. ``measure`` then embeds the
same table (cached, ``partitions`` slices) with every variant into Spark's noop sink: a warm-up
on every worker first, then ``repeats`` interleaved rounds of every variant alike, each
variant's median reported; one more untimed pass per variant collects
embeddings for fidelity against the fp32 ONNX model, on sentences no recipe used, from two text
domains (``embed_fidelity``). The PyTorch model runs in
``pyspark.ml.functions.predict_batch_udf`` the way its documentation shows (tokenize each
batch, pad it to its longest text). The bound: the same UDF with the model call left out, and
ONNX Runtime alone on the same sentences in the driver.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from leanscore.bench.embed_fidelity import fidelity_table
from leanscore.bench.text_fidelity import embedding_fidelity
from leanscore.bench.timing import noop_seconds
from leanscore.udfs.text import column_engine
from pydantic import BaseModel, ConfigDict, Field, field_validator

log = logging.getLogger(__name__)

KIND = "embedding"
TORCH_VARIANT = "pytorch predict_batch_udf"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Targets(_Strict):
    """What the best compressed variant must reach; reported as met or not."""

    x_vs_fp32_onnx: float = Field(default=2.5, gt=0)
    x_vs_pytorch: float = Field(default=3.0, gt=0)
    cosine_mean: float = Field(default=0.99, gt=0, le=1)
    cosine_p1: float = Field(default=0.97, gt=0, le=1)


class BenchEmbedConfig(_Strict):
    kind: Literal["embedding"]
    workdir: str = Field(
        default="demo-output/embed", description="text table and artifacts, built once, reused"
    )
    rows: int = Field(default=3000, ge=20, description="rows of the docstring table to embed")
    partitions: int | None = Field(
        default=None, gt=0, description="slices of the table; default one per Spark core"
    )
    repeats: int = Field(default=5, ge=1, description="timed rounds; medians are reported")
    warmup_rows: int = Field(default=64, gt=0, description="rows per worker in the warm-up")
    fidelity_rows: int = Field(
        default=1000, ge=24, description="sentences compared to fp32 ONNX, half per text domain"
    )
    eval_rows: int = Field(default=400, gt=10, description="held-out sentences for the gate")
    train_rows: int = Field(default=1600, gt=10, description="distillation/calibration sentences")
    recipes: list[str] = Field(min_length=1, description="text recipe YAMLs; the first is fp32")
    max_length: int = Field(default=128, gt=0, le=512)
    batch_size: int = Field(
        default=16, gt=0, description="texts per ONNX Runtime call (batch-independent models)"
    )
    arrow_batch_rows: int = Field(default=1000, gt=0)
    torch_batch_sizes: list[int] = Field(
        default_factory=lambda: [16, 32, 64, 128],
        min_length=1,
        description="PyTorch's batch in predict_batch_udf: the fastest of these for the model "
        "alone (one thread, the table's first sentences in table order, each batch padded to "
        "its longest); one size: no sweep",
    )
    torch_sweep_rows: int = Field(
        default=256, gt=0, description="sentences the batch-size sweep embeds at each size"
    )
    torch_sweep_rounds: int = Field(
        default=3, ge=1, description="interleaved rounds of the batch-size sweep; medians"
    )
    include_torch: bool = True
    include_unsorted_fp32: bool = True
    bound_rows: int = Field(
        default=500, ge=0, description="rows for ONNX Runtime alone in the driver; 0: skip"
    )
    path_threshold_bytes: int = Field(
        default=256 * 1024 * 1024, ge=0, description="models above it go by path, not broadcast"
    )
    engine: str = Field(
        default="auto",
        description="the text UDF's engine: arrow (Spark 4.1+), pandas or auto (engines are "
        "registered in leanscore.udfs.engines)",
    )
    disabled_optimizers: list[str] = Field(
        default_factory=lambda: ["SkipLayerNormFusion"],
        description="ONNX Runtime optimisers off in every ONNX variant's session",
    )

    @field_validator("engine")
    @classmethod
    def _column_engine(cls, name: str) -> str:
        return column_engine(name)

    pricing: str | None = Field(default="conf/pricing.yaml", description="for $ per M sentences")
    targets: Targets = Field(default_factory=Targets)


def is_embedding_config(data: dict) -> bool:
    """True when a bench config (as parsed YAML) asks for the embedding bench."""
    return isinstance(data, dict) and data.get("kind") == KIND


@dataclass
class TextVariant:
    name: str
    model: str  # "onnx" | "pytorch" | "none" (the bound: the model call left out)
    path: str  # how Spark runs it
    frame: Callable  # DataFrame(doc_id, text) -> DataFrame(doc_id, embedding)
    model_bytes: int | None
    info: dict = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)


def _workdir(config: BenchEmbedConfig) -> dict[str, Path]:
    root = Path(config.workdir).resolve()
    return {
        "table": root / "tables" / "docstrings",
        "artifacts": root / "artifacts",
        "rejected": root / "rejected",
    }


def _split_sentences(config: BenchEmbedConfig) -> tuple[list[str], list[str]]:
    """Held-out sentences gate the recipes; different ones train/calibrate them."""
    from leanscore.bench.text_data import stdlib_sentences

    sentences = stdlib_sentences()
    random.Random(1).shuffle(sentences)
    eval_texts = sentences[: config.eval_rows]
    train_texts = sentences[config.eval_rows : config.eval_rows + config.train_rows]
    return eval_texts, train_texts


def held_out_domains(config: BenchEmbedConfig) -> dict[str, list[str]]:
    """The fidelity sentences of both text domains: none of them in any recipe's rows."""
    from leanscore.bench.embed_fidelity import fidelity_sentences

    eval_texts, train_texts = _split_sentences(config)
    return fidelity_sentences(set(eval_texts) | set(train_texts), config.fidelity_rows)


def _build_key(recipe: dict, config: BenchEmbedConfig) -> str:
    """What an artifact was built from: recipe, data sizes and token length. A change
    rebuilds it."""
    basis = {
        "recipe": recipe,
        "eval_rows": config.eval_rows,
        "train_rows": config.train_rows,
        "max_length": config.max_length,
    }
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:16]


def _ensure_table(spark, config: BenchEmbedConfig, table: Path) -> int:
    """Write the docstring table unless it is there with ``rows`` rows; its Delta version."""
    from delta.tables import DeltaTable
    from leanscore.bench.text_data import text_table

    path = str(table)
    if not (
        DeltaTable.isDeltaTable(spark, path)
        and spark.read.format("delta").load(path).count() == config.rows
    ):
        log.info("writing the docstring table: %s rows -> %s", config.rows, path)
        frame = spark.createDataFrame(text_table(config.rows, seed=0))
        frame.write.format("delta").mode("overwrite").save(path)
    return DeltaTable.forPath(spark, path).history(1).first()["version"]


def prepare(spark, config: BenchEmbedConfig, *, config_dir: Path) -> tuple[dict, list[dict]]:
    """Write the table and every recipe's artifact: ({name: path}, [rejected recipes])."""
    from leanscore.bench.compare import resolve_path
    from leanscore.compression.artifact import Artifact
    from leanscore.compression.recipe import Recipe
    from leanscore.jobs.config import load_config

    paths = _workdir(config)
    version = _ensure_table(spark, config, paths["table"])
    built: dict[str, str] = {}
    rejected: list[dict] = []
    engine = None  # the encoder, its data and its baseline, made when a recipe needs building
    for index, recipe_file in enumerate(config.recipes):
        recipe = load_config(Recipe, resolve_path(recipe_file, config_dir))
        key = _build_key(recipe.model_dump(), config)
        target = paths["artifacts"] / recipe.name
        rejection = paths["rejected"] / f"{recipe.name}.json"
        if (target / "manifest.json").is_file():
            manifest = Artifact.load(target).manifest
            if manifest.data.get("build_key") == key:
                built[recipe.name] = str(target)
                continue
        if rejection.is_file():
            record = json.loads(rejection.read_text())
            if record.get("build_key") == key:
                rejected.append(record)
                log.info("%s", record["message"])
                continue
        engine = engine or _MiniLMEngine.start(config)
        log.info("compress %s (%s)", recipe.name, recipe_file)
        data = {
            "build_key": key,
            "scored_table": {
                "path": str(paths["table"]),
                "format": "delta",
                "delta_version": version,
            },
        }
        try:
            engine.build(recipe, target, data=data)
        except engine.gate_error as err:  # over budget: reported with its numbers, not measured
            if index == 0:
                raise ValueError(f"the baseline recipe must pass its gate: {err}") from err
            final = err.metrics.get("final") or {}
            record = {
                "name": recipe.name,
                "recipe": recipe_file,
                "build_key": key,
                "message": str(err),
                "fidelity": final.get("fidelity"),
                "final": final,
            }
            rejection.parent.mkdir(parents=True, exist_ok=True)
            rejection.write_text(json.dumps(record, indent=2) + "\n")
            rejected.append(record)
            log.warning("REJECTED %s", err)
            continue
        rejection.unlink(missing_ok=True)
        built[recipe.name] = str(target)
    return built, rejected


@dataclass
class _MiniLMEngine:
    """MiniLM through the recipe engine, as ``leanscore compress`` runs a Hugging Face encoder
    with task embedding: the held-out and training sentences tokenized as scoring does, the
    baseline measured once for every recipe."""

    config: BenchEmbedConfig
    encoder: object
    inputs: object
    evaluation: object
    train: object
    baseline: object
    gate_error: type

    @classmethod
    def start(cls, config: BenchEmbedConfig) -> _MiniLMEngine:
        from leanscore.compression.data import LabelledData
        from leanscore.compression.recipe import AccuracyGateError, measure_baseline
        from leanscore.compression.sources.hf_encoder import TextEmbeddingInputs, load_source
        from leanscore.compression.text_model import minilm_dir

        encoder, _ = load_source(minilm_dir(), max_length=config.max_length)
        inputs = TextEmbeddingInputs.of(minilm_dir(), max_length=config.max_length)
        eval_texts, train_texts = _split_sentences(config)

        def sentences(texts: list[str], name: str):
            rows = LabelledData(
                np.array(texts, dtype=object),
                None,
                {"sentences": len(texts), "source": "stdlib docstrings"},
            )
            return inputs.attach(rows, name=name)

        evaluation = sentences(eval_texts, "evaluation")
        log.info("baseline: MiniLM as given, on %d held-out sentences", len(eval_texts))
        baseline = measure_baseline(
            encoder,
            example_input=None,
            evaluation=evaluation,
            task="embedding",
            exporter=inputs.exporter(),
        )
        return cls(
            config,
            encoder,
            inputs,
            evaluation,
            sentences(train_texts, "train"),
            baseline,
            AccuracyGateError,
        )

    def build(self, recipe, target: Path, *, data: dict) -> None:
        """Run ``recipe`` and write its artifact to ``target``; the gate error over budget."""
        from leanscore.compression.build import data_lineage, write_result
        from leanscore.compression.recipe import run_recipe

        result = run_recipe(
            recipe,
            self.encoder,
            train=self.train,
            evaluation=self.evaluation,
            task="embedding",
            family=self.inputs.recipe_family,
            exporter=self.inputs.exporter(),
            baseline=self.baseline,
            progress=log.info,
        )
        lineage = data_lineage(train=self.train, evaluation=self.evaluation)
        write_result(
            result,
            target,
            name=recipe.name,
            features=self.inputs.features("text"),
            task="embedding",
            data={**lineage, **data},
            extra_files=self.inputs.files(),
            family=self.inputs.family,
        )


def _torch_predict_fn(max_length: int):
    """predict_batch_udf's ``make_predict_fn``: the model loads once per Python worker."""

    def make_predict_fn():
        import torch
        from leanscore.compression.text_model import load_encoder, load_tokenizer, tokenize

        torch.set_num_threads(1)  # one task per core, as ONNX Runtime's sessions
        encoder, tokenizer = load_encoder(), load_tokenizer()

        def predict(texts: np.ndarray) -> np.ndarray:
            ids, mask = tokenize(tokenizer, [str(t) for t in texts], max_length=max_length)
            with torch.no_grad():
                return encoder(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()

        return predict

    return make_predict_fn


def sweep_torch_text_batch_size(config: BenchEmbedConfig, texts: list[str]) -> dict:
    """PyTorch's best batch for predict_batch_udf: the predict function the UDF runs, here in
    the driver on one thread, over ``texts`` in table order at each configured size, in
    ``torch_sweep_rounds`` interleaved rounds (medians, as the tabular bench sweeps); the
    fastest wins. Larger batches amortise per-call overhead but pad more to their longest
    sentence, so the best size is measured, not assumed."""
    import torch

    sizes = config.torch_batch_sizes
    if len(sizes) == 1:
        return {"chosen": sizes[0], "sentences_per_s_by_size": None, "rows": 0}
    previous = torch.get_num_threads()
    try:
        predict = _torch_predict_fn(config.max_length)()  # sets one thread, as in a task
        predict(np.asarray(texts[: min(8, len(texts))], dtype=object))  # warm-up
        runs: dict[int, list[float]] = {n: [] for n in sizes}
        for _ in range(config.torch_sweep_rounds):
            for n in sizes:
                start = time.perf_counter()
                for i in range(0, len(texts), n):
                    predict(np.asarray(texts[i : i + n], dtype=object))
                runs[n].append(len(texts) / (time.perf_counter() - start))
        speeds = {n: round(float(np.median(v)), 1) for n, v in runs.items()}
    finally:
        torch.set_num_threads(previous)
    chosen = max(speeds, key=lambda n: speeds[n])
    log.info("PyTorch batch for predict_batch_udf: %d (sentences/s by size: %s)", chosen, speeds)
    return {
        "chosen": chosen,
        "sentences_per_s_by_size": {str(n): v for n, v in speeds.items()},
        "rows": len(texts),
        "rounds": config.torch_sweep_rounds,
    }


def _no_model_scorer(scorer):
    """``scorer`` with the model call left out: rows read, tokenized and checked as usual,
    zeros returned. What the Spark path costs per sentence without a model."""
    import dataclasses

    from leanscore.udfs.kernel import Scorer

    class NoModelScorer(Scorer):
        def run(self, session, input_name, matrix):
            return np.zeros((len(matrix), 384), np.float32)

    return NoModelScorer(**{f.name: getattr(scorer, f.name) for f in dataclasses.fields(Scorer)})


NO_MODEL = "no model (Spark path + tokenizer only)"


def _variants(
    spark, config: BenchEmbedConfig, artifacts: dict[str, str], *, torch_batch_size: int
) -> list[TextVariant]:
    from leanscore.compression.artifact import Artifact
    from leanscore.compression.text_model import minilm_dir
    from leanscore.udfs.text import TextEmbeddingUDF, text_embedding_udf
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, FloatType

    def onnx_variant(name: str, path: str, *, sort: bool, batch: int | None = None) -> TextVariant:
        artifact = Artifact.load(path)
        embed = text_embedding_udf(
            artifact,
            spark=spark,
            max_length=config.max_length,
            batch_size=batch or config.batch_size,
            sort_by_length=sort,
            disabled_optimizers=tuple(config.disabled_optimizers),
            path_threshold_bytes=config.path_threshold_bytes,
            engine=config.engine,
        )

        def frame(df):
            return df.select("doc_id", embed("text", key="doc_id")["embedding"].alias("embedding"))

        metrics = artifact.manifest.metrics
        return TextVariant(
            name=name,
            model="onnx",
            path="leanscore text UDF" + ("" if sort else " (rows in table order)"),
            frame=frame,
            model_bytes=artifact.manifest.model_bytes,
            info={
                "artifact": path,
                "sha256": artifact.sha256,
                "sort_by_length": sort,
                "batch_size": batch or config.batch_size,
                "gate": metrics.get("gate"),
                "held_out_fidelity": (metrics.get("final") or {}).get("fidelity"),
                "ort_1thread": metrics.get("final"),
            },
        )

    names = list(artifacts)
    variants = [onnx_variant(n, artifacts[n], sort=True) for n in names]
    base = text_embedding_udf(
        artifacts[names[-1]],
        spark=spark,
        max_length=config.max_length,
        batch_size=config.batch_size,
        disabled_optimizers=tuple(config.disabled_optimizers),
        path_threshold_bytes=config.path_threshold_bytes,
        engine=config.engine,
    )
    bare = TextEmbeddingUDF(
        base.artifact,
        _no_model_scorer(base.scorer),
        probabilities=False,
        engine=base.engine.name,
    )
    variants.append(
        TextVariant(
            name=NO_MODEL,
            model="none",
            path="leanscore text UDF, model call left out",
            frame=lambda df: df.select(
                "doc_id", bare("text", key="doc_id")["embedding"].alias("embedding")
            ),
            model_bytes=None,
        )
    )
    if config.include_unsorted_fp32:
        # PyTorch's counterpart: the same rows per call, in table order, each call padded to its
        # longest text; only the runtime differs
        unsorted = onnx_variant(
            f"{names[0]} (no length sort)", artifacts[names[0]], sort=False, batch=torch_batch_size
        )
        variants.append(unsorted)
    if config.include_torch:
        embed = predict_batch_udf(
            _torch_predict_fn(config.max_length),
            return_type=ArrayType(FloatType()),
            batch_size=torch_batch_size,
        )
        variants.append(
            TextVariant(
                name=TORCH_VARIANT,
                model="pytorch",
                path=f"predict_batch_udf, batches of {torch_batch_size} in table order",
                frame=lambda df: df.select("doc_id", embed(F.col("text")).alias("embedding")),
                model_bytes=(minilm_dir() / "model.safetensors").stat().st_size,
                info={
                    "padding": "each batch padded to its longest text",
                    "batch_size": torch_batch_size,
                },
            )
        )
    return variants


def measure(
    spark,
    config: BenchEmbedConfig,
    artifacts: dict[str, str],
    *,
    cores: int,
    torch_batch_size: int | None = None,
) -> tuple[list[TextVariant], dict[str, np.ndarray], int]:
    """Time every variant on the same cached table; collect embeddings for fidelity."""
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    previous = spark.conf.get(key, None)
    spark.conf.set(key, str(config.arrow_batch_rows))
    try:
        batch = torch_batch_size or config.torch_batch_sizes[0]
        return _measure(spark, config, artifacts, cores=cores, torch_batch_size=batch)
    finally:  # the session may be someone else's (a notebook, the tests): leave it as it was
        if previous is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, previous)


def _measure(
    spark, config: BenchEmbedConfig, artifacts: dict[str, str], *, cores: int, torch_batch_size: int
) -> tuple[list[TextVariant], dict[str, np.ndarray], int]:
    from leanscore.bench.metrics import CpuMeter
    from pyspark.sql import functions as F

    partitions = config.partitions or cores
    source = spark.read.format("delta").load(str(_workdir(config)["table"]))
    table = source.repartitionByRange(partitions, "doc_id").cache()
    rows = table.count()
    sample = source.where(F.col("doc_id") < config.warmup_rows * cores).toPandas()
    warm = spark.createDataFrame(sample).repartition(cores).cache()
    warm.count()
    variants = _variants(spark, config, artifacts, torch_batch_size=torch_batch_size)
    meter = CpuMeter(spark)
    for v in variants:  # every worker builds its session / loads the model before timing
        log.info("warm-up %s", v.name)
        noop_seconds(v.frame(warm))
    for r in range(config.repeats):
        shift = r % len(variants)  # rotate the order so no variant always runs first
        for v in variants[shift:] + variants[:shift]:  # every variant in every round
            mark = meter.mark()
            seconds = noop_seconds(v.frame(table))
            cpu = meter.since(mark)["process_cpu_s"]
            v.seconds.append(seconds)
            if cpu is not None:
                v.cpu_seconds.append(cpu)
            log.info(
                "round %d %s: %.2f s, %.1f sentences/s, %s CPU s",
                r + 1,
                v.name,
                seconds,
                rows / seconds,
                None if cpu is None else round(cpu, 2),
            )
    embeddings = {}
    # sentences no recipe calibrated, pruned, distilled or was gated on, from two domains
    frame, _ = fidelity_table(held_out_domains(config))
    subset = spark.createDataFrame(frame).repartition(cores)
    for v in variants:
        if v.model == "none":
            continue
        got = v.frame(subset).orderBy("doc_id").toPandas()["embedding"]
        embeddings[v.name] = np.stack(got.to_list()).astype(np.float32)
    table.unpersist()
    warm.unpersist()
    return variants, embeddings, rows


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def _targets(entries: list[dict], targets: Targets, baseline: str) -> dict:
    """Each compressed ONNX variant against the targets; the fastest one meeting the fidelity
    targets is the one the report names (none: the fastest compressed variant)."""
    checks = []
    for e in entries:
        if e["model"] != "onnx" or e["name"] == baseline or not e["sort_by_length"]:
            continue
        by_domain = e.get("fidelity_by_domain") or {"all": e["fidelity"]}
        # the worse of the text domains: the targets hold on both
        fid = {k: min(f[k] for f in by_domain.values()) for k in ("cosine_mean", "cosine_p1")}
        rows = [
            ("x vs fp32 ONNX", e["x_vs_fp32_onnx"], targets.x_vs_fp32_onnx),
            ("x vs PyTorch predict_batch_udf", e["x_vs_pytorch"], targets.x_vs_pytorch),
            ("mean cosine", fid["cosine_mean"], targets.cosine_mean),
            ("1st-percentile cosine", fid["cosine_p1"], targets.cosine_p1),
        ]
        items = [
            {"check": c, "value": v, "target": t, "met": v is not None and v >= t}
            for c, v, t in rows
        ]
        checks.append({"variant": e["name"], "checks": items, "met": all(i["met"] for i in items)})
    if not checks:
        return {"variant": None, "met": False, "checks": [], "all": []}
    speed = {e["name"]: e["sentences_per_s"] for e in entries}
    faithful = [c for c in checks if all(i["met"] for i in c["checks"][2:])]
    best = max(faithful or checks, key=lambda c: speed[c["variant"]])
    return {**best, "all": checks}


def ort_alone(
    config: BenchEmbedConfig, artifacts: dict[str, str], texts: list[str], *, rounds: int = 3
) -> dict[str, float]:
    """Sentences/s of each model alone: ONNX Runtime on one thread in this process, the UDF's
    own call grouping (``Scorer.run``: length-sorted calls, or one text per call for a
    batch-dependent model) on already tokenized rows; no Spark, no tokenizer. Interleaved
    rounds, medians."""
    from leanscore.compression.artifact import Artifact
    from leanscore.udfs.distribution import ModelSource
    from leanscore.udfs.kernel import Scorer
    from leanscore.udfs.options import ScoringOptions

    options = ScoringOptions(
        max_length=config.max_length,
        batch_size=config.batch_size,
        intra_op_threads=1,
        disabled_optimizers=tuple(config.disabled_optimizers),
    )
    runs = {}
    for name, path in artifacts.items():
        artifact = Artifact.load(path)
        source = ModelSource(name, artifact.sha256, "path", path=str(artifact.model_path))
        scorer = Scorer.build(artifact.manifest, source, options.session_config(), options=options)
        scorer.family.attach(artifact)
        matrix = scorer.family.from_texts(texts).matrix
        runs[name] = (scorer, *scorer.session(), matrix)
    speeds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, (scorer, session, input_name, matrix) in runs.items():
            start = time.perf_counter()
            scorer.run(session, input_name, matrix)
            speeds[name].append(len(matrix) / (time.perf_counter() - start))
    return {name: round(float(np.median(v)), 1) for name, v in speeds.items()}


def run_embed_bench(spark, config: BenchEmbedConfig, out: str | Path, *, config_dir: Path) -> dict:
    """Prepare, measure, and write ``report.json`` and ``report.md`` into ``out``."""
    from leanscore.bench.compare import resolve_path, spark_cores
    from leanscore.bench.metrics import environment, source_commit
    from leanscore.bench.pricing import cost, load_pricing
    from leanscore.udfs.text import resolve_engine

    out = Path(out).resolve()
    started = dt.datetime.now(dt.UTC)
    commit = source_commit()  # the code measured: taken before the run, not after it
    clock = time.perf_counter()
    pricing = load_pricing(resolve_path(config.pricing, config_dir)) if config.pricing else None
    artifacts, rejected = prepare(spark, config, config_dir=config_dir)
    prepared_s = time.perf_counter() - clock
    cores = spark_cores(spark)
    torch_batch = None
    if config.include_torch:
        torch_batch = sweep_torch_text_batch_size(
            config, _first_sentences(spark, config, config.torch_sweep_rows)
        )
    load_before = _loadavg()
    variants, embeddings, rows = measure(
        spark,
        config,
        artifacts,
        cores=cores,
        torch_batch_size=torch_batch["chosen"] if torch_batch else None,
    )
    _, domains = fidelity_table(held_out_domains(config))
    baseline = variants[0].name
    reference = embeddings[baseline]
    bare = next(v for v in variants if v.model == "none")
    variants = [v for v in variants if v.model != "none"]
    bound = {"no_model": _speeds(bare.seconds, bare.cpu_seconds, rows)}
    if config.bound_rows:
        texts = _first_sentences(spark, config, config.bound_rows)
        alone = ort_alone(config, artifacts, texts)
        bound["ort_alone_1thread"] = {
            "rows": len(texts),
            "sentences_per_s": alone,
            "x_vs_fp32_onnx": {n: _ratio(v, alone[baseline]) for n, v in alone.items()},
        }
    entries = []
    for v in variants:
        median = float(np.median(v.seconds))
        entry = {
            "name": v.name,
            "model": v.model,
            "path": v.path,
            "sort_by_length": v.info.get("sort_by_length", False),
            "rows": rows,
            "rounds": len(v.seconds),
            "seconds": [round(s, 3) for s in v.seconds],
            "median_s": round(median, 3),
            "spread": round((max(v.seconds) - min(v.seconds)) / median, 3),
            "sentences_per_s": round(rows / median, 1),
            "cpu_seconds": [round(s, 2) for s in v.cpu_seconds] or None,
            "sentences_per_cpu_s": (
                round(rows / float(np.median(v.cpu_seconds)), 1) if v.cpu_seconds else None
            ),
            "model_bytes": v.model_bytes,
            "fidelity": embedding_fidelity(reference, embeddings[v.name]),
            "fidelity_by_domain": {
                domain: embedding_fidelity(reference[a:b], embeddings[v.name][a:b])
                for domain, (a, b) in domains.items()
            },
            **{k: val for k, val in v.info.items() if k != "sort_by_length"},
        }
        if pricing is not None:
            c = cost(pricing, rows=rows, wall_s=median, cores=cores)
            entry["usd_per_million_sentences"] = round(c["usd_per_million_rows"], 4)
            entry["core_seconds_per_million_sentences"] = round(
                c["core_seconds_per_million_rows"], 1
            )
        entries.append(entry)
    base_speed = entries[0]["sentences_per_s"]
    torch_speed = next((e["sentences_per_s"] for e in entries if e["model"] == "pytorch"), None)
    base_cpu = entries[0]["sentences_per_cpu_s"]
    for e in entries:
        e["x_vs_fp32_onnx"] = _ratio(e["sentences_per_s"], base_speed)
        e["x_vs_pytorch"] = _ratio(e["sentences_per_s"], torch_speed)
        e["cpu_x_vs_fp32_onnx"] = _ratio(e["sentences_per_cpu_s"], base_cpu)
    env = environment(spark, cores=cores)
    env["load_average_before"] = load_before
    env["commit"] = commit
    report = {
        "kind": KIND,
        "engine": resolve_engine(config.engine),
        "run_id": uuid.uuid4().hex[:12],
        "run_at": started.isoformat(timespec="seconds"),
        "input": {"path": str(_workdir(config)["table"]), "format": "delta", "rows": rows},
        "cores": cores,
        "partitions": config.partitions or cores,
        "repeats": config.repeats,
        "baseline": baseline,
        "variants": entries,
        "bound": bound,
        "rejected": rejected,
        "torch_batch": torch_batch,
        "targets": _targets(entries, config.targets, baseline),
        "config": config.model_dump(),
        "environment": env,
        "seconds": {"prepare": round(prepared_s, 1), "total": 0.0},
    }
    report["seconds"]["total"] = round(time.perf_counter() - clock, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(embed_markdown(report))
    return report


def _first_sentences(spark, config: BenchEmbedConfig, rows: int) -> list[str]:
    """The table's first ``rows`` sentences in table (doc_id) order."""
    from pyspark.sql import functions as F

    return (
        spark.read.format("delta")
        .load(str(_workdir(config)["table"]))
        .where(F.col("doc_id") < rows)
        .orderBy("doc_id")
        .toPandas()["text"]
        .tolist()
    )


def _speeds(seconds: list[float], cpu_seconds: list[float], rows: int) -> dict:
    wall = float(np.median(seconds))
    cpu = float(np.median(cpu_seconds)) if cpu_seconds else None
    return {
        "seconds": [round(x, 3) for x in seconds],
        "sentences_per_s": round(rows / wall, 1),
        "sentences_per_cpu_s": round(rows / cpu, 1) if cpu else None,
        "cpu_ms_per_sentence": round(1000 * cpu / rows, 3) if cpu else None,
    }


def _loadavg() -> list[float] | None:
    import os

    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def _loads(values: list[float] | None) -> str:
    return "n/a" if not values else ", ".join(f"{v:.1f}" for v in values)


def _f(x, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def table_lines(report: dict) -> list[str]:
    """The variants as a Markdown table (also what the CLI prints)."""
    cost = any("usd_per_million_sentences" in e for e in report["variants"])
    head = (
        "| variant | path | sentences/s | x vs fp32 ONNX | x vs PyTorch | cosine mean | "
        "cosine p1 | cosine min | top-10 overlap | model bytes | spread | sentences/CPU-s | "
        "x fp32 (CPU) |"
    )
    lines = [head + (" $ / M sentences |" if cost else "")]
    lines.append("| --- | --- |" + " ---: |" * (11 + cost))
    for e in report["variants"]:
        fid = e["fidelity"]
        row = (
            f"| {e['name']} | {e['path']} | {e['sentences_per_s']:,.1f} | "
            f"{_f(e['x_vs_fp32_onnx'], '.2f')}x | {_f(e['x_vs_pytorch'], '.2f')}x | "
            f"{fid['cosine_mean']:.4f} | {fid['cosine_p1']:.4f} | {fid['cosine_min']:.4f} | "
            f"{fid['top10_overlap']:.3f} | {_f(e['model_bytes'], ',')} | "
            f"{100 * e['spread']:.0f}% | {_f(e['sentences_per_cpu_s'], ',.1f')} | "
            f"{_f(e['cpu_x_vs_fp32_onnx'], '.2f')}x |"
        )
        if cost:
            row += f" {_f(e.get('usd_per_million_sentences'), '.4f')} |"
        lines.append(row)
    return lines


def embed_markdown(report: dict) -> str:
    env, t = report["environment"], report["targets"]
    first = report["variants"][0]
    lines = [
        "# leanscore embedding bench",
        "",
        f"{report['input']['rows']:,} sentences (stdlib docstrings, Delta "
        f"`{report['input']['path']}`), {report['partitions']} partitions, Spark "
        f"`{env['spark_master']}` ({report['cores']} cores, one task per core, one ONNX Runtime "
        f"/ torch thread per task); warm-up on every worker, then {report['repeats']} "
        "interleaved rounds into the noop sink, the same for every variant; sentences/s is "
        "the median round. Fidelity: "
        f"cosine to `{report['baseline']}` on the first {first['fidelity']['rows']:,} rows, "
        "top-10 neighbour overlap among those rows. Spread: (slowest - fastest) / median "
        "round. sentences/CPU-s: rows over the CPU seconds the run's process tree burnt (JVM, "
        "Python workers), median round: the figure a busy neighbour on a shared machine "
        "disturbs least.",
        "",
        *table_lines(report),
        "",
    ]
    bound = report.get("bound") or {}
    if bound.get("no_model"):
        nm = bound["no_model"]
        lines.append(
            f"Bound: the same Spark path with the model call left out (read, sort, tokenize, "
            f"pad, Arrow both ways) runs {nm['sentences_per_s']:,.1f} sentences/s, "
            f"{_f(nm['cpu_ms_per_sentence'], '')} ms of CPU per sentence."
        )
    if bound.get("ort_alone_1thread"):
        alone = bound["ort_alone_1thread"]
        speeds = ", ".join(
            f"`{n}` {v:,.1f}/s ({alone['x_vs_fp32_onnx'][n]}x)"
            for n, v in alone["sentences_per_s"].items()
        )
        lines.append(
            f"ONNX Runtime alone, one thread, no Spark, the table's first {alone['rows']} "
            f"sentences already tokenized: {speeds}."
        )
    if bound:
        lines.append("")
    if t["variant"]:
        verdict = "met" if t["met"] else "NOT met"
        lines.append(f"Targets for `{t['variant']}`: {verdict}.")
        lines.append("")
        for c in t["checks"]:
            mark = "yes" if c["met"] else "NO"
            lines.append(f"- {c['check']}: {_f(c['value'], '')} (target {c['target']}): {mark}")
        best = next(e for e in report["variants"] if e["name"] == t["variant"])
        lines.append(
            f"- cross-check, not a target: x vs fp32 ONNX in CPU time "
            f"{_f(best['cpu_x_vs_fp32_onnx'], '')} (wall-clock ratios move with a busy "
            "neighbour; CPU seconds less so)"
        )
        lines.append("")
    for r in report["rejected"]:
        lines.append(f"- rejected by its gate, not measured: {r['message']}")
    if report["rejected"]:
        lines.append("")
    cfg = report["config"]
    sweep = report.get("torch_batch") or {}
    batch = sweep.get("chosen", cfg["torch_batch_sizes"][0])
    if sweep.get("sentences_per_s_by_size"):
        speeds = ", ".join(f"{n}: {v:,.1f}/s" for n, v in sweep["sentences_per_s_by_size"].items())
        how = (
            f" (its best batch: the predict function alone, one thread, on the table's first "
            f"{sweep['rows']} sentences in table order, by batch size {speeds})"
        )
    else:
        how = ""
    lines += [
        "Notes:",
        "",
        f"- ONNX variants: leanscore's text UDF ({report.get('engine', 'pandas')} UDF), rows "
        "ordered by token count within each Arrow "
        f"batch of {cfg['arrow_batch_rows']} and padded per call of {cfg['batch_size']} texts "
        "(one text per call for a batch-dependent model: dynamic int8); "
        f"ONNX Runtime optimisers disabled: {', '.join(cfg['disabled_optimizers']) or 'none'}.",
        f"- `{TORCH_VARIANT}`: the fp32 PyTorch model in `pyspark.ml.functions."
        f"predict_batch_udf`, batches of {batch} rows{how} in table order, each "
        "padded to its longest text (the documented pattern). The no-length-sort ONNX row is "
        f"its like-for-like ONNX counterpart: the same {batch} rows per call in table order, "
        "each call padded to its longest text; only the runtime differs.",
        f"- CPU: {env['cpu_model']}; AVX-512 VNNI: {env['avx512_vnni']}; AMX: {env['amx']}; "
        f"load average (1, 5, 15 min) before / after measuring: "
        f"{_loads(env.get('load_average_before'))} / {_loads(env.get('load_average'))}.",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in env['versions'].items() if v)}.",
        f"- Prepare {report['seconds']['prepare']} s, whole bench {report['seconds']['total']} s.",
    ]
    return "\n".join(lines) + "\n"
