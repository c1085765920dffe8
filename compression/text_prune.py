"""Structural compression of a BERT sentence encoder, then distillation from the fp32 model.

- ``drop_layers``: keep a subset of the transformer layers (each one dropped removes 1/L of
  the encoder's work);
- ``prune_ffn``: physically remove feed-forward neurons so the dense MatMuls get smaller. Given
  calibration activations (``ffn_grams``), neurons are ranked by their output energy on real
  text and each layer's down projection is refit by least squares to reproduce the full
  layer's output from the neurons kept; without them, by the L2 norm of their weights;
- ``distill``: fit the student's embeddings to the teacher's on unlabeled text (MSE on the
  L2-normalised embeddings, i.e. 2 - 2 cosine), length-bucketed batches to cut padding.
"""

from __future__ import annotations

import copy
import random

import numpy as np
import torch
from leanscore.compression.text_model import SentenceEncoder, tokenize
from torch import nn


def _layers(encoder: SentenceEncoder) -> nn.ModuleList:
    return encoder.bert.encoder.layer


def layer_count(encoder: SentenceEncoder) -> int:
    """How many transformer layers ``encoder`` runs."""
    return len(_layers(encoder))


def drop_layers(encoder: SentenceEncoder, *, keep: list[int]) -> SentenceEncoder:
    """A copy of ``encoder`` that runs only the layers in ``keep`` (in that order)."""
    count = len(_layers(encoder))
    bad = [i for i in keep if not 0 <= i < count]
    if bad or not keep or len(set(keep)) != len(keep):
        raise ValueError(
            f"keep_layers must be distinct indices in 0..{count - 1}, got {keep}; "
            f"the model has {count} layers"
        )
    student = copy.deepcopy(encoder)
    student.bert.encoder.layer = nn.ModuleList([_layers(student)[i] for i in keep])
    student.bert.config.num_hidden_layers = len(keep)
    return student


def ffn_grams(
    encoder: SentenceEncoder,
    tokenizer,
    texts: list[str],
    *,
    max_length: int = 128,
    batch_size: int = 64,
) -> list[torch.Tensor]:
    """Per layer, the Gram matrix of [feed-forward activations, 1] over the real (unpadded)
    tokens of ``texts``: everything a least-squares refit of the down projection needs."""
    if not texts:
        raise ValueError("ffn_grams needs calibration texts, got none")
    layers = _layers(encoder)
    grams = [None] * len(layers)
    real: dict[str, torch.Tensor] = {}

    def accumulate(i: int):
        def hook(_module, inputs):
            x = inputs[0][real["mask"]].double()
            x = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], dim=1)
            grams[i] = x.T @ x if grams[i] is None else grams[i] + x.T @ x

        return hook

    handles = [
        layer.output.dense.register_forward_pre_hook(accumulate(i))
        for i, layer in enumerate(layers)
    ]
    try:
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                ids, mask = tokenize(
                    tokenizer, texts[start : start + batch_size], max_length=max_length
                )
                real["mask"] = torch.from_numpy(mask).bool()
                encoder(torch.from_numpy(ids), torch.from_numpy(mask))
    finally:
        for handle in handles:
            handle.remove()
    return grams


def prune_ffn(
    encoder: SentenceEncoder,
    *,
    keep_ratio: float,
    grams: list[torch.Tensor] | None = None,
    ridge: float = 1e-3,
) -> SentenceEncoder:
    """A copy of ``encoder`` whose feed-forward blocks keep ``keep_ratio`` of their neurons.

    With ``grams`` (from ``ffn_grams`` on calibration text), the kept neurons are those with
    the most output energy and the down projection (weights and bias) is refit by ridge least
    squares to the full block's output; without, neurons are ranked by weight norms alone."""
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"ffn_keep_ratio must be in (0, 1], got {keep_ratio}")
    layers = _layers(encoder)
    if grams is not None and len(grams) != len(layers):
        raise ValueError(f"got {len(grams)} calibration Gram matrices for {len(layers)} layers")
    student = copy.deepcopy(encoder)
    for i, layer in enumerate(_layers(student)):
        up, down = layer.intermediate.dense, layer.output.dense
        width = up.out_features
        keep = max(1, round(width * keep_ratio))
        weight = down.weight.detach().double()
        if grams is None:
            score = up.weight.detach().double().norm(dim=1) * weight.norm(dim=0)
        else:
            score = grams[i].diagonal()[:width].clamp(min=0).sqrt() * weight.norm(dim=0)
        idx = torch.sort(torch.topk(score, keep).indices).values
        new_up = nn.Linear(up.in_features, keep)
        new_up.weight.data = up.weight.data[idx].clone()
        new_up.bias.data = up.bias.data[idx].clone()
        new_down = nn.Linear(keep, down.out_features)
        if grams is None or keep == width:  # no calibration, or nothing removed: no refit
            new_down.weight.data = down.weight.data[:, idx].clone()
            new_down.bias.data = down.bias.data.clone()
        else:
            new_down.weight.data, new_down.bias.data = _refit(
                grams[i], weight, down.bias, idx, ridge
            )
        layer.intermediate.dense, layer.output.dense = new_up, new_down
    student.bert.config.intermediate_size = keep
    return student


def _refit(gram, weight, bias, idx, ridge) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares weights and bias on the kept activations (plus the constant column) that
    best reproduce ``[h, 1] @ [weight, bias].T`` over the calibration tokens."""
    width = weight.shape[1]
    full = torch.cat([weight, bias.detach().double()[:, None]], dim=1)
    kept = torch.cat([idx, torch.tensor([width])])
    lhs = gram[kept][:, kept]
    lhs = lhs + ridge * lhs.diagonal().mean() * torch.eye(len(kept), dtype=torch.float64)
    solution = torch.linalg.solve(lhs, gram[kept] @ full.T)  # (kept + 1) x out
    return solution[:-1].T.float().contiguous(), solution[-1].float().contiguous()


def _buckets(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def distill(
    student: SentenceEncoder,
    teacher_embeddings: np.ndarray,
    texts: list[str],
    tokenizer,
    *,
    epochs: int = 2,
    lr: float = 5e-5,
    batch_size: int = 32,
    max_length: int = 128,
    seed: int = 0,
    progress=None,
) -> tuple[SentenceEncoder, list[float]]:
    """Train ``student`` so its embeddings match ``teacher_embeddings`` (one row per text)."""
    if len(texts) != len(teacher_embeddings):
        raise ValueError(
            f"distillation has {len(texts)} texts but {len(teacher_embeddings)} teacher embeddings"
        )
    torch.manual_seed(seed)
    rng = random.Random(seed)
    tokenizer.enable_truncation(max_length)
    lengths = [len(e.ids) for e in tokenizer.encode_batch(texts)]
    target = torch.from_numpy(np.asarray(teacher_embeddings, dtype=np.float32))
    optimizer = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    student.train()
    losses = []
    for epoch in range(epochs):
        total, seen = 0.0, 0
        for batch in _buckets(lengths, batch_size, rng):
            ids, mask = tokenize(tokenizer, [texts[i] for i in batch], max_length=max_length)
            out = student(torch.from_numpy(ids), torch.from_numpy(mask))
            loss = ((out - target[batch]) ** 2).sum(dim=1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
            seen += len(batch)
        losses.append(total / seen)
        if progress:
            progress(f"distill epoch {epoch + 1}/{epochs}: loss {losses[-1]:.5f}")
    return student.eval(), losses
