"""Image decoding: accepted formats, conversions, and every kind of bad file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from service.errors import InvalidImageError, PayloadTooLargeError, UnsupportedImageError
from service.images import decode_image
from tests.support.service import encode, png_claiming

LIMIT = 1_000_000


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "PPM"])
def test_accepted_formats_decode_to_rgb(fmt: str) -> None:
    image = Image.new("RGB", (9, 7), (10, 200, 30))
    decoded = decode_image(encode(image, fmt), max_pixels=LIMIT)
    assert decoded.image.mode == "RGB"
    assert (decoded.width, decoded.height) == (9, 7)
    assert decoded.format == fmt


def test_pgm_grey_is_replicated_to_three_channels() -> None:
    grey = Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4) * 20, mode="L")
    decoded = decode_image(encode(grey, "PPM"), max_pixels=LIMIT)
    pixels = np.asarray(decoded.image)
    assert pixels.shape == (3, 4, 3)
    np.testing.assert_array_equal(pixels[..., 0], np.asarray(grey))
    np.testing.assert_array_equal(pixels[..., 2], np.asarray(grey))


@pytest.mark.parametrize("fmt", ["PNG", "PPM"])
def test_16_bit_grey_is_scaled_not_clipped(fmt: str) -> None:
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    decoded = decode_image(encode(Image.fromarray(values), fmt), max_pixels=LIMIT)
    np.testing.assert_array_equal(np.asarray(decoded.image)[0, :, 0], [0, 1, 128, 255])


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "1", "CMYK"])
def test_other_modes_are_converted(mode: str) -> None:
    image = Image.new("RGB", (5, 4), (120, 60, 30)).convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    decoded = decode_image(encode(image, fmt), max_pixels=LIMIT)
    assert decoded.image.mode == "RGB"
    assert decoded.image.size == (5, 4)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparency_is_composited_over_white(mode: str) -> None:
    pixels = np.zeros((2, 2, 4), dtype=np.uint8)  # black everywhere ...
    pixels[0, 0] = (200, 100, 50, 255)  # ... one opaque pixel
    pixels[0, 1] = (0, 0, 0, 128)  # half transparent black
    image = Image.fromarray(pixels, mode="RGBA")
    if mode == "LA":
        image = image.convert("LA")
    elif mode == "P":  # a palette with a transparent entry (PNG tRNS)
        image = image.convert("RGB").convert("P")
        image.info["transparency"] = image.getpixel((1, 1))
    decoded = np.asarray(decode_image(encode(image, "PNG"), max_pixels=LIMIT).image)
    assert decoded[1, 1].tolist() == [255, 255, 255]  # fully transparent -> white
    assert decoded[0, 0].tolist() != [255, 255, 255]
    if mode == "RGBA":
        assert decoded[0, 0].tolist() == [200, 100, 50]
        assert decoded[0, 1].tolist() == [127, 127, 127]


def test_one_pixel_image() -> None:
    decoded = decode_image(encode(Image.new("L", (1, 1), 77), "PNG"), max_pixels=LIMIT)
    assert np.asarray(decoded.image).tolist() == [[[77, 77, 77]]]


def test_empty_file() -> None:
    with pytest.raises(InvalidImageError, match="empty"):
        decode_image(b"", max_pixels=LIMIT)


@pytest.mark.parametrize("data", [b"hello, world", b"%PDF-1.4\n" + bytes(100)])
def test_non_images_are_unsupported(data: bytes) -> None:
    with pytest.raises(UnsupportedImageError, match="not an image"):
        decode_image(data, max_pixels=LIMIT)


@pytest.mark.parametrize("fmt", ["GIF", "TIFF", "ICO"])
def test_unsupported_formats(fmt: str) -> None:
    with pytest.raises(UnsupportedImageError, match=f"format {fmt}"):
        decode_image(encode(Image.new("RGB", (16, 16)), fmt), max_pixels=LIMIT)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "PPM"])
def test_truncated_files_are_invalid(fmt: str) -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = encode(image, fmt)
    with pytest.raises(InvalidImageError):
        decode_image(data[: len(data) // 2], max_pixels=LIMIT)


@pytest.mark.parametrize(
    "data",
    [
        b"\x89PNG\r\n\x1a\n",  # a bare PNG signature
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00",  # cut inside the header
        b"\xff\xd8\xff",  # a bare JPEG start-of-image
        b"RIFF\x10\x00\x00\x00WEBPVP8 ",
    ],
)
def test_broken_headers_of_accepted_formats_are_invalid_not_unsupported(data: bytes) -> None:
    with pytest.raises(InvalidImageError, match=r"truncated or corrupt|cannot read the image"):
        decode_image(data, max_pixels=LIMIT)


def test_corrupt_png_body_is_invalid() -> None:
    rng = np.random.default_rng(1)
    data = bytearray(encode(Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8))))
    data[60:120] = bytes(60)  # inside the IDAT chunk: CRC and zlib stream break
    with pytest.raises(InvalidImageError):
        decode_image(bytes(data), max_pixels=LIMIT)


def test_pixel_cap_is_checked_before_decoding() -> None:
    # A one-colour PNG compresses to almost nothing: 2000 x 2000 is a few kB.
    bomb = encode(Image.new("L", (2000, 2000)), "PNG")
    assert len(bomb) < 100_000
    with pytest.raises(PayloadTooLargeError, match=f"limit is {LIMIT}"):
        decode_image(bomb, max_pixels=LIMIT)


@pytest.mark.parametrize("side", [1001, 20000, 65535])
def test_bomb_headers_are_refused_without_decoding(side: int) -> None:
    with pytest.raises(PayloadTooLargeError, match=f"limit is {LIMIT}"):
        decode_image(png_claiming(side, side), max_pixels=LIMIT)
