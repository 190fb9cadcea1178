"""A pixel baseline as an ONNX artifact, built with ``onnx.helper`` (no torch).

The "embedding" is the face average-pooled to a ``grid`` x ``grid`` colour thumbnail,
flattened, with its mean removed (so the cosine of two embeddings is the correlation
of the thumbnails). It is a floor every trained model must beat, a stand-in model
for tests, and a way to time the evaluation pipeline without a network.
"""

from __future__ import annotations

from pathlib import Path

from models.artifact import ModelMetadata
from models.pixel_baseline import build_pixel_model


def build_pixel_baseline(
    onnx_path: str | Path, *, grid: int = 8, input_size: int = 112, version: str = "1"
) -> ModelMetadata:
    """Writes ``onnx_path`` and its metadata; returns the metadata.

    Args:
        onnx_path: the ``.onnx`` file to write (``.json`` goes beside it).
        grid: thumbnail side; ``input_size`` must be divisible by it.
        input_size: side of the square input.
        version: metadata version string.
    """
    if grid < 1 or input_size % grid:
        raise ValueError(f"input_size {input_size} is not divisible by grid {grid}")
    return build_pixel_model(
        onnx_path,
        name=f"pixel-baseline-{grid}x{grid}",
        cell=input_size // grid,
        grey=False,
        input_size=input_size,
        version=version,
        backbone="pixel-baseline",
        extra={"description": "average-pooled thumbnail, mean removed"},
    )
