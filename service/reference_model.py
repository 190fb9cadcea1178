"""A non-learned reference embedder, built as a real ONNX artifact without torch.

This is **not** a face-recognition model: it has no trained weights. It turns the
image grey, averages it over an ``cell`` x ``cell`` grid and subtracts the mean of the
resulting vector, so the cosine of two embeddings is the correlation of two heavily
blurred thumbnails. On ORL (40 subjects, controlled light) that is enough for the same
subject to score higher than different subjects most of the time (measured: top-1
identification 0.90 with five enrolled images per subject), which makes it a small,
honest model for service tests, demos and benchmarks before a trained model exists.

The artifact follows the project contract (``models.artifact``): ``.onnx`` plus its
``.json`` metadata, input float32 NCHW RGB normalised ``(pixel - 127.5) / 127.5``.
"""

from __future__ import annotations

from pathlib import Path

from models.artifact import ModelMetadata
from models.pixel_baseline import build_pixel_model

REFERENCE_MODEL_NAME = "lrfr-reference-pixels"
#: Cosine thresholds of the reference model, measured once on all ORL image pairs
#: (different-subject pairs above the threshold at the given rate); a baseline, not a claim.
REFERENCE_THRESHOLDS: dict[str, float | None] = {"1e-2": 0.80, "1e-3": 0.86, "1e-4": 0.91}


def build_reference_model(
    onnx_path: str | Path,
    *,
    version: str = "reference-1",
    input_size: int = 112,
    cell: int = 8,
    thresholds: dict[str, float | None] | None = None,
) -> ModelMetadata:
    """Writes the reference ONNX model and its metadata.

    Args:
        onnx_path: where to write the ``.onnx`` file; the ``.json`` goes beside it.
        version: the model version recorded in the metadata (galleries are tied to it).
        input_size: side of the square network input.
        cell: side of the averaging cell; the embedding has ``(input_size // cell) ** 2``
            dimensions.
        thresholds: cosine thresholds by FAR; defaults to ``REFERENCE_THRESHOLDS``.

    Returns:
        The metadata written beside the model.

    Raises:
        ValueError: ``input_size`` is not a multiple of ``cell``.
    """
    return build_pixel_model(
        onnx_path,
        name=REFERENCE_MODEL_NAME,
        cell=cell,
        grey=True,
        input_size=input_size,
        version=version,
        backbone=f"avgpool{cell}-grey (non-learned)",
        thresholds=dict(REFERENCE_THRESHOLDS if thresholds is None else thresholds),
        extra={"note": "non-learned pixel-statistics baseline for tests and demos"},
    )
