"""Decoding uploaded images safely into RGB, with the limits the service promises.

Accepted formats: JPEG, PNG, WebP, BMP and PGM/PPM (Pillow's "PPM"). The pixel count is
checked from the header *before* the pixels are decoded (decompression bombs), and
grey, 16-bit, alpha and palette images are converted to 8-bit RGB. Transparent pixels
are composited over white (:data:`TRANSPARENT_BACKGROUND`), not reduced to whatever
colour they happen to store (often black): a cut-out portrait then looks as it does
on a page.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import InvalidImageError, PayloadTooLargeError, UnsupportedImageError

logger = logging.getLogger(__name__)

ACCEPTED_FORMATS: frozenset[str] = frozenset({"JPEG", "PNG", "WEBP", "BMP", "PPM"})
_FORMAT_NAMES = "JPEG, PNG, WebP, BMP, PGM/PPM"
#: What transparent pixels are composited over.
TRANSPARENT_BACKGROUND = (255, 255, 255)


def _accepted_signature(data: bytes) -> str | None:
    """The accepted format whose magic bytes start ``data``, if any.

    Lets a file that Pillow cannot identify be told apart: a broken JPEG/PNG/... is a
    corrupt upload (400), anything else is an unsupported format (415).
    """
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WebP"
    if data.startswith(b"BM"):
        return "BMP"
    if len(data) >= 2 and data[:1] == b"P" and data[1:2] in b"123456":
        return "PGM/PPM"
    return None


@dataclass(frozen=True)
class DecodedImage:
    """An uploaded image as 8-bit RGB, with its size and format as uploaded."""

    image: Image.Image
    width: int
    height: int
    format: str


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB of any Pillow mode; 16-bit grey is scaled (/257), not clipped."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode == "I":
        # 16-bit sources (PNG "I;16", PGM maxval > 255 read as "I"): 65535 -> 255.
        values = np.asarray(image, dtype=np.float64)
        grey = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        scale = 255.0 if values.size and np.nanmax(values) <= 1.0 else 1.0
        grey = np.clip(np.rint(np.nan_to_num(values) * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*TRANSPARENT_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def decode_image(data: bytes, *, max_pixels: int, name: str = "image") -> DecodedImage:
    """Decodes ``data`` into 8-bit RGB.

    Args:
        data: the file's bytes.
        max_pixels: largest width x height accepted, checked before decoding.
        name: how to call the file in error messages (the form field or filename).

    Returns:
        The decoded image.

    Raises:
        InvalidImageError: empty, truncated or corrupt file (400).
        UnsupportedImageError: not an image, or a format outside the accepted ones (415).
        PayloadTooLargeError: more pixels than ``max_pixels`` (413).
    """
    if not data:
        raise InvalidImageError(f"{name}: the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        signature = _accepted_signature(data)
        if signature is not None:
            raise InvalidImageError(
                f"{name}: truncated or corrupt {signature} file (its header cannot be read)"
            ) from exc
        raise UnsupportedImageError(
            f"{name}: not an image in a supported format ({_FORMAT_NAMES})"
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLargeError(
            f"{name}: image has too many pixels (the limit is {max_pixels})"
        ) from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidImageError(f"{name}: cannot read the image header: {exc}") from exc
    with image:
        if image.format not in ACCEPTED_FORMATS:
            raise UnsupportedImageError(
                f"{name}: format {image.format} is not accepted; use {_FORMAT_NAMES}"
            )
        width, height = image.size
        if width < 1 or height < 1:
            raise InvalidImageError(f"{name}: image has no pixels ({width}x{height})")
        if width * height > max_pixels:
            raise PayloadTooLargeError(
                f"{name}: {width}x{height} is {width * height} pixels; the limit is {max_pixels}"
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image.load()
                oriented = ImageOps.exif_transpose(image) if image.format == "JPEG" else image
                rgb = _to_rgb(oriented)
                if rgb is image:  # closing the file below must not close the answer
                    rgb = image.copy()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise PayloadTooLargeError(
                f"{name}: image has too many pixels (the limit is {max_pixels})"
            ) from exc
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise InvalidImageError(f"{name}: truncated or corrupt image: {exc}") from exc
    return DecodedImage(image=rgb, width=width, height=height, format=image.format)
