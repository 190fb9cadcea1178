"""Face detection with five landmarks (CenterFace, vendored; ONNX Runtime, no torch).

See ``docs/detector.md`` for where the model comes from and the smallest faces it finds.
"""

from models.detector.centerface import (
    DEFAULT_MODEL_PATH,
    LANDMARK_NAMES,
    MODEL_SHA256,
    Detection,
    FaceDetector,
    as_rgb,
    largest_first,
    nms,
    upscale_factor,
)

__all__ = [
    "DEFAULT_MODEL_PATH",
    "LANDMARK_NAMES",
    "MODEL_SHA256",
    "Detection",
    "FaceDetector",
    "as_rgb",
    "largest_first",
    "nms",
    "upscale_factor",
]
