"""LFW crops of every resolution (training.crops): the int8 calibration's input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.quality import laplacian_score
from training.crops import lfw_crops


def test_crops_cycle_through_the_resolutions(shared_data_dir: Path) -> None:
    lfw = shared_data_dir / "lfw"
    if not (lfw / "peopleDevTrain.txt").is_file():
        pytest.skip("LFW peopleDevTrain.txt not found")
    crops = lfw_crops(lfw, count=4, resolutions=(112, 7))
    assert crops.shape == (4, 112, 112, 3) and crops.dtype == np.uint8
    q = [laplacian_score(crop).laplacian for crop in crops]
    assert q[0] > 3 * q[1] and q[2] > 3 * q[3]  # 7 px faces are far blurrier
    assert np.array_equal(crops, lfw_crops(lfw, count=4, resolutions=(112, 7)))  # seeded
    with pytest.raises(ValueError, match="asked for"):
        lfw_crops(lfw, count=10**6)
