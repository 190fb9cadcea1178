"""Resolution degradation (METHODS §5), shared by training and evaluation.

A degraded face: the aligned crop resized to side ``r`` with an antialiased kernel,
then back to its original size (bicubic). Deterministic: the same input and ``r`` give
the same pixels, so evaluation runs are repeatable.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image

Interpolation = Literal["bicubic", "area", "bilinear", "lanczos", "nearest"]

_FILTERS: dict[str, Image.Resampling] = {
    "bicubic": Image.Resampling.BICUBIC,  # PIL widens the kernel when shrinking: antialiased
    "area": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "lanczos": Image.Resampling.LANCZOS,
    "nearest": Image.Resampling.NEAREST,
}


def resampling(name: str) -> Image.Resampling:
    """The Pillow filter of an interpolation name."""
    try:
        return _FILTERS[name]
    except KeyError:
        raise ValueError(f"unknown interpolation {name!r}; valid: {sorted(_FILTERS)}") from None


def degrade(
    pixels: np.ndarray,
    side: int,
    *,
    down: Interpolation = "bicubic",
    up: Interpolation = "bicubic",
) -> np.ndarray:
    """Degrades an (H, W, 3) or (H, W) uint8 image to ``side`` px and back.

    Args:
        pixels: the aligned face, uint8.
        side: the low resolution r; the longer image side is scaled to it (aspect kept).
            ``side >= max(H, W)`` returns a copy of the input untouched.
        down: kernel for the reduction (antialiased for bicubic/area/bilinear/lanczos).
        up: kernel for the enlargement back to the original size.

    Returns:
        uint8 array of the input's shape.
    """
    if side < 1:
        raise ValueError(f"side must be >= 1, got {side}")
    height, width = pixels.shape[:2]
    if side >= max(height, width):
        return np.array(pixels, copy=True)
    scale = side / max(height, width)
    small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = Image.fromarray(np.ascontiguousarray(pixels))
    small = image.resize(small_size, resampling(down))
    return np.asarray(small.resize((width, height), resampling(up)), dtype=np.uint8)
