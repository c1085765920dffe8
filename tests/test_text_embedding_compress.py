"""A Hugging Face sentence encoder through ``leanscore compress`` and ``leanscore embed``: a tiny
BERT encoder (hidden 32, 2 layers, the MiniLM tokenizer's vocabulary, built from a config: no
weights needed for embeddings) compressed by a text recipe (FFN pruning, export, dynamic int8)
on real docstring sentences from Delta, then embedding a Delta table into Delta; a recipe over
its fidelity budget raises the one gate error and writes nothing."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from reliability_support import run_cli

MAX_LENGTH = 64
HIDDEN = 32


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    """A 2-layer BERT encoder saved with save_pretrained, tokenizer.json included."""
    import torch
    from leanscore.compression.text_model import minilm_dir
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(minilm_dir() / "tokenizer.json"))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-encoder")
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tables(spark, tmp_path_factory):
    """Disjoint real sentences: train (calibration of the FFN pruning), held out (the gate),
    and the table the nightly job embeds (plus one empty text)."""
    from leanscore.bench.text_data import text_table

    texts = list(text_table(150, seed=7)["text"])
    root = tmp_path_factory.mktemp("text-tables")
    parts = {"train": texts[:60], "held_out": texts[60:120], "nightly": texts[120:] + [""]}
    paths = {}
    for name, rows in parts.items():
        frame = pd.DataFrame({"doc_id": np.arange(len(rows), dtype=np.int64), "text": rows})
        paths[name] = str(root / name)
        spark.createDataFrame(frame, "doc_id long, text string").write.format("delta").save(
            paths[name]
        )
    return paths, parts


def _config(tmp_path, encoder_dir, tables, recipe: dict, name: str, **extra) -> str:
    paths, _ = tables
    table = {"kind": "table", "format": "delta", "text_column": "text"}
    config = {
        "task": "embedding",
        "model": {"kind": "huggingface", "path": str(encoder_dir), "max_length": MAX_LENGTH},
        "recipe": recipe,
        "data": {
            "train": {**table, "path": paths["train"]},
            "evaluation": {**table, "path": paths["held_out"]},
        },
        **extra,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


PRUNE_EXPORT_INT8 = [
    {"step": "prune_ffn", "keep_ratio": 0.5, "calibration_rows": 40},
    {"step": "export"},
    {"step": "quantize", "mode": "dynamic_int8"},
]


def test_compress_an_encoder_and_embed_a_delta_table(spark, encoder_dir, tables, tmp_path):
    import onnxruntime as ort
    from leanscore.compression.artifact import Artifact
    from leanscore.compression.text_model import load_tokenizer, tokenize

    recipe = {
        "name": "tiny-ffn50-int8",
        "min_fidelity": 0.9,
        "min_cosine_p1": 0.8,
        "steps": PRUNE_EXPORT_INT8,
    }
    config = _config(tmp_path, encoder_dir, tables, recipe, "compress")
    out = tmp_path / "artifact"
    result = run_cli("compress", "--config", config, "--out", out)
    assert result.exit_code == 0, result.output
    assert "mean cosine to the model as given" in result.output
    artifact = Artifact.load(out)  # model.onnx and tokenizer.json checked against the hashes
    manifest = artifact.manifest
    assert manifest.task == "embedding" and manifest.family == "text_embedding"
    assert manifest.features.text_column == "text" and manifest.features.size == MAX_LENGTH
    assert "tokenizer.json" in manifest.files
    assert [i.name for i in manifest.inputs] == ["input_ids", "attention_mask"]
    metrics = manifest.metrics
    prune, export, quant = metrics["steps"]
    assert prune["calibration_rows"] == 40 and prune["intermediate_size"] == 32
    assert export["parity_max_abs_diff"] < 1e-4 and quant["mode"] == "dynamic_int8"
    assert quant["onnx_bytes"] < metrics["baseline"]["onnx_bytes"]
    gate = metrics["gate"]
    assert gate["passed"] and gate["rows"] == 60 and gate["fidelity"] >= 0.9
    assert gate["cosine_p1"] >= 0.8 and manifest.data["model_source"]["kind"] == "huggingface"

    # the nightly embedding job: Delta in, Delta out, the empty text flagged
    paths, parts = tables
    summary = tmp_path / "summary.json"
    embed_config = {
        "artifact": str(out),
        "input": {"path": paths["nightly"]},
        "output": {"path": str(tmp_path / "embeddings")},
        "key_columns": ["doc_id"],
        "bad_rows": "flag",
        "summary_path": str(summary),
    }
    embed_path = tmp_path / "embed.yaml"
    embed_path.write_text(yaml.safe_dump(embed_config))
    rows = len(parts["nightly"])
    ran = run_cli("embed", "--config", embed_path, "--run-date", "2026-11-30")
    assert ran.exit_code == 0, ran.output
    assert f"embedded {rows} rows" in ran.output
    assert json.loads(summary.read_text())["flagged_rows"] == 1
    written = (
        spark.read.format("delta").load(str(tmp_path / "embeddings")).orderBy("doc_id").toPandas()
    )
    assert list(written["doc_id"]) == list(range(rows))
    assert "empty string" in written["embedding_error"].iloc[-1]
    got = np.stack(written["embedding"].iloc[:-1].to_list())
    # the same texts run directly through the artifact's model, one at a time
    session = ort.InferenceSession(str(artifact.model_path), providers=["CPUExecutionProvider"])
    tokenizer = load_tokenizer(out / "tokenizer.json")
    expected = np.concatenate(
        [
            session.run(
                None,
                dict(
                    zip(
                        ("input_ids", "attention_mask"),
                        tokenize(tokenizer, [text], max_length=MAX_LENGTH),
                        strict=True,
                    )
                ),
            )[0]
            for text in parts["nightly"][:-1]
        ]
    )
    assert got.shape == (rows - 1, HIDDEN)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
    # Dynamic int8 computes activation scales per call, so the job scores each text alone:
    # what it wrote is what the model gives each text on its own, to float noise.
    tolerance = 1e-6  # float noise between two sessions of the same graph
    alone_gap = float(np.abs(got - expected).max())
    assert alone_gap < tolerance, alone_gap
    # The control: the same texts in one padded call (batched int8) move by far more, so the
    # check above would catch a return to batched calls.
    ids, mask = tokenize(tokenizer, list(parts["nightly"][:-1]), max_length=MAX_LENGTH)
    batched = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    assert float(np.abs(batched - expected).max()) > 10 * tolerance


def test_a_text_recipe_over_its_budget_raises_the_gate_error_and_writes_nothing(
    spark, encoder_dir, tables, tmp_path
):
    from leanscore.compression.recipe import AccuracyGateError

    recipe = {
        "name": "one-layer-int8",
        "min_fidelity": 0.99999,
        "steps": [{"step": "drop_layers", "keep": [0]}, *PRUNE_EXPORT_INT8[1:]],
    }
    config = _config(tmp_path, encoder_dir, tables, recipe, "over-budget")
    out = tmp_path / "never"
    result = run_cli("compress", "--config", config, "--out", out)
    assert result.exit_code == 1, result.output
    message = " ".join(result.output.split())
    assert "recipe 'one-layer-int8' keeps mean cosine" in message
    assert "min_fidelity=0.99999" in message and "no artifact was written" in message
    assert not out.exists()
    assert AccuracyGateError.__name__ not in message  # one line, not a traceback


def test_steps_that_do_not_fit_an_encoder_are_refused_before_any_work(
    encoder_dir, tables, tmp_path
):
    tabular = {"name": "wrong", "min_fidelity": 0.9, "steps": [{"step": "distill"}]}
    result = run_cli(
        "compress",
        "--config",
        _config(tmp_path, encoder_dir, tables, tabular, "tabular-step"),
        "--out",
        tmp_path / "a",
    )
    message = " ".join(result.output.split())
    assert result.exit_code == 1
    assert "steps.0 ('distill') applies to image, tabular models; this model is text_embedding" in (
        message
    )
    assert "drop_layers" in message and not (tmp_path / "a").exists()
    regression = _config(tmp_path, encoder_dir, tables, tabular, "regression", task="regression")
    result = run_cli("compress", "--config", regression, "--out", tmp_path / "b")
    assert result.exit_code == 1 and "not 'regression'" in result.output


@pytest.mark.slow
def test_minilm_through_compress_and_embed(spark, tables, tmp_path):
    """all-MiniLM-L6-v2 (shipped offline) with the packaged dynamic int8 recipe through
    ``leanscore compress``, gated on held-out sentences, then the nightly embedding job; its
    embeddings stay within the recipe's cosine budget of the fp32 encoder's."""
    from pathlib import Path

    import torch
    from leanscore.compression.artifact import Artifact
    from leanscore.compression.text_model import load_encoder, load_tokenizer, minilm_dir, tokenize

    conf = Path(__file__).resolve().parents[1] / "conf" / "recipes"
    recipe = yaml.safe_load((conf / "minilm-dynamic-int8.yaml").read_text())
    config = _config(tmp_path, minilm_dir(), tables, recipe, "minilm")
    out = tmp_path / "minilm-int8"
    result = run_cli("compress", "--config", config, "--out", out)
    assert result.exit_code == 0, result.output
    manifest = Artifact.load(out).manifest
    gate, steps = manifest.metrics["gate"], manifest.metrics["steps"]
    assert gate["passed"] and gate["rows"] == 60
    assert gate["fidelity"] >= 0.99 and gate["cosine_p1"] >= 0.97
    assert steps[-1]["onnx_bytes"] * 3 < manifest.metrics["baseline"]["onnx_bytes"]

    paths, parts = tables
    embed_path = tmp_path / "embed.yaml"
    embed_path.write_text(
        yaml.safe_dump(
            {
                "artifact": str(out),
                "input": {"path": paths["nightly"]},
                "output": {"path": str(tmp_path / "embeddings")},
                "key_columns": ["doc_id"],
                "bad_rows": "flag",
            }
        )
    )
    ran = run_cli("embed", "--config", embed_path, "--run-date", "2026-11-30")
    assert ran.exit_code == 0, ran.output
    written = (
        spark.read.format("delta").load(str(tmp_path / "embeddings")).orderBy("doc_id").toPandas()
    )
    texts = parts["nightly"][:-1]
    got = np.stack(written["embedding"].iloc[:-1].to_list())
    assert got.shape == (len(texts), 384) and written["embedding_error"].iloc[:-1].isna().all()
    encoder, tokenizer = load_encoder(), load_tokenizer(out / "tokenizer.json")
    ids, mask = tokenize(tokenizer, texts, max_length=MAX_LENGTH)
    with torch.no_grad():
        expected = encoder(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    cosine = (got * expected).sum(axis=1) / np.linalg.norm(expected, axis=1)
    assert float(cosine.mean()) >= 0.99 and float(cosine.min()) >= 0.97
    _each_text_is_embedded_alone(out, texts, got)


def _each_text_is_embedded_alone(folder, texts, written):
    """Dynamic int8 takes its activation scales from the whole call, so a text's embedding
    would depend on the texts it is called with (the control: one call of all of them). The
    job calls such a model once per text: each written embedding is bitwise the text's own."""
    import onnxruntime as ort
    from leanscore.compression.artifact import Artifact
    from leanscore.compression.text_inputs import encode, feeds, tokenizer_from_bytes
    from leanscore.udfs.families import family_for
    from leanscore.udfs.session_cache import SessionConfig

    artifact = Artifact.load(folder)
    assert artifact.manifest.batch_dependent
    family = family_for(artifact.manifest)
    options = family.session_config(SessionConfig()).session_options()
    session = ort.InferenceSession(str(artifact.model_path), options)
    tokenizer = tokenizer_from_bytes(artifact.read_file("tokenizer.json"), MAX_LENGTH)
    names = [i.name for i in session.get_inputs()]
    alone = np.stack([session.run(None, feeds(encode(tokenizer, [t]), names))[0][0] for t in texts])
    np.testing.assert_array_equal(written, alone)
    together = session.run(None, feeds(encode(tokenizer, texts), names))[0]
    assert np.abs(together - alone).max() > 1e-4  # the control: batched, rows move
