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
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from models.alignment import (
    ARCFACE_TEMPLATE_112,
    INPUT_SIZE,
    align_by_landmarks,
    align_face,
    similarity_transform,
)

# The alignment lives in models.alignment (shared with the service); its names stay
# importable from here.
from models.detector import Detection, FaceDetector, largest_first

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "INPUT_SIZE",
    "LFW_DEEPFUNNELED_BOX",
    "FaceLoader",
    "FaceMode",
    "FaceNotFoundError",
    "align_by_landmarks",
    "crop_lfw_deepfunneled",
    "load_landmarks",
    "resize_aligned",
    "similarity_transform",
]

#: (left, top, right, bottom) of the face in a 250x250 LFW deep-funneled image.
LFW_DEEPFUNNELED_BOX: tuple[int, int, int, int] = (57, 49, 193, 185)

FaceMode = Literal["lfw", "aligned", "landmarks", "detect", "box"]
FACE_MODES: tuple[str, ...] = ("lfw", "aligned", "landmarks", "detect", "box")


class FaceNotFoundError(ValueError):
    """The detector found no face in an image (``detect`` and ``box`` modes)."""


@functools.lru_cache(maxsize=1)
def _detector() -> FaceDetector:
    """The service's face detector, created on first use (one per process)."""
    return FaceDetector(threads=1)



def detect_largest(image: Image.Image) -> Detection:
    """The largest face CenterFace finds in ``image`` (the service's ``face=auto``).

    Raises:
        FaceNotFoundError: no face.
    """
    detections = _detector().detect(np.asarray(_rgb(image)))
    if not detections:
        raise FaceNotFoundError("no face found")
    return largest_first(detections)[0]


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
    """Turns image files into 112x112 network crops in one of five modes.

    Attributes:
        mode: ``"lfw"`` (fixed deep-funneled box), ``"aligned"`` (as they are),
            ``"landmarks"`` (similarity alignment; every image needs landmarks),
            ``"detect"`` (the service's path: CenterFace on the raw image, the largest
            face aligned by its landmarks) or ``"box"`` (CenterFace's box of the largest
            face, mapped onto the template as the service maps a detector's box; see
            :meth:`load_box`).
        landmarks: for ``"landmarks"``: ``{relative path or file name: (5, 2)}``.
        root: folder that landmark names are relative to.
    """

    mode: FaceMode = "aligned"
    landmarks: Mapping[str, np.ndarray] = field(default_factory=dict)
    root: Path | None = None

    def __post_init__(self) -> None:
        if self.mode not in FACE_MODES:
            raise ValueError(f"unknown face mode {self.mode!r}; use {', '.join(FACE_MODES)}")
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
        """The 112x112 RGB uint8 crop of the image at ``path``.

        Raises:
            FaceNotFoundError: ``detect``/``box`` mode and no face in the image.
        """
        path = Path(path)
        if self.mode == "box":
            return align_face(self.load_box(path))
        with Image.open(path) as image:
            image.load()
            if self.mode == "lfw":
                return crop_lfw_deepfunneled(image)
            if self.mode == "landmarks":
                return align_by_landmarks(image, self._landmarks_for(path))
            if self.mode == "detect":
                return align_face(image, landmarks=detect_largest(image).landmarks)
            return resize_aligned(image)

    def load_box(self, path: str | Path) -> np.ndarray:
        """What an upstream detector would send: the pixels of the largest face's
        CenterFace box in the image at ``path``, at their own resolution (RGB uint8).

        Raises:
            FaceNotFoundError: no face in the image.
        """
        with Image.open(path) as image:
            image.load()
            rgb = _rgb(image)
            x1, y1, x2, y2 = detect_largest(rgb).box
            box = (round(x1), round(y1), max(round(x2), round(x1) + 1),
                   max(round(y2), round(y1) + 1))
            return np.asarray(rgb.crop(box), dtype=np.uint8)
