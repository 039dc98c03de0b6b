"""The fine-tuning augmentation of the attention embedders and of their controls (the same for both, so a gain is
the method's): on an aligned 112 x 112 crop, at random, a horizontal flip, a loss of resolution (blur and
down-sampling to a smaller face, then back up to 112, as the trunk sees a small face) and one synthetic
occlusion (`training.data.occlusion`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from training.data.degrade import DegradeConfig, degrade, upsample
from training.data.occlusion import OcclusionConfig, random_occlusion


@dataclass(frozen=True)
class AugmentConfig:
    flip_prob: float = 0.5
    low_res_prob: float = 0.3
    low_res_sizes: tuple[int, ...] = (28, 40, 56, 80)  # face sizes (px) the crop is brought down to
    degrade: DegradeConfig = field(default_factory=DegradeConfig)
    occlusion: OcclusionConfig = field(default_factory=OcclusionConfig)


def augment(crop: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> tuple[np.ndarray, list[str]]:
    """An augmented copy of a 112 x 112 uint8 RGB crop, and what was done to it (for logs and tests)."""
    out, done = crop, list[str]()
    if rng.random() < cfg.flip_prob:
        out, done = np.ascontiguousarray(out[:, ::-1]), [*done, "flip"]
    if rng.random() < cfg.low_res_prob:
        size = int(rng.choice(cfg.low_res_sizes))
        out, done = upsample(degrade(out, size, rng, cfg.degrade), crop.shape[0]), [*done, f"low-res {size}"]
    out, kind = random_occlusion(out, rng, cfg.occlusion)
    if kind != "none":
        done.append(kind)
    return (out if out is not crop else crop.copy()), done
