"""Face inputs: dataset images -> the network's 112x112 RGB crop.

Three ways in, one way out (RGB uint8 112x112x3):

* **LFW deep-funneled** (:data:`LFW_DEEPFUNNELED_BOX`): no landmarks exist, so a fixed
  box is cut from the 250x250 image and resized to 112 (bicubic). The box is
  ``(57, 49, 193, 185)`` (left, top, right, bottom; a 136 px square, horizontally
  centred, 6 px above the image centre). It was derived by averaging 600 deep-funneled
  images, reading the eyes, nose tip and mouth corners off the mean face and fitting a
  scale+shift onto the 5-point 112x112 template below (largest error 1.5 px at 112);
  individual faces then sit on the template within a few pixels.
* **5-point landmarks** (:func:`align_by_landmarks`, from ``models.alignment``, which
  the service uses too): a least-squares similarity transform (Umeyama) from the
  landmarks onto :data:`ARCFACE_TEMPLATE_112`, the standard template of
  insightface/ArcFace, then a bicubic warp.
* **Already-aligned crops** (:func:`resize_aligned`): used as they are, resized to 112
  (bicubic) when they are another size; non-square crops are stretched, as the
  low-resolution benchmarks (QMUL-SurvFace, TinyFace) are usually fed.

:func:`load_landmarks` reads the landmarks file format that the CLI accepts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

# The alignment lives in models.alignment (shared with the service); its names stay
# importable from here.
from models.alignment import (
    ARCFACE_TEMPLATE_112,
    INPUT_SIZE,
    align_by_landmarks,
    similarity_transform,
)

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "INPUT_SIZE",
    "LFW_DEEPFUNNELED_BOX",
    "FaceLoader",
    "FaceMode",
    "align_by_landmarks",
    "crop_lfw_deepfunneled",
    "load_landmarks",
    "resize_aligned",
    "similarity_transform",
]

#: (left, top, right, bottom) of the face in a 250x250 LFW deep-funneled image.
LFW_DEEPFUNNELED_BOX: tuple[int, int, int, int] = (57, 49, 193, 185)

FaceMode = Literal["lfw", "aligned", "landmarks"]


def _rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def resize_aligned(image: Image.Image, size: int = INPUT_SIZE) -> np.ndarray:
    """An already-aligned crop as RGB uint8 (size, size, 3), resized bicubic if needed."""
    rgb = _rgb(image)
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(rgb, dtype=np.uint8)


def crop_lfw_deepfunneled(image: Image.Image, size: int = INPUT_SIZE) -> np.ndarray:
    """The fixed face box of an LFW deep-funneled image, resized to ``size``.

    The box is defined for 250x250 images and scaled with the image when it is
    another size (e.g. a re-encoded copy).
    """
    rgb = _rgb(image)
    width, height = rgb.size
    left, top, right, bottom = LFW_DEEPFUNNELED_BOX
    box = (left * width / 250, top * height / 250, right * width / 250, bottom * height / 250)
    return np.asarray(
        rgb.resize((size, size), Image.Resampling.BICUBIC, box=box), dtype=np.uint8
    )


def load_landmarks(path: str | Path) -> dict[str, np.ndarray]:
    """Reads a landmarks file: one image per line, ``NAME x1 y1 x2 y2 ... x5 y5``.

    ``NAME`` is the image's path relative to the dataset folder (or just its file
    name); whitespace or commas separate the fields; ``#`` starts a comment.

    Returns:
        ``{name: (5, 2) array}``.
    """
    table: dict[str, np.ndarray] = {}
    for number, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].replace(",", " ").split()
        if not line:
            continue
        if len(line) != 11:
            raise ValueError(f"{path}:{number}: expected a name and 10 numbers, got {raw!r}")
        try:
            coords = np.array([float(v) for v in line[1:]]).reshape(5, 2)
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: {exc}") from exc
        table[line[0]] = coords
    return table


@dataclass(frozen=True)
class FaceLoader:
    """Turns image files into 112x112 network crops in one of the three modes.

    Attributes:
        mode: ``"lfw"`` (fixed deep-funneled box), ``"aligned"`` (as they are) or
            ``"landmarks"`` (similarity alignment; every image needs landmarks).
        landmarks: for ``"landmarks"``: ``{relative path or file name: (5, 2)}``.
        root: folder that landmark names are relative to.
    """

    mode: FaceMode = "aligned"
    landmarks: Mapping[str, np.ndarray] = field(default_factory=dict)
    root: Path | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("lfw", "aligned", "landmarks"):
            raise ValueError(f"unknown face mode {self.mode!r}; use lfw, aligned or landmarks")
        if self.mode == "landmarks" and not self.landmarks:
            raise ValueError("face mode 'landmarks' needs a landmarks table")

    def _landmarks_for(self, path: Path) -> np.ndarray:
        keys = [path.name]
        if self.root is not None:
            with contextlib.suppress(ValueError):  # not below root: file name only
                keys.insert(0, path.relative_to(self.root).as_posix())
        for key in keys:
            if key in self.landmarks:
                return self.landmarks[key]
        raise KeyError(f"no landmarks for {path} (looked up {keys})")

    def load(self, path: str | Path) -> np.ndarray:
        """The 112x112 RGB uint8 crop of the image at ``path``."""
        path = Path(path)
        with Image.open(path) as image:
            image.load()
            if self.mode == "lfw":
                return crop_lfw_deepfunneled(image)
            if self.mode == "landmarks":
                return align_by_landmarks(image, self._landmarks_for(path))
            return resize_aligned(image)
