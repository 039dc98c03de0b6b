"""ARFace on the pretrained MobileFaceNet trunk (the Feature-Net) with its Attention-Net.

Training (`net.train()`), for every batch:
- the policy draws one mask per face: from the Attention-Net (`policy="learned"`) or uniformly among the 31
  masks (`policy="random"`, the PickPatch-style ablation);
- the mask zeroes the dropped patches of the input image (eq. 1), and, scaled down, the output of `num_layers`
  bottlenecks drawn at random for the batch, each with probability `layer_prob` (the regularisation; never at
  inference);
- `policy_loss(correct)`, given whether each face was classified right, is the policy gradient of eq. 3 with a
  moving-average baseline b of the batch accuracy: -(1/N) sum_i (R_i - b) log p(mask_i). The paper's R(tau) is
  the batch accuracy, the mean of the R_i; crediting each face's mask with its own R_i has the same expectation
  with less variance (the cross terms R_j log p(mask_i), j != i, have zero mean). The Feature-Net is fixed in
  it: R is a number, and the mask is a sample, so the two losses touch disjoint parameters.

Inference (`net.eval()`, and the exported ONNX graph): the learned policy's most probable mask is applied to the
input image, Attention-Net and Feature-Net in one graph; the random policy keeps the whole face (as PickPatch).
`last_keep` holds the masks of the last forward pass (N x 5: left eye, right eye, nose, mouth corners).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import nn

from training.layers.arface import (
    PATCHES,
    AttentionNet,
    keep_mask,
    log_prob,
    most_probable_keep,
    patch_squares,
    sample_keep,
    scaled_mask,
)
from training.models.mobilefacenet import HEAD_UNIT, N_UNITS, MobileFaceNet

Policy = Literal["learned", "random"]
FIRST_BOTTLENECK = 2  # unit index of features.0


class ARFaceNet(MobileFaceNet):
    """MobileFaceNet (trunk weights keep their names) plus ARFace's Attention-Net and masks."""

    squares: torch.Tensor
    baseline: torch.Tensor

    def __init__(self, policy: Policy = "learned", patch_radius: int = 30, num_layers: int = 3,
                 layer_prob: float = 0.5, baseline_momentum: float = 0.9) -> None:
        super().__init__()
        self.policy = policy
        self.num_layers, self.layer_prob, self.momentum = num_layers, layer_prob, baseline_momentum
        self.attention = AttentionNet(patch_radius) if policy == "learned" else None
        self.register_buffer("squares", patch_squares(patch_radius), persistent=False)
        self.register_buffer("baseline", torch.tensor(-1.0))  # < 0: no batch seen yet
        self.mask: torch.Tensor | None = None
        self.masked_units: set[int] = set()
        self.last_keep: torch.Tensor | None = None
        self.last_logits: torch.Tensor | None = None

    def _start(self, x: torch.Tensor) -> torch.Tensor:
        """Choose this batch's masks and apply the input mask."""
        n = x.shape[0]
        with torch.set_grad_enabled(self.training):  # the policy learns even where the trunk's front is frozen
            self.last_logits = self.attention(x) if self.attention is not None else None
        if self.training:
            logits = self.last_logits if self.last_logits is not None else x.new_zeros(n, len(PATCHES))
            keep = sample_keep(logits)
            units = torch.randperm(HEAD_UNIT - FIRST_BOTTLENECK)[: self.num_layers] + FIRST_BOTTLENECK
            chosen = torch.rand(len(units)) < self.layer_prob
            self.masked_units = {int(u) for u, c in zip(units, chosen, strict=True) if c}
        else:
            logits = self.last_logits
            keep = most_probable_keep(logits) if logits is not None else x.new_ones(n, len(PATCHES))
            self.masked_units = set()
        self.last_keep = keep.detach()
        self.mask = keep_mask(keep, self.squares)
        return x * self.mask

    def forward_units(self, x: torch.Tensor, start: int = 0, stop: int = N_UNITS) -> torch.Tensor:
        if start == 0:
            x = self._start(x)
        elif self.mask is None:
            raise RuntimeError("ARFace runs from unit 0 first: the mask is chosen on the image")
        for i in range(start, stop):
            x = self.unit(i)(x)
            if i in self.masked_units and self.mask is not None:
                x = x * scaled_mask(self.mask, x.shape[-1])
        return x

    def policy_loss(self, correct: torch.Tensor) -> torch.Tensor:
        """Eq. 3 for the last training pass, given per face whether the Feature-Net classified it right; updates
        the baseline. Zero for the random policy."""
        if self.last_logits is None or self.last_keep is None:
            return correct.new_zeros((), dtype=torch.float32)
        reward = correct.float()
        accuracy = reward.mean()
        with torch.no_grad():
            b = accuracy if self.baseline < 0 else self.baseline
            self.baseline.copy_(self.momentum * b + (1 - self.momentum) * accuracy)
        return -((reward - b) * log_prob(self.last_logits, self.last_keep)).mean()

    def policy_parameters(self) -> list[nn.Parameter]:
        return list(self.attention.parameters()) if self.attention is not None else []


def load_trunk(net: ARFaceNet, trunk_weights: Path) -> ARFaceNet:
    """`net` with the pretrained trunk's weights (the Attention-Net keeps its initialisation)."""
    state = torch.load(trunk_weights, map_location="cpu", weights_only=True)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith(("attention.", "baseline")) for k in missing):
        raise ValueError(f"trunk weights do not fit: missing {missing}, unexpected {unexpected}")
    return net
