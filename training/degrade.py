"""Resolution degradation (METHODS §5), shared by training and evaluation.

A degraded face: the aligned crop resized to side ``r`` with an antialiased kernel,
then back to its original size (bicubic). Deterministic: the same input and ``r`` give
the same pixels, so evaluation runs are repeatable.

:class:`CameraEffects` adds what a surveillance camera does to a face beside its size,
applied to the small image (the sensor's pixels) before it is enlarged: defocus and
motion blur, sensor noise, a tone curve (gamma) and compression (JPEG with 4:2:0 chroma
subsampling, the block and chroma artefacts of video stills). Its randomness comes from
a generator the caller seeds, so a sample's effects are repeatable too.
"""

from __future__ import annotations

import io
from typing import Annotated, Literal

import numpy as np
from PIL import Image, ImageFilter
from pydantic import BaseModel, ConfigDict, Strict, StrictInt, model_validator

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


_Range = tuple[Annotated[float, Strict()], Annotated[float, Strict()]]
_IntRange = tuple[StrictInt, StrictInt]


class CameraEffects(BaseModel):
    """Camera effects on the small image, each drawn independently for every face.

    Every effect is applied with probability ``effect_probability``, in the order light
    meets them: blur (defocus or motion, one of the two), sensor noise, tone curve,
    compression. Ranges are ``(low, high)``, drawn uniformly (gamma: log-uniformly).
    A pydantic model, so a training config's ``crossres.camera`` is checked like every
    other section (unknown keys listed, types strict).

    Attributes:
        effect_probability: chance of each effect.
        blur_sigma: defocus, Gaussian sigma in pixels of the small image.
        motion_px: motion blur, the length of the streak in pixels of the small image
            (a box along a random one of four directions).
        noise_sigma: sensor noise, standard deviation on the 0-255 scale (Gaussian,
            independent per pixel and channel).
        gamma: tone curve ``255 (x / 255) ** gamma``.
        jpeg_quality: JPEG quality (4:2:0 chroma subsampling).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    effect_probability: Annotated[float, Strict()] = 0.5
    blur_sigma: _Range = (0.3, 1.0)
    motion_px: _IntRange = (2, 4)
    noise_sigma: _Range = (2.0, 8.0)
    gamma: _Range = (0.67, 1.5)
    jpeg_quality: _IntRange = (20, 80)

    @model_validator(mode="after")
    def _check(self) -> CameraEffects:
        if not 0.0 <= self.effect_probability <= 1.0:
            raise ValueError(f"effect_probability must be in [0, 1], got {self.effect_probability}")
        for name in ("blur_sigma", "motion_px", "noise_sigma", "gamma", "jpeg_quality"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name} must be (low, high) with 0 <= low <= high, "
                                 f"got {(low, high)}")
        if self.gamma[0] <= 0 or not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 95:
            raise ValueError("gamma must be positive and jpeg_quality within 1..95")
        return self

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        """The small image as the camera delivers it (RGB or L, same size)."""
        for effect in (self.blur, self.noise, self.tone, self.compress):
            if rng.random() < self.effect_probability:
                image = effect(image, rng)
        return image

    def blur(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        """Defocus (Gaussian) or motion (a streak), one of the two at even odds."""
        if rng.random() < 0.5:
            return image.filter(ImageFilter.GaussianBlur(rng.uniform(*self.blur_sigma)))
        length = int(rng.integers(self.motion_px[0], self.motion_px[1] + 1))
        return motion_blur(image, length, int(rng.integers(4)))

    def noise(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        """Gaussian sensor noise of a drawn standard deviation."""
        pixels = np.asarray(image, dtype=np.float32)
        sigma = rng.uniform(*self.noise_sigma)
        return _image(pixels + rng.normal(0.0, sigma, size=pixels.shape))

    def tone(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        """A gamma curve, log-uniform over the range (as many brighter as darker)."""
        gamma = float(np.exp(rng.uniform(np.log(self.gamma[0]), np.log(self.gamma[1]))))
        return _image(255.0 * (np.asarray(image, dtype=np.float32) / 255.0) ** gamma)

    def compress(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        """A JPEG round trip at a drawn quality, chroma subsampled 4:2:0."""
        quality = int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality, subsampling=2)
        with Image.open(io.BytesIO(buffer.getvalue())) as decoded:
            return decoded.convert(image.mode)


def _image(pixels: np.ndarray) -> Image.Image:
    """Float pixels rounded and clipped to uint8."""
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def motion_blur(image: Image.Image, length: int, direction: int) -> Image.Image:
    """The mean of ``length`` copies shifted one pixel apart along ``direction`` (0:
    horizontal, 1: vertical, 2 and 3: the diagonals), centred, edges repeated."""
    if length < 2:
        return image
    pixels = np.asarray(image, dtype=np.float32)
    step = ((0, 1), (1, 0), (1, 1), (1, -1))[direction]
    pad = length - 1
    padding = [(pad, pad), (pad, pad)] + [(0, 0)] * (pixels.ndim - 2)
    padded = np.pad(pixels, padding, mode="edge")
    height, width = pixels.shape[:2]
    total = np.zeros_like(pixels)
    for k in range(length):
        dy, dx = (k - pad // 2) * step[0], (k - pad // 2) * step[1]
        total += padded[pad + dy:pad + dy + height, pad + dx:pad + dx + width]
    return _image(total / length)


def degrade(
    pixels: np.ndarray,
    side: int,
    *,
    down: Interpolation = "bicubic",
    up: Interpolation = "bicubic",
    camera: CameraEffects | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Degrades an (H, W, 3) or (H, W) uint8 image to ``side`` px and back.

    Args:
        pixels: the aligned face, uint8.
        side: the low resolution r; the longer image side is scaled to it (aspect kept).
            ``side >= max(H, W)`` returns a copy of the input untouched.
        down: kernel for the reduction (antialiased for bicubic/area/bilinear/lanczos).
        up: kernel for the enlargement back to the original size.
        camera: camera effects on the small image (``None``: the resize alone).
        rng: the effects' randomness (required with ``camera``).

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
    if camera is not None:
        if rng is None:
            raise ValueError("camera effects need a seeded rng")
        small = camera(small, rng)
    return np.asarray(small.resize((width, height), resampling(up)), dtype=np.uint8)
