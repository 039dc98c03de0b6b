"""decode_image: every accepted format to H x W x 3 uint8 RGB, orientation and colour modes normalised, and each
refusal with its code and the upload field in its message. Images are made in memory with Pillow."""

from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
from PIL import Image

from service.errors import (
    EmptyImage,
    ImageTooLarge,
    ImageTooManyPixels,
    ImageTooSmall,
    InvalidImage,
    ServiceError,
)
from service.imaging.decode import decode_image
from service.settings import DecodeLimits

LIMITS = DecodeLimits(max_image_bytes=10 * 1024 * 1024, max_image_pixels=40_000_000, min_image_side=16)
RED, BLUE = (255, 0, 0), (0, 0, 255)


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def halves(width: int = 40, height: int = 20) -> Image.Image:
    """Left half red, right half blue."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2] = RED
    pixels[:, width // 2:] = BLUE
    return Image.fromarray(pixels)


def assert_rgb(arr: np.ndarray, height: int, width: int) -> None:
    assert arr.shape == (height, width, 3)
    assert arr.dtype == np.uint8
    assert arr.flags["C_CONTIGUOUS"]


def close(pixel: np.ndarray, colour: tuple[int, int, int], tol: int = 0) -> bool:
    return bool(np.abs(pixel.astype(int) - np.array(colour)).max() <= tol)


# --- formats ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "kwargs", "tol"),
    [
        ("PNG", {}, 0),
        ("JPEG", {"quality": 95}, 8),
        ("WEBP", {"lossless": True}, 0),
        ("WEBP", {"quality": 90}, 12),
        ("GIF", {}, 0),
        ("BMP", {}, 0),
        ("TIFF", {}, 0),
    ],
)
def test_formats_decode_to_rgb(fmt: str, kwargs: dict[str, object], tol: int) -> None:
    arr = decode_image(encode(halves(), fmt, **kwargs), LIMITS)
    assert_rgb(arr, 20, 40)
    assert close(arr[10, 5], RED, tol)
    assert close(arr[10, 35], BLUE, tol)


@pytest.mark.parametrize(
    ("orientation", "shape", "red_at", "blue_at"),
    [
        (1, (20, 40), (10, 5), (10, 35)),  # as stored
        (3, (20, 40), (10, 35), (10, 5)),  # rotated 180°: red on the right
        (6, (40, 20), (5, 10), (35, 10)),  # rotated 90° clockwise to display: left half on top
        (8, (40, 20), (35, 10), (5, 10)),  # rotated 90° counter-clockwise: left half at the bottom
    ],
)
def test_exif_orientation_is_applied(orientation: int, shape: tuple[int, int], red_at: tuple[int, int],
                                     blue_at: tuple[int, int]) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    arr = decode_image(encode(halves(), "JPEG", quality=95, exif=exif.tobytes()), LIMITS)
    assert_rgb(arr, *shape)
    assert close(arr[red_at], RED, 8)
    assert close(arr[blue_at], BLUE, 8)


def test_grayscale_is_expanded_to_three_equal_channels() -> None:
    gray = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (20, 1))  # 20 x 25
    arr = decode_image(encode(Image.fromarray(gray, mode="L"), "PNG"), LIMITS)
    assert_rgb(arr, 20, 25)
    for channel in range(3):
        np.testing.assert_array_equal(arr[..., channel], gray)


def test_sixteen_bit_grayscale_is_stretched_to_eight_bits() -> None:
    values = np.tile(np.linspace(1000, 3000, 32).astype(np.uint16), (20, 1))
    arr = decode_image(encode(Image.fromarray(values), "PNG"), LIMITS)
    assert_rgb(arr, 20, 32)
    assert int(arr.min()) == 0 and int(arr.max()) == 255
    assert np.all(np.diff(arr[0, :, 0].astype(int)) >= 0)  # order kept
    np.testing.assert_array_equal(arr[..., 0], arr[..., 2])


def test_palette_is_expanded() -> None:
    palette_image = halves().convert("P", palette=Image.Palette.ADAPTIVE, colors=2)
    assert palette_image.mode == "P"
    arr = decode_image(encode(palette_image, "PNG"), LIMITS)
    assert_rgb(arr, 20, 40)
    assert close(arr[10, 5], RED) and close(arr[10, 35], BLUE)


def test_rgba_is_composited_over_white() -> None:
    pixels = np.zeros((20, 40, 4), dtype=np.uint8)
    pixels[:, :20] = (255, 0, 0, 255)  # opaque red
    pixels[:, 20:30] = (0, 0, 255, 0)  # fully transparent: white
    pixels[:, 30:] = (0, 0, 0, 128)  # half-transparent black: mid grey
    arr = decode_image(encode(Image.fromarray(pixels, mode="RGBA"), "PNG"), LIMITS)
    assert_rgb(arr, 20, 40)
    assert close(arr[10, 5], RED)
    assert close(arr[10, 25], (255, 255, 255))
    assert close(arr[10, 35], (127, 127, 127), 1)


def test_gray_with_alpha_is_composited_over_white() -> None:
    pixels = np.zeros((20, 40, 2), dtype=np.uint8)
    pixels[:, :20] = (0, 255)
    pixels[:, 20:] = (0, 0)
    arr = decode_image(encode(Image.fromarray(pixels, mode="LA"), "PNG"), LIMITS)
    assert close(arr[10, 5], (0, 0, 0))
    assert close(arr[10, 35], (255, 255, 255))


def test_palette_transparency_is_composited_over_white() -> None:
    image = Image.new("P", (40, 20), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    image.paste(1, (0, 0, 20, 20))  # left half palette index 1 (red), right half index 0 (transparent black)
    for fmt in ("PNG", "GIF"):
        arr = decode_image(encode(image, fmt, transparency=0), LIMITS)
        assert_rgb(arr, 20, 40)
        assert close(arr[10, 5], RED), fmt
        assert close(arr[10, 35], (255, 255, 255)), fmt


def test_cmyk_jpeg_decodes_to_rgb() -> None:
    arr = decode_image(encode(halves().convert("CMYK"), "JPEG", quality=95), LIMITS)
    assert_rgb(arr, 20, 40)
    assert close(arr[10, 5], RED, 12)


def test_only_the_first_frame_of_an_animation() -> None:
    frames = [Image.new("RGB", (30, 20), RED), Image.new("RGB", (30, 20), BLUE)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    arr = decode_image(data, LIMITS)
    assert_rgb(arr, 20, 30)
    assert close(arr[10, 10], RED)


# --- limits: boundaries are accepted ---------------------------------------------------------------------------


def test_limits_are_inclusive() -> None:
    data = encode(Image.new("RGB", (16, 20), RED), "PNG")
    exact = DecodeLimits(max_image_bytes=len(data), max_image_pixels=16 * 20, min_image_side=16)
    assert_rgb(decode_image(data, exact), 20, 16)


# --- refusals --------------------------------------------------------------------------------------------------


def assert_refusal(err: ServiceError, code: str, field: str) -> None:
    assert err.code == code
    assert err.message == str(err)
    assert err.message.startswith(f"{field}:"), err.message


def test_empty_upload() -> None:
    with pytest.raises(EmptyImage) as err:
        decode_image(b"", LIMITS, "probe")
    assert_refusal(err.value, "empty_image", "probe")


def test_too_many_bytes() -> None:
    data = encode(halves(), "PNG")
    with pytest.raises(ImageTooLarge) as err:
        decode_image(data, DecodeLimits(max_image_bytes=len(data) - 1), "images[2]")
    assert_refusal(err.value, "image_too_large", "images[2]")
    assert str(len(data)) in err.value.message


def test_too_many_bytes_is_checked_before_decoding() -> None:
    with pytest.raises(ImageTooLarge):
        decode_image(b"x" * 101, DecodeLimits(max_image_bytes=100))


def test_too_many_pixels() -> None:
    data = encode(Image.new("RGB", (100, 80)), "PNG")
    with pytest.raises(ImageTooManyPixels) as err:
        decode_image(data, DecodeLimits(max_image_pixels=100 * 80 - 1), "gallery_image")
    assert_refusal(err.value, "image_too_many_pixels", "gallery_image")
    assert "100x80" in err.value.message


def png_declaring(width: int, height: int) -> bytes:
    """A tiny 1 x 1 PNG whose header is rewritten to declare width x height (valid CRC, no pixel data for it)."""
    data = bytearray(encode(Image.new("RGB", (1, 1)), "PNG"))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4: ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17: ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr: ihdr + 17])))
    return bytes(data)


def test_too_many_pixels_is_checked_from_the_header() -> None:
    """A 100 000 x 100 000 image (30 GB of pixels) in under 100 bytes: refused from the header, fast, without
    decoding (decoding would run out of memory or fail as a truncated file)."""
    data = png_declaring(100_000, 100_000)
    assert len(data) < 100
    started = time.monotonic()
    with pytest.raises(ImageTooManyPixels) as err:
        decode_image(data, LIMITS, "probe")
    assert time.monotonic() - started < 2.0
    assert_refusal(err.value, "image_too_many_pixels", "probe")
    assert "100000x100000" in err.value.message


def test_too_small() -> None:
    data = encode(Image.new("RGB", (40, 15), RED), "PNG")
    with pytest.raises(ImageTooSmall) as err:
        decode_image(data, LIMITS, "reference")
    assert_refusal(err.value, "image_too_small", "reference")
    assert "40x15" in err.value.message


def test_min_side_is_checked_after_orientation() -> None:
    """A 40 x 15 photo stored rotated (orientation 6) is 15 x 40: still too small, on its short side."""
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.new("RGB", (40, 15), RED), "JPEG", exif=exif.tobytes())
    with pytest.raises(ImageTooSmall, match="15x40"):
        decode_image(data, LIMITS)


@pytest.mark.parametrize(
    "data",
    [
        b"this is not an image at all",
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,  # PNG signature, broken chunks
        b"\xff\xd8\xff" + bytes(range(256)) * 4,  # JPEG start, garbage after
    ],
)
def test_garbage_bytes(data: bytes) -> None:
    with pytest.raises(InvalidImage) as err:
        decode_image(data, LIMITS, "probe")
    assert_refusal(err.value, "invalid_image", "probe")


def test_truncated_image() -> None:
    data = encode(Image.effect_noise((200, 200), 64).convert("RGB"), "JPEG", quality=95)
    with pytest.raises(InvalidImage) as err:
        decode_image(data[: len(data) // 2], LIMITS, "probe")
    assert_refusal(err.value, "invalid_image", "probe")


def test_default_field_name() -> None:
    with pytest.raises(EmptyImage, match=r"^image:"):
        decode_image(b"", LIMITS)


# --- high bit depth: 16-bit, 32-bit and float images are scaled to 8 bits, not clipped ------------------------


def tiff_of(values: np.ndarray, sample_format: int = 1, little: bool = True) -> bytes:
    """An uncompressed TIFF of an H x W (gray) or H x W x 3 (RGB) array of 16-bit or 32-bit samples, written by
    hand: Pillow writes neither big-endian 16-bit nor 16-bit RGB. sample_format 1: unsigned, 3: IEEE float."""
    order: Literal["<", ">"] = "<" if little else ">"
    height, width = values.shape[:2]
    channels = 1 if values.ndim == 2 else values.shape[2]
    bits = values.dtype.itemsize * 8
    pixels = values.astype(values.dtype.newbyteorder(order)).tobytes()
    per_channel = struct.pack(order + "H" * channels, *[bits] * channels)
    formats = struct.pack(order + "H" * channels, *[sample_format] * channels)
    bits_at, formats_at = 8 + len(pixels), 8 + len(pixels) + len(per_channel)
    ifd_at = formats_at + len(formats)
    short, long_ = 3, 4
    entries = [  # (tag, type, count, value or offset)
        (256, long_, 1, width), (257, long_, 1, height),
        (258, short, channels, bits_at if channels > 2 else bits),
        (259, short, 1, 1), (262, short, 1, 2 if channels == 3 else 1), (273, long_, 1, 8),
        (277, short, 1, channels), (278, long_, 1, height), (279, long_, 1, len(pixels)), (284, short, 1, 1),
        (339, short, channels, formats_at if channels > 2 else sample_format),
    ]
    out = (b"II*\x00" if little else b"MM\x00*") + struct.pack(order + "I", ifd_at) + pixels + per_channel + formats
    out += struct.pack(order + "H", len(entries))
    for tag, kind, count, value in entries:
        if kind == short and count == 1:
            out += struct.pack(order + "HHIHH", tag, kind, count, value, 0)
        else:
            out += struct.pack(order + "HHII", tag, kind, count, value)
    return out + struct.pack(order + "I", 0)


def gradient8(width: int = 64, height: int = 24) -> np.ndarray:
    """Every 8-bit value from 0 to 255 along x (so that windowing to the image's own range changes nothing)."""
    return np.tile(np.linspace(0, 255, width).round().astype(np.uint8), (height, 1))


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("16-bit little-endian", lambda g: tiff_of(g.astype(np.uint16) * 257)),
        ("16-bit big-endian", lambda g: tiff_of(g.astype(np.uint16) * 257, little=False)),
        ("16-bit Pillow", lambda g: encode(Image.fromarray(g.astype(np.uint16) * 257), "TIFF")),
        ("32-bit float 0..1", lambda g: tiff_of(g.astype(np.float32) / 255, sample_format=3)),
        ("32-bit float big-endian", lambda g: tiff_of(g.astype(np.float32) / 255, sample_format=3, little=False)),
        ("32-bit float 0..65535", lambda g: encode(Image.fromarray(g.astype(np.float32) * 257), "TIFF")),
        ("32-bit integer", lambda g: encode(Image.fromarray(g.astype(np.int32) * 1000 - 5000), "TIFF")),
        ("16-bit PNG", lambda g: encode(Image.fromarray(g.astype(np.uint16) * 257), "PNG")),
    ],
)
def test_high_bit_depth_gray_matches_the_8_bit_original(name: str, make: object) -> None:
    """Before: big-endian 16-bit came out white and floats black (Pillow's conversion clips)."""
    original = gradient8()
    arr = decode_image(make(original), LIMITS)  # type: ignore[operator]
    assert_rgb(arr, *original.shape)
    assert np.abs(arr[..., 0].astype(int) - original).max() <= 1, name
    np.testing.assert_array_equal(arr[..., 0], arr[..., 2])


def test_sixteen_bit_rgb_matches_the_8_bit_original() -> None:
    rgb = np.stack([gradient8(), gradient8()[:, ::-1], np.full((24, 64), 77, dtype=np.uint8)], axis=-1)
    for little in (True, False):
        arr = decode_image(tiff_of(rgb.astype(np.uint16) * 257, little=little), LIMITS)
        assert_rgb(arr, 24, 64)
        assert np.abs(arr.astype(int) - rgb).max() <= 1


def test_float_nan_and_infinity_do_not_spoil_the_window() -> None:
    values = gradient8().astype(np.float32) / 255
    values[0, 0], values[0, 1], values[0, 2] = np.nan, np.inf, -np.inf
    arr = decode_image(tiff_of(values, sample_format=3), LIMITS)
    assert np.abs(arr[1:, :, 0].astype(int) - gradient8()[1:]).max() <= 1
    assert arr[0, 0, 0] == 0 and arr[0, 1, 0] == 255 and arr[0, 2, 0] == 0


def test_flat_high_bit_depth_image_decodes() -> None:
    arr = decode_image(tiff_of(np.full((20, 30), 40_000, dtype=np.uint16)), LIMITS)
    assert_rgb(arr, 20, 30)


def test_lfw_face_as_16_bit_and_float_tiff_matches_the_8_bit_photo(lfw_dir: Path) -> None:
    from tests.conftest import lfw_photo

    gray = np.asarray(Image.open(lfw_photo(lfw_dir, "Aaron_Peirsol")).convert("L")).astype(int)
    lo, hi = gray.min(), gray.max()
    assert hi - lo > 200  # a real photo, nearly the whole range
    windowed = np.rint((gray - lo) * 255 / (hi - lo))  # what the 8-bit photo is after windowing to its range
    for data in (tiff_of(gray.astype(np.uint16) * 257, little=False), tiff_of(gray.astype(np.float32) / 255, 3)):
        arr = decode_image(data, LIMITS)[..., 0].astype(int)
        assert np.abs(arr - windowed).max() <= 1
        assert np.abs(arr - gray).max() <= 255 - (hi - lo) + 1


def test_a_colour_mode_without_rgb_conversion_is_unsupported() -> None:
    from service.errors import UnsupportedImage
    from service.imaging.decode import stages

    with pytest.raises(UnsupportedImage) as err:
        stages(Image.new("La", (4, 4)), rows=4, field="probe")
    assert_refusal(err.value, "unsupported_image", "probe")


# --- large images are decoded reduced to max_decode_side, in the photo's own coordinates -------------------------


def test_large_image_is_decoded_reduced_keeping_its_original_size() -> None:
    from service.imaging.decode import decode

    data = encode(halves(3000, 1200), "PNG")
    decoded = decode(data, DecodeLimits(max_decode_side=1000))
    assert_rgb(decoded.pixels, 400, 1000)
    assert (decoded.width, decoded.height) == (3000, 1200) and decoded.reduced
    assert decoded.scale == (pytest.approx(1 / 3), pytest.approx(1 / 3))
    assert close(decoded.pixels[200, 10], RED) and close(decoded.pixels[200, 990], BLUE)
    # exactly at the limit: as it is
    small = decode(encode(halves(1000, 400), "PNG"), DecodeLimits(max_decode_side=1000))
    assert not small.reduced and small.pixels.shape == (400, 1000, 3) and small.scale == (1.0, 1.0)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF", "WEBP", "GIF", "BMP"])
def test_reduction_is_an_area_average_in_every_format(fmt: str) -> None:
    """A fine checkerboard averages to grey; the colour halves stay where they were."""
    ys, xs = np.mgrid[0:1200, 0:1800]
    pixels = np.where(((xs + ys) % 2 == 0)[..., None], 255, 0).astype(np.uint8).repeat(3, axis=-1)
    pixels[:600, :, 1:] = 0  # top half: red and black checks
    options: dict[str, dict[str, object]] = {"JPEG": {"quality": 95}, "WEBP": {"lossless": True}}
    kwargs = options.get(fmt, {})
    arr = decode_image(encode(Image.fromarray(pixels), fmt, **kwargs), DecodeLimits(max_decode_side=900))
    assert_rgb(arr, 600, 900)
    assert close(arr[150, 450], (128, 0, 0), 12), arr[150, 450]
    assert close(arr[450, 450], (128, 128, 128), 12), arr[450, 450]


def test_reduced_alpha_is_composited_over_white() -> None:
    pixels = np.zeros((300, 900, 4), dtype=np.uint8)
    pixels[:, :300] = (255, 0, 0, 255)
    pixels[:, 300:600] = (0, 0, 255, 0)
    pixels[:, 600:] = (0, 0, 0, 128)
    arr = decode_image(encode(Image.fromarray(pixels, mode="RGBA"), "PNG"), DecodeLimits(max_decode_side=300))
    assert_rgb(arr, 100, 300)
    assert close(arr[50, 50], RED) and close(arr[50, 150], (255, 255, 255)) and close(arr[50, 250], (127,) * 3, 1)


def test_reduced_sixteen_bit_is_windowed() -> None:
    values = np.tile(np.linspace(1000, 3000, 900).astype(np.uint16), (300, 1))
    arr = decode_image(tiff_of(values, little=False), DecodeLimits(max_decode_side=300))
    assert_rgb(arr, 100, 300)
    assert int(arr[..., 0].min()) <= 1 and int(arr[..., 0].max()) >= 254
    assert np.all(np.diff(arr[0, :, 0].astype(int)) >= 0)


@pytest.mark.parametrize(
    ("orientation", "shape", "red_at", "blue_at"),
    [
        (3, (400, 1000), (200, 990), (200, 10)),
        (6, (1000, 400), (10, 200), (990, 200)),
        (8, (1000, 400), (990, 200), (10, 200)),
    ],
)
def test_orientation_of_a_reduced_jpeg(orientation: int, shape: tuple[int, int], red_at: tuple[int, int],
                                       blue_at: tuple[int, int]) -> None:
    from service.imaging.decode import decode

    exif = Image.Exif()
    exif[0x0112] = orientation
    decoded = decode(encode(halves(3000, 1200), "JPEG", quality=95, exif=exif.tobytes()),
                     DecodeLimits(max_decode_side=1000))
    assert_rgb(decoded.pixels, *shape)
    assert (decoded.height, decoded.width) == (shape[0] * 3, shape[1] * 3)
    assert close(decoded.pixels[red_at], RED, 8) and close(decoded.pixels[blue_at], BLUE, 8)


def test_large_jpeg_is_decoded_by_dct_scaling() -> None:
    """A JPEG 4x larger than the target is decoded by libjpeg at 1/4 (`draft`): the estimate of what the decode
    holds is that of the scaled image, not the full one."""
    from service.imaging.decode import estimate_bytes, reduced_size

    data = encode(halves(4000, 2000), "JPEG", quality=90)
    full, image = Image.open(io.BytesIO(data)), Image.open(io.BytesIO(data))
    out = reduced_size(4000, 2000, 1000)
    image.draft(image.mode, out)
    assert image.size == (1000, 500)
    saved = estimate_bytes(full, 4000, 2000, out) - estimate_bytes(image, 4000, 2000, out)
    assert saved == (4000 * 2000 - 1000 * 500) * 4  # Pillow keeps RGB in 4 bytes a pixel
    assert_rgb(decode_image(data, DecodeLimits(max_decode_side=1000)), 500, 1000)


# --- the decode memory budget -----------------------------------------------------------------------------------


def test_a_decode_waits_for_the_budget_then_is_refused_as_overloaded() -> None:
    from service.errors import DecodeOverloaded
    from service.imaging.budget import budget_for

    limits = DecodeLimits(decode_memory_budget=64 * 1024 * 1024, decode_wait_s=0.2)
    budget = budget_for(limits.decode_memory_budget, limits.decode_wait_s)
    data = encode(halves(), "PNG")
    taken = budget.acquire(budget.capacity, "someone else")
    try:
        started = time.monotonic()
        with pytest.raises(DecodeOverloaded) as err:
            decode_image(data, limits, "probe")
        assert 0.15 < time.monotonic() - started < 2.0
        assert_refusal(err.value, "overloaded", "probe")
    finally:
        budget.release(taken)
    assert_rgb(decode_image(data, limits), 20, 40)


def test_the_decoded_image_holds_its_bytes_until_it_is_freed() -> None:
    from service.imaging.budget import budget_for

    limits = DecodeLimits(decode_memory_budget=96 * 1024 * 1024, decode_wait_s=0.5)
    budget = budget_for(limits.decode_memory_budget, limits.decode_wait_s)
    assert budget.in_use == 0
    arr = decode_image(encode(halves(400, 300), "PNG"), limits)
    assert budget.in_use == arr.nbytes
    view = arr[10:20]
    del arr
    assert budget.in_use > 0  # a view keeps the array alive
    del view
    assert budget.in_use == 0


def test_failed_decodes_give_their_reservation_back() -> None:
    from service.imaging.budget import budget_for

    limits = DecodeLimits(decode_memory_budget=32 * 1024 * 1024, decode_wait_s=0.5)
    budget = budget_for(limits.decode_memory_budget, limits.decode_wait_s)
    data = encode(Image.effect_noise((200, 200), 64).convert("RGB"), "JPEG", quality=95)
    for bad in (data[: len(data) // 2], encode(Image.new("RGB", (40, 15)), "PNG")):
        with pytest.raises(ServiceError):
            decode_image(bad, limits)
    assert budget.in_use == 0


def test_lfw_face_in_16_bit_and_float_tiff_is_detected(model_dir: Path, lfw_dir: Path) -> None:
    """Before: the big-endian 16-bit TIFF decoded white and the float one black, and no face was found."""
    from service.detection import build_detector
    from service.models.manifest import load_manifest
    from service.settings import DetectionSettings
    from tests.conftest import lfw_photo

    detector = build_detector(DetectionSettings(), load_manifest(model_dir), model_dir)
    gray = np.asarray(Image.open(lfw_photo(lfw_dir, "Aaron_Peirsol")).convert("L"))
    for name, data in [("16-bit big-endian", tiff_of(gray.astype(np.uint16) * 257, little=False)),
                       ("16-bit little-endian", tiff_of(gray.astype(np.uint16) * 257)),
                       ("float", tiff_of(gray.astype(np.float32) / 255, sample_format=3))]:
        faces = detector.detect(decode_image(data, LIMITS))
        assert faces and faces[0].score > 0.8, name
        x1, y1, x2, y2 = faces[0].box
        assert 40 < x1 < x2 < 220 and 30 < y1 < y2 < 230, name
