"""Parameter and multiply-accumulate counts, measured with forward hooks on a real forward pass.

MACs count the convolutions and linear layers (BatchNorm, activations and additions are left out, as usual);
FLOPs = 2 x MACs. A SCAN conv in its training form also pays for synthesising its kernel (the Gaussian blur
of every 3 x 3 slice) and for the second, detached conv of the scale loss when that is enabled.
"""

from __future__ import annotations

import torch
from torch import nn

from training.layers.scan_conv import GAUSS_SIZE, ScanConv2d


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs of one forward pass for an input of `input_shape` (batch included; divide by it for per-image)."""
    total = 0

    def conv_hook(module: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size  # type: ignore[misc]
        per_out = int((module.in_channels // module.groups) * kh * kw)  # type: ignore[operator]
        total += out.numel() * per_out
        if isinstance(module, ScanConv2d):
            # kernel synthesis: every k x k entry of every (out, in) slice is a 5 x 5 weighted sum
            total += module.weight.numel() * GAUSS_SIZE * GAUSS_SIZE
            if module.training and module.track_scale_loss:
                total += out.numel() * per_out

    def linear_hook(module: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * int(module.in_features)  # type: ignore[arg-type]

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d | ScanConv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    try:
        with torch.no_grad():
            model(torch.zeros(input_shape))
    finally:
        for h in handles:
            h.remove()
    return total
