"""Synthetic occlusions drawn on an aligned face crop: a lower-face mask, a sunglasses band, a random block.

Aligned crops put the eyes, the nose tip and the mouth corners where the ArcFace template says (scaled to the
crop's size: `service.imaging.align.template_for`), so each occluder is placed from those five points and the
inter-ocular distance, without detecting anything: the same occluder lands on the same part of every face. They
serve as training augmentation for the attention embedders and as the occluded probes of their benchmarks.
`python -m training.data.occlusion` draws each on a few peopleDevTest faces into runs/occlusions.png (LFW faces:
it stays out of the repository).

- `mask`: a surgical-style mask from the lower half of the nose to below the chin, cheek to cheek, with a
  rounded lower edge, in one of a few fabric colours with faint horizontal pleats.
- `sunglasses`: two dark lenses over the eyes joined by a bridge, a little wider than the eyes.
- `block`: a rectangle of 10-30 % of the crop (random aspect and place) of flat colour or noise.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from service.imaging.align import template_for

Kind = Literal["mask", "sunglasses", "block"]
KINDS: tuple[Kind, ...] = ("mask", "sunglasses", "block")

MASK_COLOURS = ((168, 200, 224), (236, 236, 236), (40, 40, 44), (120, 124, 130))  # RGB: blue, white, black, grey
LENS_COLOURS = ((18, 18, 20), (40, 32, 26), (24, 30, 40))


@dataclass(frozen=True)
class Points:
    """The template's five points in a crop of one size, and the inter-ocular distance."""

    left_eye: np.ndarray
    right_eye: np.ndarray
    nose: np.ndarray
    mouth_left: np.ndarray
    mouth_right: np.ndarray

    @classmethod
    def of(cls, size: int) -> Points:
        t = template_for(size)
        return cls(t[0], t[1], t[2], t[3], t[4])

    @property
    def iod(self) -> float:
        return float(np.linalg.norm(self.right_eye - self.left_eye))


@dataclass(frozen=True)
class OcclusionConfig:
    """How training occludes: with probability `prob`, one occluder drawn with the weights of `kinds`."""

    prob: float = 0.3
    kinds: tuple[tuple[Kind, float], ...] = (("mask", 1.0), ("sunglasses", 1.0), ("block", 1.0))
    block_area: tuple[float, float] = (0.10, 0.30)


def mask_polygon(size: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """The outline of a lower-face mask in a crop of `size` (int32 N x 2, x y)."""
    p = Points.of(size)
    iod = p.iod
    jitter = (lambda s: float(rng.uniform(-s, s))) if rng is not None else (lambda s: 0.0)
    top = p.nose[1] - (0.22 + jitter(0.06)) * iod  # the lower half of the nose
    left = p.left_eye[0] - (0.55 + jitter(0.05)) * iod
    right = p.right_eye[0] + (0.55 + jitter(0.05)) * iod
    side = (p.mouth_left[1] + p.nose[1]) / 2  # where the cheeks meet the mask's sides
    chin = (p.mouth_left[1] + p.mouth_right[1]) / 2 + (0.75 + jitter(0.08)) * iod
    centre_x = p.nose[0]
    shoulder = top + 0.12 * iod
    inset = 0.25 * iod
    upper = [(left, side), (left + inset, shoulder), (centre_x, top), (right - inset, shoulder), (right, side)]
    # the lower edge: half an ellipse from one side to the other through the chin
    angles = np.linspace(0.0, np.pi, 24)
    rx, ry = (right - left) / 2, chin - side
    lower = [(centre_x + rx * np.cos(a), side + ry * np.sin(a)) for a in angles]
    return np.round(np.array(upper + lower, dtype=np.float64)).astype(np.int32)


def draw_mask(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = crop.copy()
    size = crop.shape[0]
    polygon = mask_polygon(size, rng)
    colour = np.array(MASK_COLOURS[int(rng.integers(len(MASK_COLOURS)))], dtype=np.float64)
    region = np.zeros(crop.shape[:2], dtype=np.uint8)
    cv2.fillPoly(region, [polygon], 1)
    shade = np.ones(crop.shape[:2], dtype=np.float64)
    ys = np.arange(size, dtype=np.float64)[:, None]
    period = max(3.0, size / 14)
    shade *= 0.93 + 0.07 * np.cos(2 * np.pi * ys / period)  # pleats
    fabric = np.clip(colour[None, None, :] * shade[..., None], 0, 255).astype(np.uint8)
    out[region.astype(bool)] = fabric[region.astype(bool)]
    return out


def draw_sunglasses(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = crop.copy()
    p = Points.of(crop.shape[0])
    iod = p.iod
    colour = LENS_COLOURS[int(rng.integers(len(LENS_COLOURS)))]
    half_width = (0.42 + rng.uniform(-0.03, 0.04)) * iod
    half_height = (0.28 + rng.uniform(-0.02, 0.04)) * iod
    axes = (max(1, round(half_width)), max(1, round(half_height)))
    for eye in (p.left_eye, p.right_eye):
        centre = (round(float(eye[0])), round(float(eye[1]) + rng.uniform(-0.03, 0.03) * iod))
        cv2.ellipse(out, centre, axes, 0.0, 0.0, 360.0, colour, thickness=-1, lineType=cv2.LINE_AA)
    bridge_y = round(float(p.left_eye[1] + p.right_eye[1]) / 2 - 0.05 * iod)
    start = (round(float(p.left_eye[0]) + axes[0] - 1), bridge_y)
    end = (round(float(p.right_eye[0]) - axes[0] + 1), bridge_y)
    cv2.line(out, start, end, colour, thickness=max(1, round(0.06 * iod)), lineType=cv2.LINE_AA)
    return out


def block_rect(size: int, rng: np.random.Generator, area: tuple[float, float]) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 of a random block covering a fraction in `area` of a size x size crop."""
    fraction = rng.uniform(*area)
    aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
    w = int(np.clip(round(size * np.sqrt(fraction * aspect)), 1, size))
    h = int(np.clip(round(size * size * fraction / w), 1, size))
    x0 = int(rng.integers(0, size - w + 1))
    y0 = int(rng.integers(0, size - h + 1))
    return x0, y0, x0 + w, y0 + h


def draw_block(crop: np.ndarray, rng: np.random.Generator, area: tuple[float, float] = (0.10, 0.30)) -> np.ndarray:
    out = crop.copy()
    x0, y0, x1, y1 = block_rect(crop.shape[0], rng, area)
    if rng.random() < 0.5:
        out[y0:y1, x0:x1] = rng.integers(0, 256, size=3, dtype=np.uint8)
    else:
        out[y0:y1, x0:x1] = rng.integers(0, 256, size=(y1 - y0, x1 - x0, 3), dtype=np.uint8)
    return out


def occlude(crop: np.ndarray, kind: Kind, rng: np.random.Generator, cfg: OcclusionConfig | None = None
            ) -> np.ndarray:
    """A copy of an aligned square uint8 RGB crop with one occluder of `kind` drawn on it."""
    if crop.ndim != 3 or crop.shape[0] != crop.shape[1] or crop.shape[2] != 3 or crop.dtype != np.uint8:
        raise ValueError(f"occlude takes a square H x W x 3 uint8 crop, not {crop.shape} {crop.dtype}")
    if kind == "mask":
        return draw_mask(crop, rng)
    if kind == "sunglasses":
        return draw_sunglasses(crop, rng)
    if kind == "block":
        return draw_block(crop, rng, (cfg or OcclusionConfig()).block_area)
    raise ValueError(f"unknown occlusion {kind!r}; one of {KINDS}")


def random_occlusion(crop: np.ndarray, rng: np.random.Generator, cfg: OcclusionConfig) -> tuple[np.ndarray, str]:
    """Training augmentation: with probability `cfg.prob` the crop with one occluder drawn at random by the
    weights of `cfg.kinds`, else the crop itself; and the kind drawn (`none` for none)."""
    if rng.random() >= cfg.prob:
        return crop, "none"
    kinds = [k for k, _ in cfg.kinds]
    weights = np.array([w for _, w in cfg.kinds], dtype=np.float64)
    kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
    return occlude(crop, kind, rng, cfg), kind


def preview(crops: list[np.ndarray], out: Path, seed: int = 0) -> Path:
    """A grid PNG: each crop clean, then with each occluder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(crops), 1 + len(KINDS), figsize=(1.5 * (1 + len(KINDS)), 1.5 * len(crops)),
                             squeeze=False)
    for row, crop in enumerate(crops):
        for col, (title, image) in enumerate([("clean", crop)] + [(k, occlude(crop, k, rng)) for k in KINDS]):
            axes[row, col].imshow(image)
            axes[row, col].axis("off")
            if row == 0:
                axes[row, col].set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main() -> None:
    from evaluation.lfw import image_name, images_dir, lfw_root, read_people
    from service.core.wiring import build_offline

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/occlusions.png"))
    parser.add_argument("--faces", type=int, default=5, help="peopleDevTest identities shown (default 5)")
    args = parser.parse_args()
    root = lfw_root()
    people = read_people(root / "peopleDevTest.txt")
    step = max(1, len(people) // args.faces)
    faces = build_offline()
    crops = []
    for person in people[::step]:
        data = (images_dir(root) / image_name(person.name, 1)).read_bytes()
        crop = faces.path.main_face_crop(data, faces.face_filter, 112)
        if crop is not None:
            crops.append(crop)
        if len(crops) == args.faces:
            break
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print(f"wrote {preview(crops, args.out)}")


if __name__ == "__main__":
    main()
