"""Fine-tuning augmentation: each operation does what it names, at its configured rate."""

from __future__ import annotations

import cv2
import numpy as np

from training.data.augment import AugmentConfig, augment
from training.data.occlusion import OcclusionConfig

NONE = AugmentConfig(flip_prob=0.0, low_res_prob=0.0, occlusion=OcclusionConfig(prob=0.0))


def crop(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(112, 112, 3), dtype=np.uint8)


def sharpness(image: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def test_nothing_asked_gives_an_equal_copy() -> None:
    c = crop()
    out, done = augment(c, np.random.default_rng(0), NONE)
    assert done == [] and out is not c
    np.testing.assert_array_equal(out, c)


def test_flip_mirrors_the_crop() -> None:
    c = crop()
    out, done = augment(c, np.random.default_rng(0), AugmentConfig(flip_prob=1.0, low_res_prob=0.0,
                                                                   occlusion=OcclusionConfig(prob=0.0)))
    assert done == ["flip"]
    np.testing.assert_array_equal(out, c[:, ::-1])


def test_low_resolution_blurs_and_keeps_the_size() -> None:
    c = crop()
    cfg = AugmentConfig(flip_prob=0.0, low_res_prob=1.0, low_res_sizes=(28,), occlusion=OcclusionConfig(prob=0.0))
    out, done = augment(c, np.random.default_rng(0), cfg)
    assert done == ["low-res 28"] and out.shape == c.shape and out.dtype == np.uint8
    assert sharpness(out) < 0.2 * sharpness(c)


def test_each_operation_runs_at_its_rate() -> None:
    rng = np.random.default_rng(1)
    cfg = AugmentConfig(flip_prob=0.5, low_res_prob=0.3, occlusion=OcclusionConfig(prob=0.2))
    runs = [augment(crop(i % 5), rng, cfg)[1] for i in range(600)]
    flips = np.mean([any(d == "flip" for d in r) for r in runs])
    low = np.mean([any(d.startswith("low-res") for d in r) for r in runs])
    occluded = np.mean([any(d in ("mask", "sunglasses", "block") for d in r) for r in runs])
    assert abs(flips - 0.5) < 0.07 and abs(low - 0.3) < 0.06 and abs(occluded - 0.2) < 0.05
