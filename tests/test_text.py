"""The MiniLM text path: export parity, length-ordered tokenization, bad rows, the nightly job.

One real all-MiniLM-L6-v2 export per session; a few dozen real stdlib sentences, max length 64.
The 90 MB model reaches the Python workers by path (``path_threshold_bytes=0``), not by a new
broadcast per UDF, and their session cache serves every test from one session.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

MAX_LENGTH = 64
BY_PATH = {"path_threshold_bytes": 0}


@pytest.fixture(scope="session")
def sentences():
    from leanscore.bench.text_data import text_table

    return list(text_table(40, seed=3)["text"])


@pytest.fixture(scope="session")
def minilm(minilm_onnx):
    from leanscore.compression.text_model import load_encoder, load_tokenizer

    return load_encoder(), load_tokenizer(), minilm_onnx  # the session's export (conftest)


@pytest.fixture(scope="session")
def text_artifact(minilm, tmp_path_factory):
    from leanscore.compression.build import write_text_artifact

    _, _, onnx_bytes = minilm
    return write_text_artifact(
        onnx_bytes,
        tmp_path_factory.mktemp("text-artifacts") / "minilm-fp32",
        name="minilm-fp32",
        max_length=MAX_LENGTH,
    )


def _frame(spark, texts, start=0):
    pdf = pd.DataFrame({"doc_id": np.arange(start, start + len(texts)), "text": texts})
    return spark.createDataFrame(pdf, "doc_id long, text string")


def test_stdlib_text_table_is_real_deduplicated_english():
    from leanscore.bench.text_data import stdlib_sentences, text_table

    sentences = stdlib_sentences()
    assert len(sentences) > 2000 and len(set(sentences)) == len(sentences)
    table = text_table(50, seed=1)
    assert list(table.columns) == ["doc_id", "text"] and table["doc_id"].is_unique
    assert all(len(t.split()) >= 4 for t in table["text"])


def test_export_matches_pytorch_on_real_sentences(minilm, sentences):
    import onnxruntime as ort
    from leanscore.compression.text_model import tokenize, torch_embed

    encoder, tokenizer, onnx_bytes = minilm
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    expected = torch_embed(encoder, tokenizer, sentences, max_length=MAX_LENGTH)
    # Two batch shapes: the batch and sequence axes are both dynamic.
    for lo, hi in ((0, 7), (7, len(sentences))):
        chunk, ref = sentences[lo:hi], expected[lo:hi]
        ids, mask = tokenize(tokenizer, chunk, max_length=MAX_LENGTH)
        got = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        cosine = (got * ref).sum(axis=1)
        assert got.shape == (len(chunk), 384)
        assert cosine.min() > 0.999, cosine.min()
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)


def test_artifact_records_and_verifies_the_tokenizer(text_artifact):
    from leanscore.compression.artifact import Artifact, ModelIntegrityError

    manifest = text_artifact.manifest
    assert manifest.features.text_column == "text" and manifest.features.size == MAX_LENGTH
    assert manifest.task == "embedding" and "tokenizer.json" in manifest.files
    assert [i.name for i in manifest.inputs] == ["input_ids", "attention_mask"]
    tampered = text_artifact.path.parent / "tampered"
    import shutil

    shutil.copytree(text_artifact.path, tampered)
    (tampered / "tokenizer.json").write_text("{}")
    with pytest.raises(ModelIntegrityError, match="tokenizer.json"):
        Artifact.load(tampered)


def test_length_ordering_gives_same_embeddings_in_row_order(spark, text_artifact, sentences):
    """Sorted and unsorted sub-batches, Arrow and pandas UDFs: the same rows, in order."""
    from leanscore.compression.text_model import load_tokenizer, onnx_embed
    from leanscore.udfs.text import embed_dataframe

    df = _frame(spark, sentences)
    runs = {}
    for ordered, engine in ((True, "arrow"), (False, "arrow"), (True, "pandas")):
        out = embed_dataframe(
            df,
            text_artifact,
            key_columns=["doc_id"],
            sort_by_length=ordered,
            batch_size=8,
            engine=engine,
            **BY_PATH,
        ).toPandas()
        assert list(out["doc_id"]) == list(range(len(sentences)))  # rows back in order
        assert out["embedding_error"].isna().all()
        runs[ordered, engine] = np.stack(out["embedding"].to_list())
    assert np.allclose(runs[True, "arrow"], runs[False, "arrow"], atol=1e-5)
    assert np.array_equal(runs[True, "arrow"], runs[True, "pandas"])  # same batches, same bits
    reference, _ = onnx_embed(
        text_artifact.model_path.read_bytes(), load_tokenizer(), sentences, max_length=MAX_LENGTH
    )
    assert np.allclose(runs[True, "arrow"], reference, atol=1e-5)


@pytest.mark.parametrize("engine", ["arrow", "pandas"])
def test_flag_policy_nulls_bad_rows_and_names_the_reason(spark, text_artifact, sentences, engine):
    from leanscore.udfs.text import embed_dataframe

    long_text = " ".join(sentences) * 3  # well over 64 tokens and over max_chars below
    texts = [sentences[0], None, "", "   ", long_text, sentences[1]]
    out = (
        embed_dataframe(
            _frame(spark, texts),
            text_artifact,
            bad_rows="flag",
            max_chars=5_000,
            batch_size=4,
            engine=engine,
            **BY_PATH,
        )
        .orderBy("doc_id")
        .toPandas()
    )
    errors = list(out["embedding_error"])
    assert errors[0] is None and errors[5] is None
    assert "is null" in errors[1]
    assert "empty string" in errors[2] and "empty string" in errors[3]
    assert "characters, more than max_chars=5000" in errors[4]
    assert out["embedding"].iloc[1:5].isna().all()
    assert len(out["embedding"].iloc[0]) == 384 and len(out["embedding"].iloc[5]) == 384

    # Over max_length tokens but under max_chars: truncated by default, a bad row on request.
    medium = " ".join(sentences[:6])
    kept = embed_dataframe(
        _frame(spark, [medium]), text_artifact, bad_rows="flag", engine=engine, **BY_PATH
    ).first()
    assert kept["embedding_error"] is None and len(kept["embedding"]) == 384
    flagged = embed_dataframe(
        _frame(spark, [medium]),
        text_artifact,
        bad_rows="flag",
        long_text="bad",
        engine=engine,
        **BY_PATH,
    ).first()
    assert flagged["embedding"] is None
    assert "more than max_length=64 tokens" in flagged["embedding_error"]


def test_fail_policy_names_the_row_key(spark, text_artifact, sentences):
    from leanscore.udfs.text import embed_dataframe

    df = _frame(spark, [sentences[0], sentences[1], "", sentences[2]], start=100)
    with pytest.raises(Exception, match=r"doc_id=102.*empty string") as info:
        embed_dataframe(df, text_artifact, key_columns=["doc_id"], **BY_PATH).collect()
    assert "bad_rows='flag'" in str(info.value)


def test_text_udf_refuses_a_numeric_column_and_an_unknown_one(spark, text_artifact):
    from leanscore.udfs.text import embed_dataframe

    df = spark.createDataFrame([(1, 2.0)], "doc_id long, text double")
    with pytest.raises(TypeError, match="text column 'text' has type double"):
        embed_dataframe(df, text_artifact)
    with pytest.raises(ValueError, match="column 'body' is missing from the input"):
        embed_dataframe(df, text_artifact, text_column="body")


def test_embedding_job_writes_expected_schema_and_replaces_the_date(
    spark, text_artifact, sentences, tmp_path
):
    from leanscore.jobs.embed import EmbedConfig, score_text_table
    from pyspark.sql import functions as F
    from reliability_support import run_cli, write_yaml

    src = str(tmp_path / "docs")
    _frame(spark, sentences[:12] + [""]).write.format("delta").save(src)
    config = EmbedConfig.model_validate(
        {
            "artifact": str(text_artifact.path),
            "input": {"path": src},
            "output": {"path": str(tmp_path / "out")},
            "key_columns": ["doc_id"],
            "passthrough_columns": ["text"],
            "bad_rows": "flag",
            "summary_path": str(tmp_path / "summary.json"),
            **BY_PATH,
        }
    )
    summary = score_text_table(spark, config, "2026-11-28")
    assert summary["rows_out"] == 13 and summary["flagged_rows"] == 1
    assert summary["model_version"] == text_artifact.manifest.version
    # a rerun, through the command line, replaces the date's rows
    path = write_yaml(tmp_path / "embed.yaml", config.model_dump(exclude_none=True))
    rerun = run_cli("embed", "--config", path, "--run-date", "2026-11-28")
    assert rerun.exit_code == 0, rerun.output
    assert "embedded 13 rows" in rerun.output and "(1 flagged" in rerun.output
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "succeeded"
    out = spark.read.format("delta").load(str(tmp_path / "out"))
    fields = {f.name: f.dataType.simpleString() for f in out.schema.fields}
    assert fields == {
        "doc_id": "bigint",
        "text": "string",
        "embedding": "array<float>",
        "embedding_error": "string",
        "model_name": "string",
        "model_version": "string",
        "model_sha256": "string",
        "scored_at": "timestamp",
        "run_date": "date",
    }
    assert out.count() == 13
    assert out.where("embedding_error is null and size(embedding) = 384").count() == 12
    # the score job's checks, shared through the nightly core: a null key fails before anything
    # is written, with a failed summary, and the date's rows stay as they were
    nulled = str(tmp_path / "docs-null-key")
    _frame(spark, sentences[:3]).withColumn("doc_id", F.lit(None).cast("long")).write.format(
        "delta"
    ).save(nulled)
    bad = config.model_copy(update={"input": config.input.model_copy(update={"path": nulled})})
    with pytest.raises(ValueError, match="key column 'doc_id' is null in 3 of 3 input rows"):
        score_text_table(spark, bad, "2026-11-28")
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "failed"
    assert spark.read.format("delta").load(str(tmp_path / "out")).count() == 13


def test_fidelity_metrics_and_the_gate(minilm, sentences):
    """The embedding gate is the recipe engine's: mean cosine against min_fidelity and, when
    the recipe states it, the 1st-percentile cosine against min_cosine_p1."""
    from leanscore.bench.text_fidelity import embedding_fidelity
    from leanscore.compression.data import LabelledData
    from leanscore.compression.evaluate import fidelity
    from leanscore.compression.recipe import AccuracyGateError, Recipe, _gate

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(30, 16)).astype(np.float32)
    same = embedding_fidelity(ref, ref)
    assert same["cosine_mean"] == pytest.approx(1.0) and same["top10_overlap"] == 1.0
    noisy_rows = ref + rng.normal(scale=0.5, size=ref.shape)
    noisy = embedding_fidelity(ref, noisy_rows)
    assert noisy["cosine_min"] < noisy["cosine_mean"] < 1.0 and noisy["top10_overlap"] < 1.0

    sizes = {"params": 1, "onnx_bytes": 1, "zipped_bytes": 1, "rows_per_s_1thread": 1.0}
    final = {**sizes, "accuracy": None, "fidelity": fidelity(noisy_rows, ref, task="embedding")}
    baseline = {**sizes, "accuracy": None, "distinct_examples": 30}
    held_out = LabelledData(np.array([f"text {i}" for i in range(30)], dtype=object), None)
    mean, p1 = final["fidelity"]["cosine_mean"], final["fidelity"]["cosine_p1"]
    assert p1 < mean < 0.999

    def gate(**budget):
        recipe = Recipe(name="strict", steps=[{"step": "export"}], **budget)
        return _gate(recipe, baseline, dict(final), "embedding", held_out)

    strict = gate(min_fidelity=0.999, min_cosine_p1=0.99)
    assert not strict["passed"]
    assert "keeps mean cosine" in strict["message"] and "min_fidelity=0.999" in strict["message"]
    assert "1st-percentile cosine" in strict["message"]
    assert "min_cosine_p1=0.99" in strict["message"]
    only_p1 = gate(min_fidelity=round(mean - 0.01, 4), min_cosine_p1=round(p1 + 0.01, 4))
    assert not only_p1["passed"] and "keeps mean cosine" not in only_p1["message"]
    assert "1st-percentile cosine" in only_p1["message"]
    within = gate(min_fidelity=round(mean - 0.01, 4), min_cosine_p1=round(p1 - 0.01, 4))
    assert within["passed"] and within["cosine_p1"] == p1
    assert issubclass(AccuracyGateError, RuntimeError)


def test_text_sessions_leave_out_the_slow_fusion_and_recipes_keep_step_order(text_artifact):
    from leanscore.compression.recipe import Recipe
    from leanscore.udfs.families import family_for
    from leanscore.udfs.session_cache import SessionConfig

    family = family_for(text_artifact.manifest)
    assert family.name == "text_embedding"
    options = family.session_config(SessionConfig()).session_options()
    key = "optimization.disable_specified_optimizers"
    assert options.get_session_config_entry(key) == "SkipLayerNormFusion"
    assert options.intra_op_num_threads == 1
    # a run that names its own list (here: none) keeps it
    assert family.session_config(SessionConfig(disabled_optimizers=())).disabled_optimizers == ()
    with pytest.raises(ValueError, match="'prune_ffn' works on the PyTorch model and must come"):
        Recipe.model_validate(
            {
                "name": "late",
                "min_fidelity": 0.9,
                "steps": [
                    {"step": "export"},
                    {"step": "quantize", "mode": "dynamic_int8"},
                    {"step": "prune_ffn", "keep_ratio": 0.5},
                ],
            }
        )


def test_shipped_embedding_bench_config_is_valid_and_dispatched(tmp_path):
    from pathlib import Path

    from leanscore.bench.compare import resolve_path
    from leanscore.bench.embed import BenchEmbedConfig, is_embedding_config
    from leanscore.jobs.config import ConfigError, load_config, read_yaml

    conf = Path(__file__).resolve().parents[1] / "conf"
    path = conf / "bench-embed.yaml"
    assert is_embedding_config(read_yaml(path))
    assert not is_embedding_config(read_yaml(conf / "bench.yaml"))
    config = load_config(BenchEmbedConfig, path)
    from leanscore.compression.recipe import Recipe

    names = [load_config(Recipe, resolve_path(r, conf)).name for r in config.recipes]
    assert names[0] == "minilm-fp32" and len(names) >= 2
    bad = tmp_path / "bench.yaml"
    bad.write_text("kind: embedding\nrecipes: [x.yaml]\nrepeat: 3\n")
    with pytest.raises(ConfigError, match="repeat"):
        load_config(BenchEmbedConfig, bad)


def test_leanscore_bench_runs_the_embedding_bench(spark, minilm, tmp_path):
    """A tiny real run through the CLI: same table, fp32 + int8 ONNX in the text UDF and the
    PyTorch model in predict_batch_udf, warm-up, a timed round, report.json and report.md."""
    from pathlib import Path

    import yaml
    from leanscore.jobs.cli import app
    from typer.testing import CliRunner

    conf = Path(__file__).resolve().parents[1] / "conf"
    out = tmp_path / "report"
    strict = yaml.safe_load((conf / "recipes" / "minilm-dynamic-int8.yaml").read_text())
    strict.update(name="minilm-int8-strict", min_fidelity=0.9999)
    strict_recipe = tmp_path / "minilm-int8-strict.yaml"
    strict_recipe.write_text(yaml.safe_dump(strict))
    sets = {
        "workdir": str(tmp_path / "work"),
        "rows": 24,
        "partitions": 2,
        "repeats": 1,
        "warmup_rows": 2,
        "fidelity_rows": 24,
        "eval_rows": 16,
        "train_rows": 16,
        "max_length": 64,
        "include_unsorted_fp32": False,
        "bound_rows": 12,
        # a recipe over its budget is reported, not timed: the cheapest such recipe on MiniLM
        "recipes": json.dumps(
            [
                str(conf / "recipes" / "minilm-fp32.yaml"),
                str(conf / "recipes" / "minilm-dynamic-int8.yaml"),
                str(strict_recipe),
            ]
        ),
    }
    args = ["bench", "--config", str(conf / "bench-embed.yaml"), "--out", str(out)]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "| minilm-dynamic-int8 |" in result.output
    report = json.loads((out / "report.json").read_text())
    variants = {v["name"]: v for v in report["variants"]}
    assert list(variants) == ["minilm-fp32", "minilm-dynamic-int8", "pytorch predict_batch_udf"]
    fp32, int8, torch_ = variants.values()
    assert fp32["x_vs_fp32_onnx"] == 1.0 and fp32["fidelity"]["cosine_mean"] == pytest.approx(1.0)
    assert torch_["fidelity"]["cosine_min"] > 0.999  # the same model, in PyTorch
    assert (
        0.97 < int8["fidelity"]["cosine_mean"] < 1.0 and int8["model_bytes"] < fp32["model_bytes"]
    )
    assert all(v["rows"] == 24 and v["sentences_per_s"] > 0 for v in variants.values())
    assert int8["gate"]["passed"] and report["targets"]["variant"] == "minilm-dynamic-int8"
    # the pruned recipe is over its budget on this data: reported with its numbers, not timed
    (strict,) = report["rejected"]
    assert strict["name"] == "minilm-int8-strict" and "keeps mean cosine" in strict["message"]
    bound = report["bound"]
    assert bound["no_model"]["sentences_per_s"] > 0
    assert bound["ort_alone_1thread"]["x_vs_fp32_onnx"]["minilm-fp32"] == 1.0
    md = (out / "report.md").read_text()
    assert "| minilm-fp32 |" in md
    # PyTorch ran at the fastest batch of a measured sweep over the table's sentences
    sweep = report["torch_batch"]
    speeds = sweep["sentences_per_s_by_size"]
    assert set(speeds) == {"16", "32", "64", "128"} and sweep["rows"] == 24
    assert speeds[str(sweep["chosen"])] == max(speeds.values())
    assert torch_["path"] == f"predict_batch_udf, batches of {sweep['chosen']} in table order"
    assert f"batches of {sweep['chosen']} rows (its best batch" in md


@pytest.mark.slow
def test_ffn_pruning_refit_on_real_text_beats_weight_norm_ranking(minilm):
    from leanscore.bench.text_data import stdlib_sentences
    from leanscore.compression.text_model import torch_embed
    from leanscore.compression.text_prune import ffn_grams, prune_ffn

    teacher, tokenizer, _ = minilm
    texts = stdlib_sentences()
    calibration, held_out = texts[:300], texts[-60:]
    grams = ffn_grams(teacher, tokenizer, calibration, max_length=MAX_LENGTH)
    assert len(grams) == 6 and grams[0].shape == (1537, 1537)

    def cosine(model) -> float:
        a, b = (
            torch_embed(m, tokenizer, held_out, max_length=MAX_LENGTH) for m in (teacher, model)
        )
        return float((a * b).sum(axis=1).mean())

    refit = prune_ffn(teacher, keep_ratio=0.75, grams=grams)
    by_norm = prune_ffn(teacher, keep_ratio=0.75)
    for model in (refit, by_norm):
        assert model.bert.encoder.layer[0].intermediate.dense.out_features == 1152
        assert model.bert.encoder.layer[0].output.dense.in_features == 1152
    assert teacher.bert.encoder.layer[0].intermediate.dense.out_features == 1536  # a copy
    refit_cos, norm_cos = cosine(refit), cosine(by_norm)
    assert refit_cos > 0.95 and refit_cos > norm_cos + 0.05, (refit_cos, norm_cos)
    assert cosine(prune_ffn(teacher, keep_ratio=1.0, grams=grams)) > 0.9999


def test_structural_steps_pin_their_bad_arguments(minilm):
    from leanscore.compression.text_prune import drop_layers, ffn_grams, prune_ffn

    teacher, tokenizer, _ = minilm
    with pytest.raises(ValueError, match=r"distinct indices in 0\.\.5, got \[0, 6\]"):
        drop_layers(teacher, keep=[0, 6])
    with pytest.raises(ValueError, match="ffn_keep_ratio must be in \\(0, 1\\], got 1.5"):
        prune_ffn(teacher, keep_ratio=1.5)
    with pytest.raises(ValueError, match="got 2 calibration Gram matrices for 6 layers"):
        prune_ffn(teacher, keep_ratio=0.5, grams=[None, None])
    with pytest.raises(ValueError, match="needs calibration texts"):
        ffn_grams(teacher, tokenizer, [])


def _run_minilm_recipe(recipe: dict, sentences: list[str], *, train_rows: int):
    """``recipe`` on MiniLM through the recipe engine, as ``leanscore compress`` runs a Hugging
    Face encoder with task embedding: the first ``train_rows`` sentences train and calibrate,
    the rest gate."""
    from leanscore.compression.data import LabelledData
    from leanscore.compression.recipe import Recipe, run_recipe
    from leanscore.compression.sources.hf_encoder import TextEmbeddingInputs, load_source
    from leanscore.compression.text_model import minilm_dir

    encoder, _ = load_source(minilm_dir(), max_length=MAX_LENGTH)
    inputs = TextEmbeddingInputs.of(minilm_dir(), max_length=MAX_LENGTH)

    def rows(texts: list[str], name: str) -> LabelledData:
        return inputs.attach(LabelledData(np.array(texts, dtype=object), None), name=name)

    return run_recipe(
        Recipe.model_validate(recipe),
        encoder,
        train=rows(sentences[:train_rows], "train"),
        evaluation=rows(sentences[train_rows:], "evaluation"),
        task="embedding",
        family="text_embedding",
        exporter=inputs.exporter(),
    )


EXPORT_TEXT = {"step": "export", "opset": 17}


@pytest.mark.slow
def test_a_pruning_recipe_over_its_budget_is_rejected_with_its_numbers(sentences):
    from leanscore.compression.recipe import AccuracyGateError

    recipe = {
        "name": "ffn-half",
        "min_fidelity": 0.99,
        "steps": [
            {"step": "prune_ffn", "keep_ratio": 0.5, "calibration_rows": 20},
            EXPORT_TEXT,
            {"step": "quantize", "mode": "dynamic_int8", "pre_process": False},
        ],
    }
    rejected = r"recipe 'ffn-half' keeps mean cosine 0\.\d+, under its budget min_fidelity=0.99"
    with pytest.raises(AccuracyGateError, match=rejected) as err:
        _run_minilm_recipe(recipe, sentences, train_rows=20)
    metrics = err.value.metrics
    prune, export, quant = metrics["steps"]
    assert prune["calibration_rows"] == 20 and quant["step"] == "quantize"
    assert prune["intermediate_size"] == 768
    assert quant["onnx_bytes"] < prune["onnx_bytes"] < metrics["baseline"]["onnx_bytes"]
    assert metrics["final"]["fidelity"]["cosine_mean"] < 0.99 and not metrics["gate"]["passed"]


@pytest.mark.slow
def test_drop_distill_and_static_int8_with_the_sensitivity_sweep(sentences):
    """The rest of the text steps on real text: drop layers, distil the student from the fp32
    model, static QDQ int8 calibrated on training sentences, leaving in float the MatMul
    whose quantization costs most cosine."""
    import onnx

    recipe = {
        "name": "two-layers",
        "min_fidelity": 0.05,
        "steps": [
            {"step": "drop_layers", "keep": [0, 5]},
            {"step": "distill_embeddings", "epochs": 1, "lr": 1e-4, "batch_size": 8},
            EXPORT_TEXT,
            {
                "step": "quantize",
                "mode": "static_int8",
                "calibration_rows": 8,
                "exclude_most_sensitive": 1,
                "pre_process": False,
            },
        ],
    }
    result = _run_minilm_recipe(recipe, sentences, train_rows=24)
    metrics = result.metrics
    drop, distill, _, quant = metrics["steps"]
    assert drop["layers_before"] == 6 and drop["layers"] == 2
    assert len(distill["losses"]) == 1 and distill["train_rows"] == 24
    sweep = quant["sensitivity"]
    assert len(sweep) == 5 and sweep[0]["fidelity"] >= sweep[-1]["fidelity"]
    assert quant["excluded_nodes"] == [sweep[0]["node"]]
    graph = onnx.load_model_from_string(result.onnx_bytes).graph
    producer = {out: n.op_type for n in graph.node for out in n.output}
    weight_source = {
        n.name: producer.get(n.input[1], "initializer") for n in graph.node if n.op_type == "MatMul"
    }
    assert weight_source[sweep[0]["node"]] == "initializer"  # left in float
    assert weight_source[sweep[1]["node"]] == "DequantizeLinear"  # quantized (QDQ)
    assert metrics["gate"]["passed"] and 0.05 < metrics["final"]["fidelity"]["cosine_mean"] < 1.0


@pytest.mark.slow
def test_dynamic_int8_pre_processes_the_minilm_export(minilm, sentences, tmp_path, monkeypatch):
    """quant_pre_process's symbolic shape inference fails on BERT's position-id slice; the
    pre-processing falls back to ONNX shape inference and the quantized model still embeds."""
    from leanscore.bench.text_fidelity import embedding_fidelity
    from leanscore.compression.quantization import dynamic_int8
    from leanscore.compression.text_model import onnx_embed

    _, tokenizer, onnx_bytes = minilm
    monkeypatch.chdir(tmp_path)
    reference, _ = onnx_embed(onnx_bytes, tokenizer, sentences, max_length=MAX_LENGTH)
    plain = dynamic_int8(onnx_bytes, pre_process=False)
    processed = dynamic_int8(onnx_bytes)  # pre_process=True is the default
    embeddings = [
        onnx_embed(b, tokenizer, sentences, max_length=MAX_LENGTH)[0] for b in (plain, processed)
    ]
    fidelity = [embedding_fidelity(reference, e)["cosine_mean"] for e in embeddings]
    assert fidelity[1] > 0.98 and abs(fidelity[0] - fidelity[1]) < 0.002, fidelity
    # onnxruntime dumps the model it gave up on (90 MB) into the working directory: not left
    assert list(tmp_path.iterdir()) == []


def _length_log_model() -> bytes:
    """input_ids, attention_mask -> [log(tokens - 3), 1]: -inf for a one-word text (3 tokens
    with [CLS] and [SEP]), a finite embedding for longer ones."""
    from onnx import TensorProto, helper

    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, [None, None])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [None, None])
    out = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [None, 2])
    three = helper.make_tensor("three", TensorProto.FLOAT, [], [3.0])
    one = helper.make_tensor("one", TensorProto.FLOAT, [1, 1], [1.0])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["maskf", "axes"], ["length"], keepdims=1),
        helper.make_node("Sub", ["length", "three"], ["excess"]),
        helper.make_node("Log", ["excess"], ["log"]),
        helper.make_node("Shape", ["input_ids"], ["ids_shape"]),
        helper.make_node("Expand", ["one", "ids_shape"], ["ones_wide"]),
        helper.make_node("ReduceMax", ["ones_wide", "axes"], ["second"], keepdims=1),
        helper.make_node("Concat", ["log", "second"], ["embedding"], axis=1),
    ]
    graph = helper.make_graph(nodes, "length_log", [ids, mask], [out], [three, one, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model.SerializeToString()


@pytest.mark.parametrize("policy", ["flag", "fail"])
def test_non_finite_embeddings_are_flagged_or_fail_never_written(policy, tmp_path):
    """An embedding with NaN or infinity is never written as a result: under ``flag`` the row
    gets a null embedding and the reason, under ``fail`` the job stops naming the row."""
    import pyarrow as pa
    from leanscore.compression.build import write_text_artifact
    from leanscore.udfs.arrow_path import to_arrow
    from leanscore.udfs.distribution import ModelSource
    from leanscore.udfs.kernel import Scorer
    from leanscore.udfs.options import ScoringOptions
    from leanscore.udfs.pandas_path import _to_frame
    from leanscore.udfs.text import BadTextError

    artifact = write_text_artifact(
        _length_log_model(), tmp_path / "length-log", name="length-log", max_length=MAX_LENGTH
    )
    options = ScoringOptions(bad_rows=policy)
    source = ModelSource("length-log", artifact.sha256, "path", path=str(artifact.model_path))
    scorer = Scorer.build(artifact.manifest, source, options.session_config(), options=options)
    scorer.family.attach(artifact)
    session, input_name = scorer.session()
    texts = ["two words here", "hello", "a longer sentence of words"]
    batch = scorer.family.from_texts(texts)
    if policy == "fail":
        with pytest.raises(BadTextError, match=r"key 'k2'.*-inf \(not finite\).*'text'"):
            scorer.score(session, input_name, batch, ["k1", "k2", "k3"].__getitem__)
        return
    scored = scorer.score(session, input_name, batch, None)
    frame = _to_frame(scored, scorer)
    assert frame["embedding"][1] is None
    assert "not finite" in frame["error"][1] and "'text'" in frame["error"][1]
    for i in (0, 2):
        assert frame["error"][i] is None and np.isfinite(frame["embedding"][i]).all()
    arrow = pa.StructArray.from_arrays(to_arrow(scored, scorer), names=list(scorer.fields))
    rows = arrow.to_pylist()
    assert rows[1]["embedding"] is None and "not finite" in rows[1]["error"]
    assert [r["embedding"] for r in rows][::2] == [list(frame["embedding"][i]) for i in (0, 2)]


def test_mlflow_pyfunc_embeds_texts_with_the_family(text_artifact, sentences):
    """The registered model's pyfunc scores texts through the same family: a DataFrame column or
    an array of strings, the embeddings of the artifact's own export."""
    from leanscore.compression.text_model import load_tokenizer, onnx_embed
    from leanscore.udfs.mlflow_pyfunc import LeanscorePyfunc

    texts = sentences[:6]
    model = LeanscorePyfunc(text_artifact.path)
    by_frame = np.stack(model.predict(pd.DataFrame({"text": texts}))["embedding"].to_list())
    by_array = np.stack(model.predict(np.array(texts, dtype=object))["embedding"].to_list())
    np.testing.assert_array_equal(by_frame, by_array)
    reference, _ = onnx_embed(
        text_artifact.model_path.read_bytes(), load_tokenizer(), texts, max_length=MAX_LENGTH
    )
    assert np.allclose(by_frame, reference, atol=1e-5)
    with pytest.raises(Exception, match="column 'text' is an empty string"):
        model.predict(pd.DataFrame({"text": ["fine words here", " "]}))
