"""ARFace's pieces (Zhang et al., "ARFace: Attention-Aware and Regularization for Face Recognition With
Reinforcement Learning"): the five landmark patches of an aligned face, the Attention-Net that decides per patch
whether it is kept, the policy over the 31 masks it can choose (5 patches, never all dropped), and the mask that
zeroes the dropped patches of the image or, scaled down, of a feature map.

After alignment the five landmarks sit at the ArcFace template's points, so a patch is a fixed square of radius
`patch_radius` around one of them (the image is zero-padded by the radius, so every patch has the same size and
is a static slice: the whole network exports to ONNX without any dynamic indexing).

The policy: the Attention-Net gives each patch a keep probability p_i; a mask (one bit per patch) has probability
prod_i p_i^k_i (1 - p_i)^(1 - k_i) / (1 - prod_i (1 - p_i)), the independent draws conditioned on keeping at
least one patch (sampling redraws the faces that dropped all five). Inference takes the most probable mask:
keep the patches with p_i > 0.5, or, if that keeps none, the one most likely kept. Choices the text leaves
open, made here: squares (the paper's figures draw boxes); the Attention-Net (large kernels, pooling, PReLU)
runs once per patch with shared weights and a learned bias per patch position.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

from training.data.occlusion import Points

PATCHES = ("left eye", "right eye", "nose", "left mouth corner", "right mouth corner")
CROP = 112


def patch_centres(size: int = CROP) -> list[tuple[int, int]]:
    """(x, y) of the five template points in a `size` crop, rounded to pixels."""
    p = Points.of(size)
    return [(round(float(q[0])), round(float(q[1]))) for q in (p.left_eye, p.right_eye, p.nose, p.mouth_left,
                                                               p.mouth_right)]


def patch_squares(radius: int, size: int = CROP) -> torch.Tensor:
    """5 x size x size: 1 inside each patch's square (side 2 x radius), 0 elsewhere."""
    squares = torch.zeros(len(PATCHES), size, size)
    for i, (x, y) in enumerate(patch_centres(size)):
        squares[i, max(0, y - radius):y + radius, max(0, x - radius):x + radius] = 1.0
    return squares


def keep_mask(keep: torch.Tensor, squares: torch.Tensor) -> torch.Tensor:
    """N x 1 x H x W: 0 inside every dropped patch (`keep[:, i] == 0`), 1 elsewhere (eq. 1's M)."""
    mask = torch.ones(keep.shape[0], 1, *squares.shape[1:], dtype=squares.dtype, device=squares.device)
    for i in range(squares.shape[0]):
        mask = mask * (1 - (1 - keep[:, i, None, None, None]) * squares[i])
    return mask


def scaled_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """The image mask scaled down to a `size` x `size` feature map (the share of each cell that is kept)."""
    return mask if mask.shape[-1] == size else functional.adaptive_avg_pool2d(mask, size)


def log_prob(logits: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """log p(mask) per face under the policy conditioned on keeping at least one patch."""
    independent = -functional.binary_cross_entropy_with_logits(logits, keep, reduction="none").sum(dim=1)
    all_dropped = functional.logsigmoid(-logits).sum(dim=1)  # log prod (1 - p_i)
    return independent - torch.log1p(-torch.exp(all_dropped).clamp(max=1 - 1e-6))


def sample_keep(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One mask per face from the policy (N x 5 of 0/1), redrawing the faces that dropped every patch."""
    probs = torch.sigmoid(logits.detach())
    keep = torch.bernoulli(probs, generator=generator)
    empty = keep.sum(dim=1) == 0
    while bool(empty.any()):
        keep[empty] = torch.bernoulli(probs[empty], generator=generator)
        empty = keep.sum(dim=1) == 0
    return keep


def most_probable_keep(logits: torch.Tensor) -> torch.Tensor:
    """The most probable mask per face: p_i > 0.5, or the likeliest patch (all tied ones) when that keeps none."""
    keep = (logits > 0).to(logits.dtype)
    top = (logits == logits.max(dim=1, keepdim=True).values).to(logits.dtype)
    none = (keep.sum(dim=1, keepdim=True) == 0).to(logits.dtype)
    return keep + none * top


class AttentionNet(nn.Module):
    """Per patch: conv 7x7/2 -> PReLU -> max pool -> conv 5x5 -> PReLU -> max pool -> mean -> FC, shared by the
    five patches, plus a learned bias per patch; N x 3 x 112 x 112 -> N x 5 keep logits. Starts keeping every
    patch with probability `initial_keep`."""

    def __init__(self, patch_radius: int, width: int = 16, initial_keep: float = 0.5) -> None:
        super().__init__()
        self.radius = patch_radius
        self.centres = patch_centres()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 7, stride=2, padding=3), nn.PReLU(width), nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(width, 2 * width, 5, padding=2), nn.PReLU(2 * width), nn.MaxPool2d(2, ceil_mode=True),
        )
        self.fc = nn.Linear(2 * width, 1)
        self.position = nn.Parameter(torch.full((len(PATCHES),), float(torch.logit(torch.tensor(initial_keep)))))
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """N x 5 x 3 x 2r x 2r: the square around each template point (zero outside the image)."""
        r = self.radius
        padded = functional.pad(x, (r, r, r, r))
        return torch.stack([padded[:, :, y:y + 2 * r, px:px + 2 * r] for px, y in self.centres], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        p = self.patches(x)
        f = self.features(p.flatten(0, 1)).mean(dim=(2, 3))
        return self.fc(f).view(n, len(PATCHES)) + self.position
