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

import numpy as np

#: L's 3x3 kernel: applied here by shifts, convolved by ``models.quality_torch``.
LAPLACIAN_KERNEL = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float64)


@dataclass(frozen=True)
class LaplacianScore:
    """Quality of one image: ``laplacian`` = mean |L|, ``laplacian_var`` = var(L)."""

    laplacian: float
    laplacian_var: float


def _neighbour_sum(x: np.ndarray) -> np.ndarray:
    """up + down + left + right of every pixel (in that order), borders reflected
    BORDER_REFLECT_101; a side of length 1 repeats itself. Shifted adds into one buffer,
    without padded copies (about 3x faster than padding on a 112 px crop)."""
    out = np.empty_like(x)
    first, last = (1, -2) if x.shape[0] > 1 else (0, -1)
    out[1:] = x[:-1]
    out[0] = x[first]
    out[:-1] += x[1:]
    out[-1] += x[last]
    first, last = (1, -2) if x.shape[1] > 1 else (0, -1)
    out[:, 1:] += x[:, :-1]
    out[:, 0] += x[:, first]
    out[:, :-1] += x[:, 1:]
    out[:, -1] += x[:, last]
    return out


def laplacian(image: np.ndarray) -> np.ndarray:
    """Laplacian response of an (H, W) or (H, W, C) image, same shape, float64."""
    if image.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image has no pixels: shape {image.shape}")
    x = np.asarray(image, dtype=np.float64)
    out = _neighbour_sum(x)
    out -= 4.0 * x
    return out


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
