"""Training augmentation of 112 face crops (PIL, in the decoding workers).

Randomness comes from a ``numpy.random.Generator`` that the caller seeds per sample, so
the same sample key gives the same pixels in any worker and after a resume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance


@dataclass(frozen=True)
class Augment:
    """Flip, optional random crop and colour jitter.

    Attributes:
        flip: mirror horizontally with probability 0.5.
        crop_scale: ``(low, high)`` share of the area kept by a square random crop that is
            resized back to the input (``None``: no crop).
        colour_jitter: brightness, contrast and saturation factors drawn from
            ``[1 - j, 1 + j]`` (0: off).
    """

    flip: bool = True
    crop_scale: tuple[float, float] | None = None
    colour_jitter: float = 0.0

    def __call__(self, pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augments an RGB uint8 (H, W, 3) crop; returns the same shape."""
        height, width = pixels.shape[:2]
        image: Image.Image | None = None
        if self.crop_scale is not None:
            low, high = self.crop_scale
            side_fraction = float(np.sqrt(rng.uniform(low, high)))
            crop_w, crop_h = width * side_fraction, height * side_fraction
            left = float(rng.uniform(0.0, width - crop_w))
            top = float(rng.uniform(0.0, height - crop_h))
            image = Image.fromarray(pixels).resize(
                (width, height),
                Image.Resampling.BICUBIC,
                box=(left, top, left + crop_w, top + crop_h),
            )
        if self.colour_jitter > 0:
            image = image if image is not None else Image.fromarray(pixels)
            j = self.colour_jitter
            for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
                image = enhancer(image).enhance(float(rng.uniform(1.0 - j, 1.0 + j)))
        out = np.asarray(image, dtype=np.uint8) if image is not None else pixels
        if self.flip and rng.random() < 0.5:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)
