"""Factorization: low-rank (SVD) Linear layers and depthwise-separable convolutions.

Both replace a layer by two smaller ones initialised from the original weights (the best
approximation of that shape), and a short distillation from the unfactorized model then
recovers what the approximation lost.
"""

from __future__ import annotations

import torch
from torch import nn


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def svd_rank(weight: torch.Tensor, *, rank: int | None, energy: float | None) -> int:
    """The rank to keep: ``rank`` itself, or the fewest singular values holding ``energy`` of
    the squared spectrum (its Frobenius norm)."""
    s = torch.linalg.svdvals(weight.detach().float())
    if rank is not None:
        return max(1, min(rank, len(s)))
    share = torch.cumsum(s**2, 0) / torch.sum(s**2)
    return int(torch.searchsorted(share, torch.tensor(energy)).item()) + 1


def low_rank_linear(layer: nn.Linear, rank: int) -> nn.Sequential:
    """W (out x in) ~ (U_r sqrt(S_r)) (sqrt(S_r) V_r^T): Linear(in, r) then Linear(r, out)."""
    u, s, vh = torch.linalg.svd(layer.weight.detach().float(), full_matrices=False)
    root = torch.sqrt(s[:rank])
    first = nn.Linear(layer.in_features, rank, bias=False)
    second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
    with torch.no_grad():
        first.weight.copy_(root[:, None] * vh[:rank])
        second.weight.copy_(u[:, :rank] * root[None, :])
        if layer.bias is not None:
            second.bias.copy_(layer.bias.detach())
    return nn.Sequential(first, second)


def factorize_linears(
    model: nn.Module,
    *,
    rank: int | None = None,
    energy: float | None = None,
    skip_last: bool = True,
) -> list[dict]:
    """Replace Linear layers (in place) by rank-r pairs where that stores fewer weights; return
    one record per layer considered."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if skip_last:
        linears = linears[:-1]
    report = []
    for name, layer in linears:
        r = svd_rank(layer.weight, rank=rank, energy=energy)
        dense = layer.in_features * layer.out_features
        factored = r * (layer.in_features + layer.out_features)
        replaced = factored < dense
        if replaced:
            _replace(model, name, low_rank_linear(layer, r))
        report.append(
            {
                "layer": name,
                "rank": r,
                "weights_before": dense,
                "weights_after": factored if replaced else dense,
                "replaced": replaced,
            }
        )
    return report


def depthwise_separable(conv: nn.Conv2d) -> nn.Sequential:
    """Conv2d(Cin, Cout, k) -> depthwise Conv2d(Cin, Cin, k, groups=Cin) + pointwise 1x1.

    Initialised with the best rank-1 split of each input channel's (Cout x k*k) filter slice,
    W[o, c] ~ P[o, c] * D[c], which is exactly the shape a separable pair can express."""
    cin, cout = conv.in_channels, conv.out_channels
    k = conv.kernel_size
    depthwise = nn.Conv2d(
        cin,
        cin,
        k,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=cin,
        bias=False,
        padding_mode=conv.padding_mode,
    )
    pointwise = nn.Conv2d(cin, cout, 1, bias=conv.bias is not None)
    weight = conv.weight.detach().float()  # (cout, cin, kh, kw)
    with torch.no_grad():
        for c in range(cin):
            u, s, vh = torch.linalg.svd(weight[:, c].reshape(cout, -1), full_matrices=False)
            root = torch.sqrt(s[0])
            depthwise.weight[c, 0] = (root * vh[0]).reshape(k)
            pointwise.weight[:, c, 0, 0] = root * u[:, 0]
        if conv.bias is not None:
            pointwise.bias.copy_(conv.bias.detach())
    return nn.Sequential(depthwise, pointwise)


def separable_convs(model: nn.Module, *, min_in_channels: int = 2) -> list[dict]:
    """Replace standard convolutions (groups=1, kernel > 1x1, at least ``min_in_channels``
    inputs) by depthwise-separable pairs, in place; one record per convolution considered."""
    report = []
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    for name, conv in convs:
        before = sum(p.numel() for p in conv.parameters())
        eligible = (
            conv.groups == 1 and conv.in_channels >= min_in_channels and conv.kernel_size != (1, 1)
        )
        after = before
        if eligible:
            new = depthwise_separable(conv)
            after = sum(p.numel() for p in new.parameters())
            eligible = after < before
            if eligible:
                _replace(model, name, new)
        report.append(
            {"layer": name, "params_before": before, "params_after": after, "replaced": eligible}
        )
    return report


class FreshBatchNormStats:
    """While in effect, every batch norm forgets the running statistics it kept for the layer
    it used to follow and re-estimates them as a cumulative average (``momentum=None``) over
    the batches of the recovery training; afterwards its momentum is restored. A replaced
    convolution's outputs differ from the original's, and with the default momentum a short
    recovery leaves most of the stale statistics in place: on 6 steps the factorized
    Fashion-MNIST VGG kept 15% accuracy in evaluation mode."""

    def __init__(self, model: nn.Module):
        self.norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.momenta = [m.momentum for m in self.norms]

    def __enter__(self) -> FreshBatchNormStats:
        for m in self.norms:
            if m.track_running_stats:
                m.reset_running_stats()
            m.momentum = None
        return self

    def __exit__(self, *exc) -> None:
        for m, momentum in zip(self.norms, self.momenta, strict=True):
            m.momentum = momentum
