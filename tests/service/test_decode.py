"""decode_image: every accepted format to H x W x 3 uint8 RGB, orientation and colour modes normalised, and each
refusal with its code and the upload field in its message. Images are made in memory with Pillow."""

from __future__ import annotations

import io
import struct
import time
import zlib

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
