"""A text-specific compression pipeline for sentence encoders, with the recipe gate semantics.

``recipe`` feeds one float32 matrix to a model; a sentence encoder takes token ids
and an attention mask, so text models run through this smaller pipeline instead. It keeps the
same rules: a recipe states its fidelity budget (``min_fidelity`` on the mean cosine to the
fp32 model, and optionally ``min_cosine_p1``); a result over budget raises
``TextGateError`` with the numbers and nothing is written.

Steps, in order: torch-side (``drop_layers``, ``prune_ffn``, ``distill``), then export, then
ONNX-side (``dynamic_int8``, ``static_int8``), each optionally excluding nodes by name, by op
type, or by a sensitivity sweep (``exclude_most_sensitive``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Literal

import numpy as np
import onnx
import onnxruntime as ort
from leanscore.compression.errors import LeanscoreError
from leanscore.compression.quantize import dynamic_int8, nodes_to_exclude, static_int8
from leanscore.compression.text_fidelity import embedding_fidelity
from leanscore.compression.text_model import (
    baseline_onnx,
    export_text_onnx,
    load_encoder,
    load_tokenizer,
    tokenize,
    torch_embed,
)
from leanscore.compression.text_prune import distill, drop_layers, ffn_grams, prune_ffn
from onnxruntime.quantization import CalibrationDataReader
from pydantic import BaseModel, ConfigDict, Field, model_validator

Progress = Callable[[str], None] | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DropLayers(_Strict):
    step: Literal["drop_layers"]
    keep: list[int] = Field(min_length=1)


class PruneFFN(_Strict):
    step: Literal["prune_ffn"]
    keep_ratio: float = Field(gt=0, le=1)
    refit: bool = Field(
        default=True,
        description="rank neurons on calibration text and refit the down projection "
        "(least squares); false: rank by weight norms, no refit",
    )
    calibration_rows: int = Field(default=1600, gt=0, description="training sentences used")


class Distill(_Strict):
    step: Literal["distill"]
    epochs: int = Field(default=2, gt=0)
    lr: float = Field(default=1e-4, gt=0)
    batch_size: int = Field(default=32, gt=0)


class _Quant(_Strict):
    per_channel: bool = True
    exclude_nodes: list[str] = Field(default_factory=list)
    exclude_op_types: list[str] = Field(default_factory=list)
    exclude_most_sensitive: int = Field(
        default=0, ge=0, description="sweep MatMuls one by one; leave the N costliest in float"
    )


class DynamicInt8(_Quant):
    step: Literal["dynamic_int8"]


class StaticInt8(_Quant):
    step: Literal["static_int8"]
    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_rows: int = Field(default=256, gt=0)


TextStep = Annotated[
    DropLayers | PruneFFN | Distill | DynamicInt8 | StaticInt8, Field(discriminator="step")
]


class TextRecipe(_Strict):
    name: str = Field(min_length=1)
    min_fidelity: float = Field(gt=0, le=1, description="smallest mean cosine to fp32 accepted")
    min_cosine_p1: float | None = Field(default=None, gt=0, le=1)
    max_length: int = Field(default=128, gt=0, le=512)
    steps: list[TextStep] = Field(default_factory=list)

    @model_validator(mode="after")
    def _torch_steps_first(self) -> TextRecipe:
        names = [s.step for s in self.steps]
        onnx_at = [i for i, s in enumerate(self.steps) if isinstance(s, _Quant)]
        late = (
            [s.step for s in self.steps[onnx_at[0] :] if not isinstance(s, _Quant)]
            if onnx_at
            else []
        )
        if late:
            raise ValueError(
                f"steps {names}: {late} come after an ONNX quantization step; torch-side steps "
                "(drop_layers, prune_ffn, distill) must come first"
            )
        return self


class TextGateError(LeanscoreError, RuntimeError):
    """The compressed model is further from the fp32 model than the recipe allows."""

    def __init__(self, message: str, *, metrics: dict):
        super().__init__(message)
        self.metrics = metrics


class _TokenReader(CalibrationDataReader):
    """Calibration batches of real text for ``quantize_static``, padded per batch."""

    def __init__(self, tokenizer, texts: list[str], *, max_length: int, batch_size: int = 32):
        self.batches = []
        for i in range(0, len(texts), batch_size):
            ids, mask = tokenize(tokenizer, texts[i : i + batch_size], max_length=max_length)
            self.batches.append({"input_ids": ids, "attention_mask": mask})
        self.rewind()

    def get_next(self) -> dict | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.batches)


# The session options the text UDF uses (udfs/text.py DEFAULT_DISABLED_OPTIMIZERS: ONNX Runtime's
# SkipLayerNormalization kernel is slower on one thread than the Add + LayerNormalization it
# fuses), so the speeds recorded here are the ones the executors see.
DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)


def onnx_embed(
    onnx_bytes: bytes,
    tokenizer,
    texts: list[str],
    *,
    max_length: int,
    batch_size: int = 32,
    disabled_optimizers: tuple[str, ...] = DISABLED_OPTIMIZERS,
) -> tuple[np.ndarray, float]:
    """(embeddings in text order, sentences/s on one thread with length-sorted batches)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if disabled_optimizers:
        options.add_session_config_entry(
            "optimization.disable_specified_optimizers", ",".join(disabled_optimizers)
        )
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    tokenizer.enable_truncation(max_length)
    lengths = [len(e.ids) for e in tokenizer.encode_batch(texts)]
    order = np.argsort(lengths, kind="stable")
    out: np.ndarray | None = None
    start = time.perf_counter()
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        ids, mask = tokenize(tokenizer, [texts[j] for j in idx], max_length=max_length)
        result = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        if out is None:
            out = np.empty((len(texts), result.shape[1]), dtype=np.float32)
        out[idx] = result
    return out, len(texts) / (time.perf_counter() - start)


def _matmuls(onnx_bytes: bytes) -> list[str]:
    graph = onnx.load_model_from_string(onnx_bytes).graph
    names = {i.name for i in graph.initializer}
    return [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in names]


def _quantize(onnx_bytes: bytes, step, excluded: list[str], calib) -> bytes:
    if isinstance(step, DynamicInt8):
        return dynamic_int8(
            onnx_bytes, per_channel=step.per_channel, nodes_to_exclude=excluded, pre_process=False
        )
    return static_int8(
        onnx_bytes,
        calib(),
        per_channel=step.per_channel,
        method=step.method,
        nodes_to_exclude=excluded,
        pre_process=False,
    )


def sensitivity_sweep(
    onnx_bytes: bytes, step, *, reference: np.ndarray, embed, calib, progress: Progress = None
) -> list[dict]:
    """For each weight MatMul: the mean cosine when only it stays in float, highest first."""
    results = []
    for name in _matmuls(onnx_bytes):
        quantized = _quantize(onnx_bytes, step, [name], calib)
        fid = embedding_fidelity(reference, embed(quantized)[0])
        results.append({"node": name, "cosine_mean": fid["cosine_mean"]})
        if progress:
            progress(f"sweep {name}: mean cosine {fid['cosine_mean']}")
    return sorted(results, key=lambda r: -r["cosine_mean"])


def compress_text(
    recipe: TextRecipe,
    *,
    train_texts: list[str],
    eval_texts: list[str],
    progress: Progress = None,
) -> tuple[bytes, dict]:
    """Run ``recipe``; return (ONNX bytes, metrics). Raises ``TextGateError`` over budget."""
    say = progress or (lambda _msg: None)
    tokenizer = load_tokenizer()
    teacher = load_encoder()
    max_length = recipe.max_length
    fp32 = baseline_onnx()
    reference, fp32_speed = onnx_embed(fp32, tokenizer, eval_texts, max_length=max_length)
    metrics: dict = {
        "baseline": {
            "onnx_bytes": len(fp32),
            "sentences_per_s_1thread": round(fp32_speed, 1),
            "layers": len(teacher.bert.encoder.layer),
        },
        "steps": [],
    }

    def embed(b: bytes):
        return onnx_embed(b, tokenizer, eval_texts, max_length=max_length)

    def calib(rows: int = 256):
        return _TokenReader(tokenizer, train_texts[:rows], max_length=max_length)

    model, onnx_bytes, teacher_train = teacher, None, None

    def exported() -> bytes:  # the torch model as it stands (the cached export if untouched)
        return fp32 if model is teacher else export_text_onnx(model)

    for step in recipe.steps:
        started = time.perf_counter()
        record: dict = {"step": step.step}
        if isinstance(step, DropLayers):
            model = drop_layers(model, keep=step.keep)
        elif isinstance(step, PruneFFN):
            grams = None
            if step.refit:
                texts = train_texts[: step.calibration_rows]
                say(f"feed-forward activations on {len(texts)} calibration sentences")
                grams = ffn_grams(model, tokenizer, texts, max_length=max_length)
                record["calibration_rows"] = len(texts)
            model = prune_ffn(model, keep_ratio=step.keep_ratio, grams=grams)
        elif isinstance(step, Distill):
            if teacher_train is None:
                say(f"teacher embeddings for {len(train_texts)} training sentences")
                teacher_train = torch_embed(teacher, tokenizer, train_texts, max_length=max_length)
            model, losses = distill(
                model,
                teacher_train,
                train_texts,
                tokenizer,
                epochs=step.epochs,
                lr=step.lr,
                batch_size=step.batch_size,
                max_length=max_length,
                progress=say,
            )
            record["losses"] = [round(x, 6) for x in losses]
            record["train_rows"] = len(train_texts)
        else:
            if onnx_bytes is None:
                onnx_bytes = exported()
            excluded = nodes_to_exclude(
                onnx_bytes, names=step.exclude_nodes, op_types=step.exclude_op_types
            )
            rows = step.calibration_rows if isinstance(step, StaticInt8) else 0
            calibrate = (lambda rows=rows: calib(rows)) if rows else None
            if step.exclude_most_sensitive:
                sweep = sensitivity_sweep(
                    onnx_bytes,
                    step,
                    reference=reference,
                    embed=embed,
                    calib=calibrate,
                    progress=say,
                )
                chosen = [r["node"] for r in sweep[: step.exclude_most_sensitive]]
                record["sensitivity"] = sweep[: max(5, step.exclude_most_sensitive)]
                excluded = sorted(set(excluded) | set(chosen))
            onnx_bytes = _quantize(onnx_bytes, step, excluded, calibrate)
            record["excluded_nodes"] = excluded
        current = exported() if onnx_bytes is None else onnx_bytes
        out, speed = embed(current)
        record.update(embedding_fidelity(reference, out))
        record["onnx_bytes"] = len(current)
        record["sentences_per_s_1thread"] = round(speed, 1)
        record["seconds"] = round(time.perf_counter() - started, 1)
        metrics["steps"].append(record)
        say(f"{step.step}: {record}")
    final = onnx_bytes if onnx_bytes is not None else exported()
    out, speed = embed(final)
    fid = embedding_fidelity(reference, out)
    metrics["fidelity"] = fid
    metrics["final"] = {
        "onnx_bytes": len(final),
        "sentences_per_s_1thread": round(speed, 1),
        "speedup_vs_fp32_1thread": round(speed / fp32_speed, 2),
        "layers": len(model.bert.encoder.layer),
    }
    metrics["gate"] = _gate(recipe, fid)
    if not metrics["gate"]["passed"]:
        raise TextGateError(metrics["gate"]["message"], metrics=metrics)
    return final, metrics


def _gate(recipe: TextRecipe, fid: dict) -> dict:
    problems = []
    if fid["cosine_mean"] < recipe.min_fidelity:
        problems.append(f"mean cosine {fid['cosine_mean']} < min_fidelity={recipe.min_fidelity}")
    if recipe.min_cosine_p1 is not None and fid["cosine_p1"] < recipe.min_cosine_p1:
        problems.append(
            f"1st-percentile cosine {fid['cosine_p1']} < min_cosine_p1={recipe.min_cosine_p1}"
        )
    message = (
        f"recipe {recipe.name!r} rejected: " + "; ".join(problems) + " (measured on "
        f"{fid['rows']} held-out sentences); relax the budget or use a gentler recipe"
        if problems
        else f"recipe {recipe.name!r} passed: mean cosine {fid['cosine_mean']}"
    )
    return {
        "passed": not problems,
        "min_fidelity": recipe.min_fidelity,
        "min_cosine_p1": recipe.min_cosine_p1,
        "message": message,
    }
