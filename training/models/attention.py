"""Attention modules implanted into the pretrained MobileFaceNet trunk, at the end of the residual branch of
chosen bottlenecks (`out = x + attention(conv(x))`), as SRANet appends its blocks to ResNet bottlenecks.

Only bottlenecks with a residual connection take one. The module goes at the end of the block's `conv`
sequence, so every trunk weight keeps its state_dict name and loads unchanged, and a module that starts as the
identity (SRANet's zero-scale BatchNorms) leaves the network computing exactly the trunk until fine-tuning moves
it. `DEFAULT_SRANET_BLOCKS` are the residual bottlenecks at 14 x 14 and 7 x 7 (`features.6`-`11`, `13`, `14`):
the 28 x 28 ones (`features.1`-`4`) would cost the spatial block 16 times the attention matrix of a 7 x 7 one
(784 x 196 entries against 49 x 16 per channel group) for features that are still local edges.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from training.layers.sranet import SelfResidualAttention
from training.models.mobilefacenet import InvertedResidual, MobileFaceNet

DEFAULT_SRANET_BLOCKS: tuple[int, ...] = (6, 7, 8, 9, 10, 11, 13, 14)


def residual_blocks(net: MobileFaceNet) -> list[int]:
    """The indices (in `net.features`) of the bottlenecks with a residual connection."""
    return [i for i, block in enumerate(net.features) if isinstance(block, InvertedResidual) and block.use_res_connect]


def block_channels(block: InvertedResidual) -> int:
    bn = block.conv[-1]
    if not isinstance(bn, nn.BatchNorm2d):
        raise TypeError("a bottleneck's residual branch ends with its BatchNorm")
    return bn.num_features


def implant(net: MobileFaceNet, blocks: Sequence[int], make: Callable[[int], nn.Module]) -> MobileFaceNet:
    """`net` with `make(channels)` appended to the residual branch of each bottleneck in `blocks` (in place)."""
    allowed = set(residual_blocks(net))
    for index in blocks:
        if index not in allowed:
            raise ValueError(f"features.{index} has no residual connection; choose from {sorted(allowed)}")
        block = net.features[index]
        assert isinstance(block, InvertedResidual)
        block.conv.append(make(block_channels(block)))
    return net


def sranet(trunk_weights: Path | None = None, blocks: Sequence[int] = DEFAULT_SRANET_BLOCKS, channel: bool = True,
           spatial: bool = True, pool: bool = True, reduction: int = 16) -> MobileFaceNet:
    """MobileFaceNet (pretrained when `trunk_weights` is given) with SRANet's blocks (SCA then SSA, or one of
    them for the ablation; pooled or not) on `blocks`, every parameter trainable."""
    net = MobileFaceNet()
    if trunk_weights is not None:
        net.load_state_dict(torch.load(trunk_weights, map_location="cpu", weights_only=True), strict=True)
    return implant(net, blocks, lambda c: SelfResidualAttention(c, channel=channel, spatial=spatial, pool=pool,
                                                                reduction=reduction))
