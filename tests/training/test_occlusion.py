"""Synthetic occlusions land on the part of the face they name, from the template points, at any crop size."""

from __future__ import annotations

import numpy as np
import pytest

from service.imaging.align import template_for
from training.data.occlusion import KINDS, OcclusionConfig, occlude, random_occlusion


def noise_crop(size: int = 112, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)


def changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return np.any(before != after, axis=2)


def at(mask: np.ndarray, point: np.ndarray) -> bool:
    x, y = (round(float(v)) for v in point)
    return bool(mask[y, x])


@pytest.mark.parametrize("size", [112, 56])
def test_mask_covers_nose_tip_mouth_and_chin_and_leaves_the_eyes(size: int) -> None:
    crop = noise_crop(size)
    out = occlude(crop, "mask", np.random.default_rng(1))
    diff = changed(crop, out)
    t = template_for(size)
    iod = float(np.linalg.norm(t[1] - t[0]))
    assert at(diff, t[2]) and at(diff, t[3]) and at(diff, t[4])  # nose tip, mouth corners
    assert at(diff, (t[3] + t[4]) / 2 + np.array([0.0, 0.5 * iod]))  # the chin below the mouth
    assert not at(diff, t[0]) and not at(diff, t[1])  # the eyes
    assert not diff[: int(t[0][1]) + 1].any()  # nothing at or above the eye line


@pytest.mark.parametrize("size", [112, 56])
def test_sunglasses_cover_the_eyes_and_leave_nose_tip_and_mouth(size: int) -> None:
    crop = noise_crop(size)
    out = occlude(crop, "sunglasses", np.random.default_rng(2))
    diff = changed(crop, out)
    t = template_for(size)
    assert at(diff, t[0]) and at(diff, t[1])
    assert at(diff, (t[0] + t[1]) / 2 - np.array([0.0, 0.05 * float(np.linalg.norm(t[1] - t[0]))]))  # the bridge
    assert not at(diff, t[2]) and not at(diff, t[3]) and not at(diff, t[4])
    assert 0.04 < diff.mean() < 0.2  # two lenses and a bridge, not a band over half the face
    assert out[diff].mean() < 70  # dark lenses


def test_block_covers_its_share_of_the_crop() -> None:
    crop = noise_crop()
    for seed in range(20):
        out = occlude(crop, "block", np.random.default_rng(seed), OcclusionConfig(block_area=(0.1, 0.3)))
        diff = changed(crop, out)
        ys, xs = np.nonzero(diff)
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        assert 0.09 * 112 * 112 <= box <= 0.31 * 112 * 112, seed  # one rectangle of 10-30 % of the crop
        assert diff.sum() >= 0.95 * box  # changed inside it (a random pixel may equal the one it replaces)


@pytest.mark.parametrize("kind", KINDS)
def test_occlude_is_a_pure_function_of_crop_and_seed(kind: str) -> None:
    crop = noise_crop(seed=3)
    before = crop.copy()
    a = occlude(crop, kind, np.random.default_rng(7))  # type: ignore[arg-type]
    b = occlude(crop, kind, np.random.default_rng(7))  # type: ignore[arg-type]
    np.testing.assert_array_equal(crop, before)  # the input is not drawn on
    np.testing.assert_array_equal(a, b)
    assert a.shape == crop.shape and a.dtype == np.uint8


def test_occlude_refuses_what_is_not_an_aligned_crop() -> None:
    with pytest.raises(ValueError):
        occlude(np.zeros((112, 96, 3), np.uint8), "mask", np.random.default_rng(0))
    with pytest.raises(ValueError):
        occlude(np.zeros((112, 112, 3), np.float32), "mask", np.random.default_rng(0))
    with pytest.raises(ValueError):
        occlude(noise_crop(), "scarf", np.random.default_rng(0))  # type: ignore[arg-type]


def test_random_occlusion_follows_its_probability_and_weights() -> None:
    crop = noise_crop()
    rng = np.random.default_rng(0)
    none_cfg = OcclusionConfig(prob=0.0)
    out, kind = random_occlusion(crop, rng, none_cfg)
    assert kind == "none" and out is crop
    cfg = OcclusionConfig(prob=1.0, kinds=(("mask", 3.0), ("sunglasses", 1.0), ("block", 0.0)))
    kinds = [random_occlusion(crop, rng, cfg)[1] for _ in range(400)]
    assert "block" not in kinds and "none" not in kinds
    assert 0.65 < kinds.count("mask") / len(kinds) < 0.85
    half = OcclusionConfig(prob=0.5)
    drawn = [random_occlusion(crop, rng, half)[1] != "none" for _ in range(400)]
    assert 0.4 < float(np.mean(drawn)) < 0.6
