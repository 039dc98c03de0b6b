"""MobileFaceNet as in foamliu/MobileFaceNet (module names match its state_dict), written as a list of units.

The forward pass is a chain of 18 units: `conv1` (3 x 3, stride 2, 112 -> 56), `dw_conv` (56), `features.0`
to `features.14` (inverted residuals; `features.0`, `.5` and `.12` have stride 2: 56 -> 28 -> 14 -> 7) and the
head (`conv2`, 7 x 7 global depthwise `gdconv`, linear `conv3`, `bn`). `forward_units(x, start, stop)` runs a
slice of that chain, which is what the BTNet branches and the split Triton pieces are made of.
Activations: ReLU6 in the ConvBNReLU blocks, ReLU in `dw_conv`, as in the upstream code.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

# t (expansion), c (channels), n (repeats), s (stride of the first repeat)
BOTTLENECK_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (2, 64, 5, 2),
    (4, 128, 1, 2),
    (2, 128, 6, 1),
    (4, 128, 1, 2),
    (2, 128, 2, 1),
)
N_UNITS = 18  # conv1, dw_conv, 15 bottlenecks, head
HEAD_UNIT = 17


class ConvBNReLU(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, groups: int = 1) -> None:
        padding = (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU6(inplace=False),
        )


class DepthwiseSeparableConv(nn.Module):
    conv_bn_pairs = (("depthwise", "bn1"), ("pointwise", "bn2"))

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, padding: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(in_ch, in_ch, kernel_size, padding=padding, groups=in_ch, bias=False)
        self.pointwise = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.depthwise(x)))
        return self.relu(self.bn2(self.pointwise(x)))


class GDConv(nn.Module):
    """Global depthwise conv: a 7 x 7 depthwise kernel over the 7 x 7 map, then BN."""

    conv_bn_pairs = (("depthwise", "bn"),)

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, kernel_size, padding=0, groups=channels, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.depthwise(x))


class InvertedResidual(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = round(in_ch * expand_ratio)
        # fixed at construction: a branch that runs this block at stride 1 keeps the trunk's function
        self.use_res_connect = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU(in_ch, hidden, kernel_size=1))
        layers += [
            ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_ch, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class Head(nn.Module):
    """conv2 -> gdconv -> conv3 -> bn -> flatten; a view over the trunk's own modules (no own weights)."""

    def __init__(self, net: MobileFaceNet) -> None:
        super().__init__()
        self._net = [net]  # a plain list: not registered, so the weights are not duplicated in state_dict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self._net[0]
        x = net.bn(net.conv3(net.gdconv(net.conv2(x))))
        return x.flatten(1)


class MobileFaceNet(nn.Module):
    """The 112 x 112 trunk: N x 3 x 112 x 112 normalised RGB -> N x 128 (not L2-normalised)."""

    conv_bn_pairs = (("conv3", "bn"),)

    def __init__(self, embedding_size: int = 128) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(3, 64, kernel_size=3, stride=2)
        self.dw_conv = DepthwiseSeparableConv(64, 64, kernel_size=3, padding=1)
        features: list[nn.Module] = []
        in_ch = 64
        for t, c, n, s in BOTTLENECK_SETTING:
            for i in range(n):
                features.append(InvertedResidual(in_ch, c, s if i == 0 else 1, t))
                in_ch = c
        self.features = nn.Sequential(*features)
        self.conv2 = ConvBNReLU(in_ch, 512, kernel_size=1)
        self.gdconv = GDConv(512, kernel_size=7)
        self.conv3 = nn.Conv2d(512, embedding_size, 1)
        self.bn = nn.BatchNorm2d(embedding_size)
        self._head = Head(self)

    def unit(self, index: int) -> nn.Module:
        """Unit `index` of the chain (0 = conv1, 1 = dw_conv, 2..16 = features.0..14, 17 = head)."""
        if index == 0:
            return self.conv1
        if index == 1:
            return self.dw_conv
        if 2 <= index < HEAD_UNIT:
            return self.features[index - 2]
        if index == HEAD_UNIT:
            return self._head
        raise IndexError(index)

    def forward_units(self, x: torch.Tensor, start: int = 0, stop: int = N_UNITS) -> torch.Tensor:
        for i in range(start, stop):
            x = self.unit(i)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_units(x)


def unit_name(index: int) -> str:
    if index == 0:
        return "conv1"
    if index == 1:
        return "dw_conv"
    if index == HEAD_UNIT:
        return "head"
    return f"features.{index - 2}"


def unit_strides() -> list[int]:
    """The stride of every unit of the 112 trunk."""
    strides = [2, 1]
    for _t, _c, n, s in BOTTLENECK_SETTING:
        strides += [s] + [1] * (n - 1)
    return [*strides, 1]


def implant_unit(resolution: int, input_size: int = 112) -> int:
    """The first trunk unit whose input has spatial size `resolution`: where a branch hands over."""
    size = input_size
    for index, stride in enumerate(unit_strides()):
        if size == resolution and index > 0:
            return index
        size //= stride
    raise ValueError(f"no trunk stage of spatial size {resolution} (input {input_size})")


def load_trunk(path: Path) -> MobileFaceNet:
    """The pretrained trunk in eval mode with every parameter frozen."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = MobileFaceNet()
    net.load_state_dict(state, strict=True)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
