"""Test images made from real LFW photos: re-encoded, combined, rotated, corrupted."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def encode(image: Image.Image, fmt: str = "JPEG", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def side_by_side(*paths: Path) -> bytes:
    """One JPEG showing several LFW photos next to each other: several faces."""
    images = [Image.open(p).convert("RGB") for p in paths]
    canvas = Image.new("RGB", (sum(i.width for i in images), max(i.height for i in images)), (128, 128, 128))
    x = 0
    for image in images:
        canvas.paste(image, (x, 0))
        x += image.width
    return encode(canvas)


def blank(width: int = 200, height: int = 200, value: int = 128) -> bytes:
    return encode(Image.fromarray(np.full((height, width, 3), value, dtype=np.uint8)), "PNG")


def tiny_face_scene(path: Path, face_px: float, canvas: int = 160) -> tuple[bytes, float]:
    """The LFW photo downscaled (area) so that its face box is about `face_px` on its larger side, pasted on a
    grey canvas. Returns lossless PNG bytes and the scale factor applied to the photo.
    """
    photo = Image.open(path).convert("RGB")
    scale = face_px / 125.0  # the detector's box of a deep-funneled LFW face is about 125 px tall in 250 px
    small = photo.resize((max(1, round(photo.width * scale)), max(1, round(photo.height * scale))), Image.BOX)
    scene = Image.new("RGB", (canvas, canvas), (120, 120, 120))
    scene.paste(small, ((canvas - small.width) // 2, (canvas - small.height) // 2))
    return encode(scene, "PNG"), scale
