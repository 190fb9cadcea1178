"""Finding the face in an upload: detection, 5-point alignment, or a detector's box.

Every image that reaches the network goes through :meth:`FaceFinder.find`, in one of
three modes (the ``face`` parameter of the API):

* ``auto`` (default): CenterFace (``models.detector``) looks for faces; the largest one
  (or ``face_index``) is aligned by its five landmarks onto the 112 template
  (``alignment: "landmarks"``). When none is found in a **small** image (longer side
  under :data:`SMALL_IMAGE_SIDE`; a surveillance crop of a face too small for landmarks)
  the whole image is taken as a detector box and mapped onto the template with the
  box -> template transform measured on LFW (``alignment: "box"``). A larger image
  without a face is refused (422, code ``no_face``): the background would decide.
* ``aligned``: the image already is a template crop; it is resized to the input
  (``alignment: "as_is"``), as pipelines that align faces themselves expect.
* ``box``: the image is a detector's box around one face (``alignment: "box"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from models.alignment import align_face
from models.detector import Detection, FaceDetector, largest_first
from models.embedder import resize_to_input
from service.errors import UnusableFaceError

FaceMode = Literal["auto", "aligned", "box"]
Alignment = Literal["landmarks", "box", "as_is"]
FACE_MODES: tuple[str, ...] = ("auto", "aligned", "box")

#: Images whose longer side is under this many pixels may be a face crop too small for
#: the detector: ``auto`` treats them as a detector box when no face is found. CenterFace
#: (with its enlargement of small images) finds faces from about 20 px wide
#: (docs/detector.md); a detector-style crop of a face under that is at most
#: 20 x 1.3 (a loose box) = 26 px, and anything from 64 px up without a detection is a
#: picture with no findable face in it.
SMALL_IMAGE_SIDE = 64
#: Two faces count as "of similar size" (ambiguous enrollment) when the smaller has at
#: least this share of the larger one's box area.
SIMILAR_AREA = 0.5


class NoFaceError(UnusableFaceError):
    """No face in an image large enough that one should have been found."""


class SeveralFacesError(UnusableFaceError):
    """Two or more faces of similar size where one was expected (enrollment)."""


class FaceIndexError(UnusableFaceError):
    """``face_index`` points past the faces found."""


@dataclass(frozen=True)
class FoundFace:
    """A face ready for the network, and how it was found.

    Attributes:
        pixels: RGB uint8 at the network input size.
        alignment: ``landmarks``, ``box`` or ``as_is``.
        box: (x1, y1, x2, y2) of the face in the uploaded image's pixels (the whole
            image for ``as_is`` and for a box upload).
        landmarks: (5, 2) when aligned by landmarks.
        score: the detector's score, when detected.
        index: position among the detected faces (largest first), when detected.
        faces_found: how many faces the detector found in the image (0 when not run).
    """

    pixels: np.ndarray
    alignment: Alignment
    box: tuple[float, float, float, float]
    landmarks: np.ndarray | None = None
    score: float | None = None
    index: int | None = None
    faces_found: int = 0


def _boxes(detections: list[Detection]) -> list[list[float]]:
    return [[round(v, 1) for v in d.box] for d in detections]


class FaceFinder:
    """Detection + alignment for the service.

    Args:
        detector: the face detector.
        input_size: the network input (height, width); the template is 112x112 and
            scaled to it.
    """

    def __init__(self, detector: FaceDetector, *, input_size: tuple[int, int]) -> None:
        self.detector = detector
        self.input_size = input_size

    def detect(self, image: Image.Image) -> list[Detection]:
        """The faces in ``image``, largest box first."""
        detections = self.detector.detect(np.asarray(image.convert("RGB")))
        return largest_first(detections)

    def _to_input(self, crop: np.ndarray) -> np.ndarray:
        return resize_to_input(Image.fromarray(crop), self.input_size)

    def align(self, image: Image.Image, detection: Detection, index: int, found: int) -> FoundFace:
        return FoundFace(
            pixels=self._to_input(align_face(image, landmarks=detection.landmarks)),
            alignment="landmarks",
            box=detection.box,
            landmarks=detection.landmarks,
            score=detection.score,
            index=index,
            faces_found=found,
        )

    def whole_box(self, image: Image.Image, found: int = 0) -> FoundFace:
        width, height = image.size
        box = (0.0, 0.0, float(width), float(height))
        return FoundFace(
            pixels=self._to_input(align_face(image, box=box)), alignment="box", box=box,
            faces_found=found,
        )

    def find(
        self,
        image: Image.Image,
        mode: FaceMode = "auto",
        *,
        face_index: int | None = None,
        single: bool = False,
        name: str = "image",
    ) -> FoundFace:
        """The face of ``image`` as the network takes it.

        Args:
            image: the decoded upload (RGB).
            mode: ``auto``, ``aligned`` or ``box`` (module docstring).
            face_index: with ``auto``, which detected face (largest first) to use.
            single: refuse an image with two or more faces of similar size unless
                ``face_index`` picks one (enrollment keeps galleries clean).
            name: the upload's name in error messages.

        Raises:
            NoFaceError: ``auto`` found no face in an image that is not small.
            SeveralFacesError: ``single`` and several faces of similar size.
            FaceIndexError: ``face_index`` beyond the faces found.
        """
        width, height = image.size
        if mode == "aligned":
            return FoundFace(
                pixels=resize_to_input(image, self.input_size), alignment="as_is",
                box=(0.0, 0.0, float(width), float(height)),
            )
        if mode == "box":
            return self.whole_box(image)
        detections = self.detect(image)
        if face_index is not None:
            if face_index >= len(detections):
                raise FaceIndexError(
                    f"{name}: face_index {face_index} but {len(detections)} faces were found"
                )
            return self.align(image, detections[face_index], face_index, len(detections))
        if not detections:
            if max(width, height) < SMALL_IMAGE_SIDE:
                return self.whole_box(image)
            raise NoFaceError({
                "code": "no_face",
                "message": f"{name}: no face found in the {width}x{height} image; send a "
                "face crop, or say what the image is with face=box (a detector's box "
                "around one face) or face=aligned (a template crop)",
            })
        if single and len(detections) > 1:
            largest, second = detections[0], detections[1]
            if second.area >= SIMILAR_AREA * largest.area:
                raise SeveralFacesError({
                    "code": "several_faces",
                    "message": f"{name}: {len(detections)} faces of similar size; pick one "
                    "with face_index (0 = the largest)",
                    "boxes": _boxes(detections),
                })
        return self.align(image, detections[0], 0, len(detections))

    def find_all(self, image: Image.Image) -> list[FoundFace]:
        """Every detected face of ``image`` (largest first); a small image with none is
        taken as one box, a larger one gives an empty list."""
        detections = self.detect(image)
        if not detections:
            width, height = image.size
            return [self.whole_box(image)] if max(width, height) < SMALL_IMAGE_SIDE else []
        return [self.align(image, d, i, len(detections)) for i, d in enumerate(detections)]
