"""Decode uploaded bytes into an RGB uint8 array, enforcing the byte and pixel limits.

Pillow reads JPEG, PNG, WebP, BMP, TIFF and GIF; EXIF orientation is applied, grayscale and palette images are
expanded to RGB and alpha is composited over white. The pixel limit is checked from the header, before decoding.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import EmptyImage, ImageTooLarge, ImageTooManyPixels, ImageTooSmall, InvalidImage
from service.settings import DecodeLimits

# We enforce our own pixel limit from the header; Pillow's bomb check would raise a less clear error first.
Image.MAX_IMAGE_PIXELS = None


def decode_image(data: bytes, limits: DecodeLimits, field: str = "image") -> np.ndarray:
    """Return an `H x W x 3` RGB uint8 array or raise a `ServiceError` naming the upload field."""
    image: Image.Image
    if not data:
        raise EmptyImage(f"{field}: the upload is empty (0 bytes)")
    if len(data) > limits.max_image_bytes:
        raise ImageTooLarge(f"{field}: {len(data)} bytes exceeds the limit of {limits.max_image_bytes} bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > limits.max_image_pixels:
                raise ImageTooManyPixels(f"{field}: {width}x{height} = {width * height} pixels exceeds the limit "
                                         f"of {limits.max_image_pixels}")
            image.load()
            image = ImageOps.exif_transpose(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidImage(f"{field}: not a decodable image ({exc.__class__.__name__}: {exc})") from exc
    width, height = image.size
    if min(width, height) < limits.min_image_side:
        raise ImageTooSmall(f"{field}: {width}x{height} is below the minimum side of {limits.min_image_side} pixels")
    return _to_rgb(image)


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode == "I;16" or image.mode == "I":
        arr = np.asarray(image, dtype=np.float32)
        arr = (255.0 * (arr - arr.min()) / max(float(arr.max() - arr.min()), 1.0)).astype(np.uint8)
        image = Image.fromarray(arr, mode="L")
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
