"""Pruning: structured (neurons/channels physically removed) and unstructured (weights zeroed).

Structured pruning shrinks the dense matrices, so ONNX Runtime's dense kernels do less work.
Unstructured zeros leave the shapes alone: the file compresses much better, but dense CPU
kernels run at the same speed (onnxruntime issues #2121 and #5578). Reports say which is which.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch_pruning as tp
from torch import nn


def prunable_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]


def output_layers(model: nn.Module) -> list[nn.Module]:
    """The last Linear/Conv layer: its outputs are the model's classes and must stay."""
    layers = prunable_layers(model)
    return layers[-1:] if layers else []


def structured_prune(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    ratio: float,
    ignored_layers: Iterable[nn.Module] | None = None,
    global_pruning: bool = False,
) -> nn.Module:
    """Remove ``ratio`` of the neurons/channels of every prunable layer except the output layer,
    ranked by L2 magnitude, following torch-pruning's dependency graph so that coupled layers
    shrink together. The model is modified in place and returned."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(
            f"structured pruning ratio must be between 0 and 1 (exclusive), got {ratio}"
        )
    ignored = list(ignored_layers) if ignored_layers is not None else output_layers(model)
    pruner = tp.pruner.MetaPruner(
        model,
        example_input,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio,
        global_pruning=global_pruning,
        ignored_layers=ignored,
    )
    pruner.step()
    return model


class MagnitudeMask:
    """Unstructured magnitude pruning: zero the smallest weights and keep them zero while
    fine-tuning (``apply`` after each optimizer step)."""

    def __init__(self, model: nn.Module, *, sparsity: float, scope: str = "global"):
        if not 0.0 < sparsity < 1.0:
            raise ValueError(f"sparsity must be between 0 and 1 (exclusive), got {sparsity}")
        if scope not in ("global", "layer"):
            raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
        weights = [m.weight for m in prunable_layers(model)]
        if scope == "global":
            flat = torch.cat([w.detach().abs().flatten() for w in weights])
            threshold = (
                torch.quantile(flat, sparsity)
                if flat.numel() < 16_000_000
                else (flat.kthvalue(max(1, int(sparsity * flat.numel()))).values)
            )
            self.masks = [(w, w.detach().abs() > threshold) for w in weights]
        else:
            self.masks = []
            for w in weights:
                t = torch.quantile(w.detach().abs().flatten(), sparsity)
                self.masks.append((w, w.detach().abs() > t))
        self.apply(model)

    @torch.no_grad()
    def apply(self, model: nn.Module | None = None) -> None:
        for weight, mask in self.masks:
            weight.mul_(mask)


def weight_sparsity(model: nn.Module) -> float:
    weights = [m.weight for m in prunable_layers(model)]
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / total if total else 0.0
