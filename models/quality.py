"""The Laplacian image-quality score (METHODS §3), in numpy.

L is the image convolved with the 3x3 kernel [[0, 1, 0], [1, -4, 1], [0, 1, 0]] per
channel, on pixel values in [0, 255], with borders reflected without repeating the edge
pixel (OpenCV's BORDER_REFLECT_101). The score is q = mean |L| over all pixels and
channels; the variance of L (the common blur measure) is reported beside it.

The torch twin for batched training lives in ``models.quality_torch``; both give the
same numbers to 1e-4 relative.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

#: L's 3x3 kernel: applied here by shifts, convolved by ``models.quality_torch``.
LAPLACIAN_KERNEL = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float64)


@dataclass(frozen=True)
class LaplacianScore:
    """Quality of one image: ``laplacian`` = mean |L|, ``laplacian_var`` = var(L)."""

    laplacian: float
    laplacian_var: float


def _pad_reflect101(image: np.ndarray) -> np.ndarray:
    """Pads H and W by one pixel, BORDER_REFLECT_101; a side of length 1 repeats itself."""
    pads = [(1, 1), (1, 1)] + [(0, 0)] * (image.ndim - 2)
    out = image
    for axis in (0, 1):
        axis_pads = [(0, 0)] * image.ndim
        axis_pads[axis] = pads[axis]
        # reflect-101 needs two pixels; OpenCV falls back to the pixel itself for one.
        mode: Literal["reflect", "edge"] = "reflect" if image.shape[axis] > 1 else "edge"
        out = np.pad(out, axis_pads, mode=mode)
    return out


def laplacian(image: np.ndarray) -> np.ndarray:
    """Laplacian response of an (H, W) or (H, W, C) image, same shape, float64."""
    if image.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image has no pixels: shape {image.shape}")
    x = _pad_reflect101(np.asarray(image, dtype=np.float64))
    centre = x[1:-1, 1:-1]
    return x[:-2, 1:-1] + x[2:, 1:-1] + x[1:-1, :-2] + x[1:-1, 2:] - 4.0 * centre


def laplacian_score(image: np.ndarray) -> LaplacianScore:
    """Scores an (H, W) or (H, W, C) image with values in [0, 255].

    Args:
        image: the image exactly as the network sees it (after degradation and
            resizing to the network input), pixel values in [0, 255].

    Returns:
        ``LaplacianScore(laplacian=mean |L|, laplacian_var=var(L))``.
    """
    response = laplacian(image)
    return LaplacianScore(
        laplacian=float(np.abs(response).mean()),
        laplacian_var=float(response.var()),
    )
