"""Inference form: every SCAN conv becomes one plain `nn.Conv2d` (k_u = k_s + k_i), then BatchNorm is folded.

`fuse_model(model)` returns a deep copy in eval mode whose only layers with weights are `nn.Conv2d`: it has
exactly the parameters and FLOPs of the plain architecture with BatchNorm folded, and computes what the unfused
model computes in eval mode (to float rounding).
BatchNorm folding covers a conv directly followed by a BN in an `nn.Sequential`, plus the pairs a module lists in
a `conv_bn_pairs` class attribute ((conv attribute, bn attribute), ...).
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn

from training.layers.scan_conv import ScanConv2d


def scan_to_conv(layer: ScanConv2d) -> nn.Conv2d:
    conv = nn.Conv2d(
        layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
        groups=layer.groups, bias=layer.bias is not None,
    )
    with torch.no_grad():
        conv.weight.copy_(layer.fused_weight())
        if layer.bias is not None and conv.bias is not None:
            conv.bias.copy_(layer.bias)
    return conv


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """conv followed by eval-mode BN as one conv with bias (computed in float64)."""
    assert bn.running_mean is not None and bn.running_var is not None
    fused = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,  # type: ignore[arg-type]
        conv.dilation, conv.groups, bias=True,  # type: ignore[arg-type]
    )
    w = conv.weight.detach().double()
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(conv.out_channels, dtype=torch.float64)
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(b)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(b)
    inv_std = gamma / torch.sqrt(bn.running_var.double() + bn.eps)
    with torch.no_grad():
        fused.weight.copy_((w * inv_std[:, None, None, None]).float())
        assert fused.bias is not None
        fused.bias.copy_(((b - bn.running_mean.double()) * inv_std + beta).float())
    return fused


def _replace_scan(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, ScanConv2d):
            setattr(module, name, scan_to_conv(child))
        else:
            _replace_scan(child)


def _fold(module: nn.Module) -> None:
    for child in module.children():
        _fold(child)
    if isinstance(module, nn.Sequential):
        keys = list(module._modules.keys())
        for a, b in itertools.pairwise(keys):
            conv, bn = module._modules[a], module._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                module._modules[a] = fold_bn(conv, bn)
                module._modules[b] = nn.Identity()
    for conv_name, bn_name in getattr(module, "conv_bn_pairs", ()):
        conv, bn = getattr(module, conv_name), getattr(module, bn_name)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            setattr(module, conv_name, fold_bn(conv, bn))
            setattr(module, bn_name, nn.Identity())


def fuse_model(model: nn.Module, fold_batchnorm: bool = True) -> nn.Module:
    """An eval-mode copy with SCAN convs collapsed and (optionally) BatchNorm folded into the convs."""
    fused = copy.deepcopy(model).eval()
    _replace_scan(fused)
    if fold_batchnorm:
        _fold(fused)
    for p in fused.parameters():
        p.requires_grad_(False)
    return fused
