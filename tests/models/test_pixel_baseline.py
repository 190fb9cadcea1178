"""The non-learned pixel embedders (models/pixel_baseline.py) against numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.embedder import OnnxEmbedder
from models.pixel_baseline import build_pixel_model


@pytest.mark.parametrize("grey", [True, False])
def test_embedding_is_the_centred_thumbnail(tmp_path: Path, grey: bool) -> None:
    path = tmp_path / "m.onnx"
    metadata = build_pixel_model(path, name="t", cell=16, grey=grey, backbone="x")
    assert metadata.embedding_size == 49 * (1 if grey else 3)
    pixels = np.random.default_rng(0).integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    got = OnnxEmbedder(path).embed_pixels(pixels)
    x = (pixels.astype(np.float64) - 127.5) / 127.5
    if grey:
        x = x.mean(axis=3, keepdims=True)
    thumb = x.reshape(2, 7, 16, 7, 16, -1).mean(axis=(2, 4)).transpose(0, 3, 1, 2).reshape(2, -1)
    thumb -= thumb.mean(axis=1, keepdims=True)
    want = thumb / np.linalg.norm(thumb, axis=1, keepdims=True)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_cell_must_divide_the_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiple of cell"):
        build_pixel_model(tmp_path / "m.onnx", name="t", cell=10, grey=True, backbone="x")
