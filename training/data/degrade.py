"""Low-resolution synthesis from an aligned 112 x 112 crop, consistent with the service's geometry.

The service aligns a face of about r source pixels straight to r x r with the ArcFace template scaled by r / 112;
area-downsampling our 112 crop to r x r gives the same geometry. Training adds, at random: a Gaussian blur
(applied at 112 with a standard deviation given in low-resolution pixels), JPEG re-encoding at r x r and
horizontal flips (the flip is decided by the caller, because the cached teacher features depend on it).
Evaluation uses the clean `downsample` only.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from training.config import MEAN, STD


@dataclass(frozen=True)
class DegradeConfig:
    blur_prob: float = 0.5
    blur_sigma_lr: tuple[float, float] = (0.2, 0.8)  # in low-resolution pixels
    jpeg_prob: float = 0.4
    jpeg_quality: tuple[int, int] = (40, 95)


def downsample(crop: np.ndarray, resolution: int) -> np.ndarray:
    """Area downsampling of an H x W x 3 uint8 crop to resolution x resolution."""
    if crop.shape[0] == resolution:
        return crop.copy()
    return cv2.resize(crop, (resolution, resolution), interpolation=cv2.INTER_AREA)


def upsample(crop: np.ndarray, size: int = 112) -> np.ndarray:
    """Bicubic upsampling back to the trunk's input size (the baseline path)."""
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_CUBIC)


def degrade(crop: np.ndarray, resolution: int, rng: np.random.Generator, cfg: DegradeConfig) -> np.ndarray:
    """A random low-resolution version (uint8, r x r x 3) of a 112 crop."""
    image = crop
    if rng.random() < cfg.blur_prob:
        sigma = rng.uniform(*cfg.blur_sigma_lr) * crop.shape[0] / resolution
        image = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma)
    small = downsample(image, resolution)
    if rng.random() < cfg.jpeg_prob:
        quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
        ok, buf = cv2.imencode(".jpg", small[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else None
        if decoded is not None:
            small = decoded[..., ::-1]
    return np.ascontiguousarray(small)


def normalise(batch: np.ndarray) -> np.ndarray:
    """N x H x W x 3 uint8 RGB -> N x 3 x H x W float32, (x - 127.5) / 128 like the trunk."""
    x = (batch.astype(np.float32) - MEAN) / STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
