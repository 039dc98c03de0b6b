"""Scale-attention convolution (SCAN, "Scale Attention for Learning Deep Face Representation", section 4).

Every filter o has a learnable scale t_o (initialised to 1, excluded from weight decay). Its kernel is the
scale-space kernel of a base kernel k_o blurred by a 5 x 5 Gaussian of standard deviation t_o, kept at the
base kernel's size (the centre of the full convolution) and scale-normalised:

    k_s,o = t_o ** (gamma * m) * (k_o * g(t_o))          (k x k, usually 3 x 3)

A local shortcut kernel k_i runs in parallel, f_out = (k_s + k_i) * f_in, so the layer can keep fine detail that
the blur removes. Both branches are linear in the input, hence one conv with k_u = k_s + k_i computes the
layer exactly: that is what `fused_weight()` returns and what `training.layers.fuse` writes into a plain
`nn.Conv2d` for inference.

Initialisation from a pretrained conv with kernel w: k = w and k_i = w - k_s(t=1), so the layer starts as exactly
the conv it replaces.

Scale loss (response maximisation): L_scale = mean_{n,o} exp(-lambda * ||f_out[n, o]||_2 / (H W)), with the
detach trick: it is computed from the detached input and the detached kernels k and k_i, so its gradient reaches
only this layer's scales t and never the earlier layers or the kernel weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

GAUSS_SIZE = 5
MIN_SCALE = 0.05


def gaussian_kernels(scale: torch.Tensor, size: int = GAUSS_SIZE) -> torch.Tensor:
    """One normalised `size x size` Gaussian per entry of `scale` (standard deviation): C x size x size."""
    half = size // 2
    coords = torch.arange(-half, half + 1, dtype=scale.dtype, device=scale.device)
    sq = coords[None, :] ** 2 + coords[:, None] ** 2  # size x size
    t = scale.clamp_min(MIN_SCALE)[:, None, None]
    g = torch.exp(-sq[None] / (2.0 * t * t))
    return g / g.sum(dim=(1, 2), keepdim=True)


def blur_kernels(kernel: torch.Tensor, scale: torch.Tensor, gamma: float, m: float) -> torch.Tensor:
    """k_s = t^(gamma m) (k * g(t)) per output filter, cropped back to the kernel size (O x I x k x k)."""
    out_ch, in_ch, kh, kw = kernel.shape
    g = gaussian_kernels(scale)  # O x 5 x 5
    pad = GAUSS_SIZE // 2
    x = F.pad(kernel.reshape(1, out_ch * in_ch, kh, kw), (pad, pad, pad, pad))
    w = g.repeat_interleave(in_ch, dim=0)[:, None]  # (O*I) x 1 x 5 x 5
    blurred = F.conv2d(x, w, groups=out_ch * in_ch).reshape(out_ch, in_ch, kh, kw)
    norm = scale.clamp_min(MIN_SCALE) ** (gamma * m)
    return blurred * norm[:, None, None, None]


class ScanConv2d(nn.Module):
    """Drop-in replacement for `nn.Conv2d` (kernel >= 3 x 3) with per-filter learnable Gaussian scales."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        bias: bool = False,
        gamma: float = 1.0,
        m: float = 1.0,
    ) -> None:
        super().__init__()
        if kernel_size < 3:
            raise ValueError("SCAN is for kernels of 3 x 3 or larger")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = (kernel_size, kernel_size)
        self.stride = (stride, stride)
        self.padding = (padding, padding)
        self.groups = groups
        self.gamma, self.m = gamma, m
        shape = (out_channels, in_channels // groups, kernel_size, kernel_size)
        self.weight = nn.Parameter(torch.empty(shape))
        self.shortcut = nn.Parameter(torch.zeros(shape))
        self.scale = nn.Parameter(torch.ones(out_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.scale_lambda = 1.0
        self.track_scale_loss = False
        self.last_scale_loss: torch.Tensor | None = None

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, gamma: float = 1.0, m: float = 1.0) -> ScanConv2d:
        """A SCAN conv computing exactly what `conv` computes (k = w, k_i = w - k_s, t = 1)."""
        k = conv.kernel_size[0]
        layer = cls(
            conv.in_channels, conv.out_channels, k, conv.stride[0], int(conv.padding[0]),
            conv.groups, conv.bias is not None, gamma, m,
        )
        with torch.no_grad():
            layer.weight.copy_(conv.weight)
            layer.shortcut.copy_(conv.weight - blur_kernels(conv.weight, layer.scale, gamma, m))
            if conv.bias is not None and layer.bias is not None:
                layer.bias.copy_(conv.bias)
        return layer

    def scale_kernel(self) -> torch.Tensor:
        return blur_kernels(self.weight, self.scale, self.gamma, self.m)

    def fused_weight(self) -> torch.Tensor:
        """k_u = k_s + k_i: the one kernel of the equivalent plain conv."""
        return self.scale_kernel() + self.shortcut

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return F.conv2d(x, weight, bias, self.stride, self.padding, 1, self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._conv(x, self.fused_weight(), self.bias)
        if self.training and self.track_scale_loss:
            # detach trick: only t receives the gradient of the response-maximisation loss
            k_s = blur_kernels(self.weight.detach(), self.scale, self.gamma, self.m)
            f = self._conv(x.detach(), k_s + self.shortcut.detach(), None)
            h, w = f.shape[-2:]
            norm = f.flatten(2).norm(dim=2) / float(h * w)  # N x O
            self.last_scale_loss = torch.exp(-self.scale_lambda * norm).mean()
        else:
            self.last_scale_loss = None
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, groups={self.groups}, gamma={self.gamma}, m={self.m}"
        )


def scan_layers(model: nn.Module) -> list[ScanConv2d]:
    return [m for m in model.modules() if isinstance(m, ScanConv2d)]


def set_scale_loss(model: nn.Module, enabled: bool, scale_lambda: float = 1.0) -> None:
    for layer in scan_layers(model):
        layer.track_scale_loss = enabled
        layer.scale_lambda = scale_lambda


def scale_loss_of(model: nn.Module) -> torch.Tensor:
    """Mean of the scale losses of the last forward pass over all SCAN layers (0 if there are none)."""
    losses = [m.last_scale_loss for m in scan_layers(model) if m.last_scale_loss is not None]
    if not losses:
        return torch.zeros(())
    return torch.stack(losses).mean()


def convert_to_scan(module: nn.Module, gamma: float = 1.0, m: float = 1.0) -> int:
    """Replace, in place, every `nn.Conv2d` with a kernel of 3 x 3 or larger by an equivalent SCAN conv."""
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Conv2d) and min(child.kernel_size) >= 3:
            setattr(module, name, ScanConv2d.from_conv(child, gamma, m))
            count += 1
        else:
            count += convert_to_scan(child, gamma, m)
    return count
