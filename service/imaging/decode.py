"""Decode uploaded bytes into an RGB uint8 array, enforcing the byte and pixel limits and bounding the memory.

Pillow reads JPEG, PNG, WebP, BMP, TIFF and GIF; EXIF orientation is applied, grayscale and palette images are
expanded to RGB and alpha is composited over white. High-bit-depth grayscale and float images (16-bit, 32-bit
integer and float TIFFs, 16-bit PNGs) are windowed linearly to 8 bits: their lowest value becomes 0 and their
highest 255 (so 12-bit data in a 16-bit file and floats of any scale come out visible, never clipped to black or
white); 16-bit RGB is read by Pillow as its high bytes. A colour mode we cannot convert is `UnsupportedImage`.

Memory (docs/memory.md): the pixel limit is checked from the header, before decoding; an image whose longer side
exceeds `max_decode_side` is decoded reduced to that side (a JPEG by its decoder's DCT scaling, `draft`, then
every format by area averaging), and the conversion to RGB, the compositing of alpha and the reduction run in
strips of a few MiB, so a decode holds the image as decoded plus the small result, never a full-size copy. Before
it decodes, the bytes it will hold are estimated from the header and reserved from the process's decode budget
(`imaging/budget.py`), which bounds what all the decodes in flight hold together.

The result is at most `max_decode_side` on its longer side; `DecodedImage` also carries the original size, so
that coordinates can be reported in the pixels of the photo the client sent.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from service.errors import (
    EmptyImage,
    ImageTooLarge,
    ImageTooManyPixels,
    ImageTooSmall,
    InvalidImage,
    UnsupportedImage,
)
from service.imaging.budget import budget_for
from service.settings import DecodeLimits

# We enforce our own pixel limit from the header; Pillow's bomb check would raise a less clear error first.
Image.MAX_IMAGE_PIXELS = None

STRIP_BYTES = 4 * 1024 * 1024  # the decoded rows converted at a time
ALPHA_MODES = ("RGBA", "RGBa", "LA", "PA")
WINDOWED_MODES = ("I", "F", "I;16", "I;16L", "I;16B", "I;16N")
ORIENTATION = 0x0112
WHITE = (255, 255, 255, 255)


@dataclass(frozen=True)
class DecodedImage:
    """The decoded photo: `pixels` H x W x 3 RGB uint8, reduced when the photo is larger than `max_decode_side`;
    `width` and `height` are the photo's own size (after EXIF orientation)."""

    pixels: np.ndarray
    width: int
    height: int

    @property
    def scale(self) -> tuple[float, float]:
        """(x, y) factors from the photo's pixels to `pixels`' (1.0 unless reduced)."""
        return self.pixels.shape[1] / self.width, self.pixels.shape[0] / self.height

    @property
    def reduced(self) -> bool:
        return self.pixels.shape[:2] != (self.height, self.width)


def decode_image(data: bytes, limits: DecodeLimits, field: str = "image") -> np.ndarray:
    """Return an `H x W x 3` RGB uint8 array (at most `max_decode_side` on its longer side) or raise a
    `ServiceError` naming the upload field."""
    return decode(data, limits, field).pixels


def decode(data: bytes, limits: DecodeLimits, field: str = "image") -> DecodedImage:
    """The decoded photo and its original size, or a `ServiceError` naming the upload field."""
    if not data:
        raise EmptyImage(f"{field}: the upload is empty (0 bytes)")
    if len(data) > limits.max_image_bytes:
        raise ImageTooLarge(f"{field}: {len(data)} bytes exceeds the limit of {limits.max_image_bytes} bytes")
    budget = budget_for(limits.decode_memory_budget, limits.decode_wait_s)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > limits.max_image_pixels:
                raise ImageTooManyPixels(f"{field}: {width}x{height} = {width * height} pixels exceeds the limit "
                                         f"of {limits.max_image_pixels}")
            out_size = reduced_size(width, height, limits.max_decode_side)
            if out_size != (width, height) and image.format in ("JPEG", "MPO"):
                image.draft(image.mode, out_size)  # libjpeg decodes at 1/2, 1/4 or 1/8, still >= out_size
            need = estimate_bytes(image, width, height, out_size) + len(data)  # + the codec's copy of the file
            with budget.reserve(need, field) as reservation:
                try:
                    image.load()
                    orientation = int(image.getexif().get(ORIENTATION, 1) or 1)
                    if orientation in (5, 6, 7, 8):
                        width, height = height, width
                    if min(width, height) < limits.min_image_side:
                        raise ImageTooSmall(f"{field}: {width}x{height} is below the minimum side of "
                                            f"{limits.min_image_side} pixels")
                    pixels = orient(to_rgb(image, out_size, field), orientation)
                finally:
                    image.close()  # free the decoded image before its reservation goes back
                reservation.hold_until_freed(pixels, pixels.nbytes)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidImage(f"{field}: not a decodable image ({exc.__class__.__name__}: {exc})") from exc
    return DecodedImage(pixels, width, height)


def reduced_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The size an image is decoded to: itself, or scaled (aspect kept) to `max_side` on its longer side."""
    longer = max(width, height)
    if longer <= max_side:
        return width, height
    factor = max_side / longer
    return max(1, round(width * factor)), max(1, round(height * factor))


def pixel_bytes(mode: str) -> int:
    """Bytes per pixel of Pillow's own storage of a mode (RGB is stored in 4 bytes, like RGBA)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


def jpeg_coefficient_bytes(image: Image.Image, width: int, height: int) -> int:
    """What libjpeg holds for a progressive JPEG besides the pixels: every DCT coefficient of the whole image
    (2 bytes each, per component at its sampling), whatever scale it decodes to."""
    layers = getattr(image, "layer", None) or [("Y", 1, 1, 0)] * 3
    h_max = max(h for _, h, _, _ in layers)
    v_max = max(v for _, _, v, _ in layers)
    return sum(math.ceil(width * h / h_max / 8) * math.ceil(height * v / v_max / 8) * 64 * 2
               for _, h, v, _ in layers)


def estimate_bytes(image: Image.Image, width: int, height: int, out_size: tuple[int, int]) -> int:
    """The most bytes one decode holds at once, from the header: the image as its decoder fills it (after any
    JPEG scaling), the decoder's own buffers, the strips being converted (a few temporaries each), and the result
    (twice: the EXIF rotation copies it). Checked against measured peaks in tests/service/test_memory_bound.py."""
    decoded_w, decoded_h = image.size  # after `draft`
    decoded = decoded_w * decoded_h * pixel_bytes(image.mode)
    codec = 0
    if image.format in ("JPEG", "MPO") and image.info.get("progressive"):
        codec = jpeg_coefficient_bytes(image, width, height)
    elif image.format == "WEBP":
        # libwebp's animation decoder keeps two RGBA canvases, and Pillow gets the frame as bytes before copying
        codec = 3 * decoded_w * decoded_h * 4
    strips = 8 * STRIP_BYTES
    result = 2 * out_size[0] * out_size[1] * 3
    return decoded + codec + strips + result


def window(image: Image.Image, rows: int) -> tuple[float, float]:
    """The lowest and highest finite value of a one-channel high-bit-depth image (strip by strip where Pillow's
    own `getextrema` cannot tell: byte-swapped modes, or floats holding NaN or infinities)."""
    if image.mode in ("I", "I;16", "F"):
        lo, hi = (float(v) for v in image.getextrema())  # type: ignore[arg-type]
        if math.isfinite(lo) and math.isfinite(hi):
            return lo, hi
    lo, hi = math.inf, -math.inf
    for y in range(0, image.height, rows):
        values = np.asarray(image.crop((0, y, image.width, min(image.height, y + rows))))
        finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
        if finite.size:
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
    return (lo, hi) if lo <= hi else (0.0, 0.0)


Stage = Callable[[Image.Image], Image.Image]


def stages(image: Image.Image, rows: int, field: str) -> tuple[Stage, Stage]:
    """How a strip of this image becomes RGB, in two steps around the reduction: `prepare` (at full size, on a
    strip of the decoded image) to a mode Pillow can area-average, `finish` (on the reduced strip) to RGB.
    Compositing over white after averaging premultiplied colours (Pillow's way for RGBA) is the same as before
    it, and windowing is linear, so both run on the reduced strip."""
    mode = image.mode
    if mode in ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        def composite(strip: Image.Image) -> Image.Image:
            return Image.alpha_composite(Image.new("RGBA", strip.size, WHITE), strip).convert("RGB")

        return (lambda strip: strip if strip.mode == "RGBA" else strip.convert("RGBA")), composite
    if mode in WINDOWED_MODES:
        lo, hi = window(image, rows)
        gain = 255.0 / (hi - lo) if hi > lo else 0.0

        def stretch(strip: Image.Image) -> Image.Image:
            scaled = (np.asarray(strip).astype(np.float32) - lo) * gain
            if strip.mode == "F":
                scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
            return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L").convert("RGB")

        # Pillow averages I and F correctly, not the 16-bit modes of the other byte order: widen those to I
        return (lambda strip: strip if strip.mode in ("I", "F") else strip.convert("I")), stretch
    try:
        Image.new(mode, (1, 1)).convert("RGB")
    except (ValueError, OSError) as exc:
        raise UnsupportedImage(f"{field}: images of colour mode {mode} are not supported ({exc})") from exc
    return (lambda strip: strip if strip.mode == "RGB" else strip.convert("RGB")), (lambda strip: strip)


def to_rgb(image: Image.Image, out_size: tuple[int, int], field: str) -> np.ndarray:
    """The loaded image as an `out_size` RGB uint8 array, converted (and area-reduced) strip by strip."""
    src_w, src_h = image.size
    out_w, out_h = out_size
    src_rows = max(1, STRIP_BYTES // (src_w * max(4, pixel_bytes(image.mode))))
    prepare, finish = stages(image, src_rows, field)
    out = np.empty((out_h, out_w, 3), dtype=np.uint8)
    if (out_w, out_h) == (src_w, src_h):
        for y in range(0, src_h, src_rows):
            y1 = min(src_h, y + src_rows)
            out[y:y1] = np.asarray(finish(prepare(image.crop((0, y, src_w, y1)))))
        return out
    step = src_h / out_h  # source rows per output row
    out_rows = max(1, int(src_rows / step))
    for oy in range(0, out_h, out_rows):
        oy1 = min(out_h, oy + out_rows)
        top, bottom = oy * step, oy1 * step
        iy, iy1 = math.floor(top), min(src_h, math.ceil(bottom))
        strip = prepare(image.crop((0, iy, src_w, iy1)))
        # BOX: each output pixel is the mean of the source pixels it covers, so strips join seamlessly
        reduced = strip.resize((out_w, oy1 - oy), Image.Resampling.BOX, box=(0.0, top - iy, float(src_w), bottom - iy))
        out[oy:oy1] = np.asarray(finish(reduced))
    return out


def orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (as `ImageOps.exif_transpose` would) to an RGB array."""
    turns: dict[int, Callable[[np.ndarray], np.ndarray]] = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
        8: lambda a: np.rot90(a, 1),
    }
    if orientation not in turns:
        return pixels
    return np.ascontiguousarray(turns[orientation](pixels))
