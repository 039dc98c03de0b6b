"""HPDA's local blocks (Wang et al., "Hierarchical Pyramid Diverse Attention Networks for Face Recognition",
CVPR 2020): the pyramid attention with B local branches per scale (sec. 3.2.1), the divergence loss of the
diverse learning (sec. 3.2.2, eq. 2) and the hierarchical bilinear pooling across layers (sec. 3.2.3, eq. 5),
with the plain concatenation the paper ablates against it.

Pyramid attention, for X of C x h x w:
    X_i = the sub-region average pooling of X to `scales[i]` x `scales[i]` (the finest scale is X itself);
    M_i^j = sigmoid(conv1x1(ReLU(conv1x1_{C -> C/r}(X_i))))      (the LANet of branch j at scale i)
    R_i^j = X o up(M_i^j)                                        (bilinear upsampling to h x w)
    Y_i = BN(conv1x1_{B C -> C}(concat_j R_i^j)),   output = concat_i Y_i   (S C x h x w)

Choices the text leaves open, made here: the scales of a 7 x 7 map are 7, 5 and 3 (the paper's own sizes for
S = 3 on its 7 x 7 layer); the sub-region pooling is adaptive average pooling and the upsampling is bilinear
without corner alignment, both written as fixed matrices (`P X P^T`, `U M U^T`), so they export to ONNX as
plain MatMuls and equal PyTorch's own operators; the LANet's reduction is r = 16; each scale's reduction conv
is followed by a BatchNorm; the divergence hinge is averaged over batch and positions.

Hierarchical bilinear pooling, for the outputs x1, x2, x3 of three layers (same h x w):
    z = concat(U^T x1 o V^T x2, U^T x1 o S^T x3, V^T x2 o S^T x3)  at every position, U, V, S: 1x1 convs to d,
then, as in the HBP paper, the mean over positions, the signed square root and L2 normalisation, and an FC
layer to the local embedding. The concatenation ablation keeps the same projections and replaces the products
by concat(U^T x1, V^T x2, S^T x3) (the paper's "for fair comparison" setting).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn
from torch.nn import functional

Fusion = Literal["hbp", "concat"]


def adaptive_pool_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """The `size_out x size_in` matrix of 1-D adaptive average pooling (PyTorch's windows)."""
    m = torch.zeros(size_out, size_in)
    for i in range(size_out):
        start, end = (i * size_in) // size_out, -((-(i + 1) * size_in) // size_out)
        m[i, start:end] = 1.0 / (end - start)
    return m


def upsample_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """The `size_out x size_in` matrix of 1-D linear upsampling (`align_corners=False`, PyTorch's weights)."""
    basis = torch.eye(size_in).unsqueeze(1)  # size_in signals, each one-hot
    return functional.interpolate(basis, size=size_out, mode="linear", align_corners=False).squeeze(1).T


class LocalAttention(nn.Module):
    """The LANets of B branches over one input: per branch conv1x1 to C/r, ReLU, conv1x1 to one map, sigmoid
    (the B first convs share their input, so they run as one conv; the second ones as a grouped conv)."""

    def __init__(self, channels: int, branches: int, reduction: int) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.reduce = nn.Conv2d(channels, branches * hidden, 1)
        self.relu = nn.ReLU()
        self.expand = nn.Conv2d(branches * hidden, branches, 1, groups=branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x B x h x w masks in (0, 1)."""
        return torch.sigmoid(self.expand(self.relu(self.reduce(x))))


class PyramidAttention(nn.Module):
    """The pyramid attention of one layer; `forward` returns the S C-channel output and keeps the masks of the
    last call (one N x B x s x s tensor per scale) in `self.masks` for the divergence loss."""

    def __init__(self, channels: int, size: int, scales: Sequence[int] = (7, 5, 3), branches: int = 3,
                 reduction: int = 16) -> None:
        super().__init__()
        self.scales, self.branches = tuple(scales), branches
        for i, s in enumerate(self.scales):
            if not 1 <= s <= size:
                raise ValueError(f"scale {s} is not within 1..{size}")
            self.register_buffer(f"pool{i}", adaptive_pool_matrix(size, s), persistent=False)
            self.register_buffer(f"up{i}", upsample_matrix(s, size), persistent=False)
        self.attention = nn.ModuleList(LocalAttention(channels, branches, reduction) for _ in self.scales)
        self.merge = nn.ModuleList(
            nn.Sequential(nn.Conv2d(branches * channels, channels, 1, bias=False), nn.BatchNorm2d(channels))
            for _ in self.scales)
        self.masks: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        outputs, self.masks = [], []
        for i, s in enumerate(self.scales):
            pool, up = getattr(self, f"pool{i}"), getattr(self, f"up{i}")
            xi = x if s == h else torch.matmul(torch.matmul(pool, x), pool.T)
            masks = self.attention[i](xi)
            self.masks.append(masks)
            full = masks if s == h else torch.matmul(torch.matmul(up, masks), up.T)
            refined = x.unsqueeze(1) * full.unsqueeze(2)  # N x B x C x h x w
            outputs.append(self.merge[i](refined.reshape(n, self.branches * c, h, w)))
        return torch.cat(outputs, dim=1)


def divergence_loss(masks: Sequence[torch.Tensor], margin: float = 1.0) -> torch.Tensor:
    """Eq. 2 for one layer: 2 / (S B (B - 1)) x the sum over scales and ordered branch pairs j != k of
    max(0, t - (M_j - M_k)^2), each averaged over batch and positions; zero with one branch."""
    branches = masks[0].shape[1]
    if branches < 2:
        return masks[0].new_zeros(())
    total = masks[0].new_zeros(())
    for m in masks:
        diff = m.unsqueeze(1) - m.unsqueeze(2)  # N x B x B x s x s, zero on the diagonal
        hinge = functional.relu(margin - diff.square()).mean(dim=(0, 3, 4))
        total = total + hinge.sum() - hinge.diagonal().sum()
    return 2.0 * total / (len(masks) * branches * (branches - 1))


class LayerFusion(nn.Module):
    """Three layers' local features to one vector: 1x1 projections U, V, S to `dim`, then their pairwise
    products (HBP) or their concatenation, mean over positions, signed square root, L2 normalisation, FC."""

    def __init__(self, channels: Sequence[int], dim: int, out: int, fusion: Fusion = "hbp") -> None:
        super().__init__()
        if len(channels) != 3:
            raise ValueError("the fusion takes three layers")
        self.fusion = fusion
        self.project = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, dim, 1, bias=False), nn.BatchNorm2d(dim)) for c in channels)
        self.fc = nn.Linear(3 * dim, out)

    def forward(self, layers: Sequence[torch.Tensor]) -> torch.Tensor:
        u, v, s = (p(x) for p, x in zip(self.project, layers, strict=True))
        z = torch.cat([u * v, u * s, v * s] if self.fusion == "hbp" else [u, v, s], dim=1)
        z = z.mean(dim=(2, 3))
        z = torch.sign(z) * torch.sqrt(z.abs() + 1e-6)
        return self.fc(functional.normalize(z, dim=1))
