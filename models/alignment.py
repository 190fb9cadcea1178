"""5-point face alignment onto the 112x112 ArcFace template: the one implementation that
training (``training.faces``) and the service share. numpy + Pillow only.

Two ways onto the template:

* :func:`align_by_landmarks`: a least-squares similarity (Umeyama) from 5 landmarks
  (left eye, right eye, nose tip, left and right mouth corner; left = image-left) onto
  :data:`ARCFACE_TEMPLATE_112`, then a bicubic warp.
* :func:`align_box`: a fixed box -> template similarity (no rotation) for when only a
  face box is known: tiny faces whose landmarks are unreliable, or a box sent by a
  client. :data:`CENTERFACE_BOX` was measured on CenterFace boxes
  (``experiments/box_transform.py``); another detector's boxes frame faces differently
  and need their own :class:`BoxTransform`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

#: Side of the network input.
INPUT_SIZE = 112
#: Left eye, right eye, nose tip, left and right mouth corner in a 112x112 crop (x, y).
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


@dataclass(frozen=True)
class BoxTransform:
    """How a face box of some detector maps onto the 112 template (scale + shift).

    Attributes:
        scale: template pixels (at 112) per pixel of box width; the warp's zoom is
            ``scale / box width``.
        centre: (x, y) in the 112 template where the box centre lands.
    """

    scale: float
    centre: tuple[float, float]


#: CenterFace boxes (``models.detector``) -> template. Measured by
#: ``python experiments/box_transform.py`` on 1000 LFW images of peopleDevTrain people
#: (one CenterFace detection each): for each face the similarity landmarks -> template
#: gives the zoom (template px per image px) times the box width, and the box centre
#: mapped through it; these are the medians (scale IQR 80.5-83.9, centre x 50.5-61.0,
#: y 62.8-66.4). On 500 held-out peopleDevTest images the landmarks land 7.4 template
#: px from the template on average by box, 2.4 px by landmarks (docs/detector.md).
CENTERFACE_BOX = BoxTransform(scale=82.23, centre=(56.52, 64.37))


def _rgb_image(image: Image.Image | np.ndarray) -> Image.Image:
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    return Image.fromarray(array).convert("RGB")


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, shift) mapping source to target.

    Umeyama's closed form, without reflections.

    Args:
        source: (K, 2) points, K >= 2.
        target: (K, 2) points.

    Returns:
        A 2x3 matrix ``M`` with ``target ~= M @ [x, y, 1]``.
    """
    src = np.asarray(source, dtype=np.float64)
    dst = np.asarray(target, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need matching (K>=2, 2) point sets, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c**2).sum() / len(src)
    if src_var <= 0:
        raise ValueError("source points are all identical")
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1.0
    rotation = u @ sign @ vt
    scale = float(np.trace(np.diag(singular) @ sign) / src_var)
    shift = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, shift[:, None]])


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(K, 2) ``points`` mapped by the 2x3 ``matrix``."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return pts @ np.asarray(matrix)[:, :2].T + np.asarray(matrix)[:, 2]


def warp(image: Image.Image | np.ndarray, matrix: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """RGB uint8 (size, size, 3): ``image`` warped by the 2x3 image -> output ``matrix``.

    Bicubic; outside the image is black.
    """
    # PIL maps output -> input, so hand it the inverse transform
    inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    warped = _rgb_image(image).transform(
        (size, size), Image.Transform.AFFINE, tuple(inverse.ravel()), Image.Resampling.BICUBIC
    )
    return np.asarray(warped, dtype=np.uint8)


def landmark_matrix(
    landmarks: np.ndarray, size: int = INPUT_SIZE, template: np.ndarray = ARCFACE_TEMPLATE_112
) -> np.ndarray:
    """The 2x3 similarity taking 5 ``landmarks`` onto ``template`` scaled to ``size``."""
    points = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    if points.shape != template.shape:
        raise ValueError(f"expected {len(template)} landmarks, got {points.shape[0]}")
    return similarity_transform(points, template * (size / INPUT_SIZE))


def align_by_landmarks(
    image: Image.Image | np.ndarray,
    landmarks: np.ndarray,
    size: int = INPUT_SIZE,
    template: np.ndarray = ARCFACE_TEMPLATE_112,
) -> np.ndarray:
    """Warps ``image`` so its 5 ``landmarks`` (x, y) land on the 112 template.

    Args:
        image: a PIL image or an RGB/grey array.
        landmarks: (5, 2) left eye, right eye, nose, left and right mouth corner, in
            the image's pixel coordinates.
        size: output side; the template is scaled from 112 to it.
        template: (5, 2) target points for a 112x112 output.

    Returns:
        RGB uint8 (size, size, 3).
    """
    return warp(image, landmark_matrix(landmarks, size, template), size)


def box_matrix(
    box: tuple[float, float, float, float] | np.ndarray,
    transform: BoxTransform = CENTERFACE_BOX,
    size: int = INPUT_SIZE,
) -> np.ndarray:
    """The 2x3 scale+shift taking ``box`` (x1, y1, x2, y2) onto the template framing."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"empty box {box}")
    zoom = transform.scale / (x2 - x1) * (size / INPUT_SIZE)
    centre_x, centre_y = (c * size / INPUT_SIZE for c in transform.centre)
    return np.array(
        [
            [zoom, 0.0, centre_x - zoom * (x1 + x2) / 2],
            [0.0, zoom, centre_y - zoom * (y1 + y2) / 2],
        ]
    )


def align_box(
    image: Image.Image | np.ndarray,
    box: tuple[float, float, float, float] | np.ndarray,
    transform: BoxTransform = CENTERFACE_BOX,
    size: int = INPUT_SIZE,
) -> np.ndarray:
    """Crops a face by its box onto the template framing (no rotation).

    Args:
        image: a PIL image or an RGB/grey array.
        box: (x1, y1, x2, y2) in the image's pixels, as the detector of
            ``transform`` draws it (default: CenterFace).
        transform: the detector's box -> template mapping.
        size: output side.

    Returns:
        RGB uint8 (size, size, 3).
    """
    return warp(image, box_matrix(box, transform, size), size)


def _region_with_border(
    image: Image.Image | np.ndarray, matrix: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The part of ``image`` (RGB) that the ``size`` x ``size`` output of ``matrix`` reads,
    with the image's border pixels repeated wherever that part reaches past the image,
    and ``matrix`` re-based onto it.

    The template reaches past a face's box (about 1.4x its width) and past the image when
    the face touches the border: filled black, that area would make a hard edge that the
    Laplacian q and the network both read as image content. Only the region the warp
    reads is copied (a face in a 640x480 frame costs a crop, not a padded frame).
    """
    rgb = np.asarray(_rgb_image(image))
    height, width = rgb.shape[:2]
    inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    corners = apply_transform(inverse, np.array([[0, 0], [size, 0], [0, size], [size, size]]))
    # bicubic reads two pixels beyond the sample point
    x0, y0 = (int(v) - 3 for v in np.floor(corners.min(axis=0)))
    x1, y1 = (int(v) + 3 for v in np.ceil(corners.max(axis=0)))
    crop = rgb[max(y0, 0) : max(min(y1, height), 0), max(x0, 0) : max(min(x1, width), 0)]
    if crop.size == 0:  # the output lies wholly outside: the nearest border pixel
        crop = rgb[min(max(y0, 0), height - 1) : min(max(y0, 0), height - 1) + 1,
                   min(max(x0, 0), width - 1) : min(max(x0, 0), width - 1) + 1]
    pads = ((max(0, -y0), max(0, y1 - height)), (max(0, -x0), max(0, x1 - width)), (0, 0))
    region = np.pad(crop, pads, mode="edge")
    shift = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]])
    return region, np.vstack([matrix, [0.0, 0.0, 1.0]])[:2] @ shift


def align_face(
    image: Image.Image | np.ndarray,
    *,
    landmarks: np.ndarray | None = None,
    box: tuple[float, float, float, float] | None = None,
    size: int = INPUT_SIZE,
) -> np.ndarray:
    """The template crop of a face found by its 5 ``landmarks`` or, without them, its
    detector ``box`` (default: the whole image), with the image's border repeated
    outwards where the template reaches past it. The service and evaluation both align
    faces with this.

    Returns:
        RGB uint8 (size, size, 3).
    """
    if landmarks is not None:
        matrix = landmark_matrix(landmarks, size)
    else:
        if box is None:
            width, height = _rgb_image(image).size
            box = (0.0, 0.0, float(width), float(height))
        matrix = box_matrix(box, size=size)
    region, rebased = _region_with_border(image, matrix, size)
    return warp(region, rebased, size)
