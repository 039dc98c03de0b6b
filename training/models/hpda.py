"""HPDA on the pretrained MobileFaceNet trunk: local CNNs on three layers of the last stage, fused with
hierarchical bilinear pooling, joined to the trunk's own (global) embedding by an FC layer.

The three layers are the outputs of `features.12`, `.13` and `.14`, the whole 7 x 7 stage of MobileFaceNet
(128 channels each): the paper takes every other layer of its last block, whose layers are deeper than these
bottlenecks; MobileFaceNet's last stage has exactly three. Each gets its own pyramid attention (S scales, B
branches; `training.layers.hpda`), the three outputs are fused into a `local_dim` local vector, and

    embedding = FC(concat(global, local))    (128 + local_dim -> 128, the serving contract)

where the FC starts as [I | 0]: before fine-tuning the network computes exactly the trunk (the harness's
identity at initialisation), and the local part enters as the margin and distillation losses move it.
`auxiliary_loss()` is the diverse learning's divergence loss over the three layers' masks of the last forward
pass, which `training.finetune` adds to the classification loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import cast

import torch
from torch import nn

from training.layers.hpda import Fusion, LayerFusion, PyramidAttention, divergence_loss
from training.models.mobilefacenet import HEAD_UNIT, N_UNITS, MobileFaceNet

TAP_FEATURES: tuple[int, ...] = (12, 13, 14)  # the 7 x 7 stage
TAP_CHANNELS, TAP_SIZE = 128, 7


class HPDANet(MobileFaceNet):
    """MobileFaceNet (trunk weights keep their names) plus HPDA's local CNNs and the global-local FC."""

    def __init__(self, scales: Sequence[int] = (7, 5, 3), branches: int = 3, reduction: int = 16,
                 fusion: Fusion = "hbp", projection: int = 256, local_dim: int = 128, margin: float = 1.0,
                 diverse_weight: float = 1.0) -> None:
        super().__init__()
        self.taps = tuple(i + 2 for i in TAP_FEATURES)  # unit indices
        self.margin, self.diverse_weight = margin, diverse_weight
        self.pyramids = nn.ModuleList(
            PyramidAttention(TAP_CHANNELS, TAP_SIZE, scales, branches, reduction) for _ in TAP_FEATURES)
        self.fusion = LayerFusion([len(scales) * TAP_CHANNELS] * 3, projection, local_dim, fusion)
        embedding = self.bn.num_features
        self.joint = nn.Linear(embedding + local_dim, embedding)
        with torch.no_grad():
            self.joint.weight.zero_()
            self.joint.weight[:, :embedding].copy_(torch.eye(embedding))
            self.joint.bias.zero_()

    def forward_units(self, x: torch.Tensor, start: int = 0, stop: int = N_UNITS) -> torch.Tensor:
        if stop < N_UNITS:
            return super().forward_units(x, start, stop)
        if start > self.taps[0]:
            raise ValueError(f"HPDA taps unit {self.taps[0]}; it cannot start at unit {start}")
        layers = []
        for i in range(start, HEAD_UNIT):
            x = self.unit(i)(x)
            if i in self.taps:
                layers.append(x)
        global_emb = self.unit(HEAD_UNIT)(x)
        local_emb = self.fusion([p(t) for p, t in zip(self.layer_attention(), layers, strict=True)])
        return self.joint(torch.cat([global_emb, local_emb], dim=1))

    def layer_attention(self) -> list[PyramidAttention]:
        """The pyramid attention of each tapped layer (features.12, .13, .14)."""
        return [cast(PyramidAttention, p) for p in self.pyramids]

    def masks(self) -> list[list[torch.Tensor]]:
        """The attention masks of the last forward pass: per layer, per scale, N x B x s x s."""
        return [p.masks for p in self.layer_attention()]

    def auxiliary_loss(self) -> torch.Tensor:
        """diverse_weight x the divergence loss (eq. 2), averaged over the three layers, of the last pass."""
        losses = [divergence_loss(m, self.margin) for m in self.masks()]
        return self.diverse_weight * torch.stack(losses).mean()


def load_trunk(net: HPDANet, trunk_weights: Path) -> HPDANet:
    """`net` with the pretrained trunk's weights (HPDA's own modules keep their initialisation)."""
    state = torch.load(trunk_weights, map_location="cpu", weights_only=True)
    missing, unexpected = net.load_state_dict(state, strict=False)
    own = ("pyramids.", "fusion.", "joint.")
    if unexpected or any(not k.startswith(own) for k in missing):
        raise ValueError(f"trunk weights do not fit: missing {missing}, unexpected {unexpected}")
    return net
