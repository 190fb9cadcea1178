"""Degradation (METHODS §5) as evaluation uses it."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.quality import laplacian_score
from training.degrade import degrade
from training.faces import crop_lfw_deepfunneled

RESOLUTIONS = (112, 56, 28, 14, 7)


@pytest.fixture(scope="module")
def lfw_crops(lfw_face_paths: list[Path]) -> list[np.ndarray]:
    crops = []
    for path in lfw_face_paths:
        with Image.open(path) as image:
            crops.append(crop_lfw_deepfunneled(image))
    return crops


def test_laplacian_falls_monotonically_with_resolution(lfw_crops: list[np.ndarray]) -> None:
    for crop in lfw_crops:
        scores = [laplacian_score(degrade(crop, r)).laplacian for r in RESOLUTIONS]
        assert all(a > b for a, b in itertools.pairwise(scores)), scores
    # and on average the 7 px face keeps a small fraction of the detail
    full = np.mean([laplacian_score(c).laplacian for c in lfw_crops])
    seven = np.mean([laplacian_score(degrade(c, 7)).laplacian for c in lfw_crops])
    assert seven < 0.25 * full


def test_degrade_is_deterministic_and_keeps_shape(lfw_crops: list[np.ndarray]) -> None:
    crop = lfw_crops[0]
    first, second = degrade(crop, 14), degrade(crop, 14)
    assert first.shape == crop.shape and first.dtype == np.uint8
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(degrade(crop, 112), crop)  # r >= 112: untouched
    assert not np.array_equal(first, crop)


def test_interpolation_is_configurable(lfw_crops: list[np.ndarray]) -> None:
    crop = lfw_crops[0]
    bicubic = degrade(crop, 14)
    area = degrade(crop, 14, down="area")
    nearest_up = degrade(crop, 14, up="nearest")
    assert not np.array_equal(bicubic, area)
    assert not np.array_equal(bicubic, nearest_up)
    # nearest enlargement leaves 8x8 blocks of one colour
    assert len(np.unique(nearest_up[:8, :8].reshape(-1, 3), axis=0)) == 1
    with pytest.raises(ValueError, match="unknown interpolation"):
        degrade(crop, 14, down="cubic")  # type: ignore[arg-type]
