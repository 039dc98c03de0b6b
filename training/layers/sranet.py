"""SRANet's self residual attention (Wang et al., "Self Residual Attention Network for Deep Face Recognition",
IEEE Access 2019): the channel block (SCA) and the spatial block (SSA), in their pooled ("Light") form and the
unpooled ("Naive") one the paper ablates for cost.

Light SCA (paper eqs. 5-9), for F_I of C x H x W:
    theta: 1x1 conv to C, phi: 1x1 conv to C/2, rho: 1x1 conv to C/2;
    Pool(x) = AvgPool2(x) + MaxPool2(x), a quarter of the positions;
    A_C = softmax over each row of Pool(theta) Pool(phi)^T            (C x C/2)
    F_C = F_I + A_C rho(F_I)                                          (C x HW)
Light SSA (eqs. 1-4), with r = 16:
    theta, phi: 1x1 convs to C/r, rho: 1x1 conv to C;
    A_S = softmax over each row of phi^T Pool(theta)                  (HW x HW/4)
    F_S = F_I + Pool(rho) A_S^T                                       (C x HW)

Choices the text leaves open, made here: each residual term passes through a BatchNorm whose scale starts at
zero, so a block starts as the identity and a network with blocks inserted computes exactly its trunk before
fine-tuning (the paper says "with batch norm" without placing it); pooling rounds up (`ceil_mode`), so a 7 x 7
map keeps 4 x 4 positions rather than 3 x 3; "max average pooling" in the text is read as max pooling, as its
eq. 6 and Fig. 3 show. Naive forms skip the pooling (A_S is then HW x HW).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional


def pooled(x: torch.Tensor) -> torch.Tensor:
    """Average plus max pooling over 2 x 2 windows (stride 2, rounding up): a quarter of the positions."""
    return (functional.avg_pool2d(x, 2, ceil_mode=True, count_include_pad=False)
            + functional.max_pool2d(x, 2, ceil_mode=True))


def zero_bn(channels: int) -> nn.BatchNorm2d:
    """A BatchNorm whose output starts at zero (scale 0, shift 0): the residual term of a block at init."""
    bn = nn.BatchNorm2d(channels)
    nn.init.zeros_(bn.weight)
    nn.init.zeros_(bn.bias)
    return bn


class SelfChannelAttention(nn.Module):
    """SCA: F_C = F_I + BN(A_C rho(F_I)), A_C relating each channel to half as many pooled channel maps."""

    def __init__(self, channels: int, pool: bool = True) -> None:
        super().__init__()
        if channels % 2:
            raise ValueError(f"SCA needs an even channel count, not {channels}")
        half = channels // 2
        self.pool = pool
        self.theta = nn.Conv2d(channels, channels, 1, bias=False)
        self.phi = nn.Conv2d(channels, half, 1, bias=False)
        self.rho = nn.Conv2d(channels, half, 1, bias=False)
        self.bn = zero_bn(channels)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """A_C: N x C x C/2, each row a softmax."""
        theta, phi = self.theta(x), self.phi(x)
        if self.pool:
            theta, phi = pooled(theta), pooled(phi)
        return torch.softmax(theta.flatten(2) @ phi.flatten(2).transpose(1, 2), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        refined = self.attention(x) @ self.rho(x).flatten(2)  # N x C x HW
        return x + self.bn(refined.view(n, c, h, w))


class SelfSpatialAttention(nn.Module):
    """SSA: F_S = F_I + BN(Pool(rho) A_S^T), A_S relating each position to the pooled positions."""

    def __init__(self, channels: int, reduction: int = 16, pool: bool = True) -> None:
        super().__init__()
        inner = max(1, channels // reduction)
        self.pool = pool
        self.theta = nn.Conv2d(channels, inner, 1, bias=False)
        self.phi = nn.Conv2d(channels, inner, 1, bias=False)
        self.rho = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn = zero_bn(channels)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """A_S: N x HW x HW/4 (HW x HW unpooled), each row a softmax."""
        theta = pooled(self.theta(x)) if self.pool else self.theta(x)
        return torch.softmax(self.phi(x).flatten(2).transpose(1, 2) @ theta.flatten(2), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        rho = pooled(self.rho(x)) if self.pool else self.rho(x)
        refined = rho.flatten(2) @ self.attention(x).transpose(1, 2)  # N x C x HW
        return x + self.bn(refined.view(n, c, h, w))


class SelfResidualAttention(nn.Sequential):
    """SCA then SSA (either may be left out, for the ablation), as SRANet appends them to a residual branch."""

    def __init__(self, channels: int, channel: bool = True, spatial: bool = True, pool: bool = True,
                 reduction: int = 16) -> None:
        blocks: list[nn.Module] = []
        if channel:
            blocks.append(SelfChannelAttention(channels, pool))
        if spatial:
            blocks.append(SelfSpatialAttention(channels, reduction, pool))
        if not blocks:
            raise ValueError("SelfResidualAttention needs the channel block, the spatial block or both")
        super().__init__(*blocks)
