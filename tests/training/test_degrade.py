"""Degradation (METHODS §5) as evaluation uses it."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.quality import laplacian_score
from training.degrade import CameraEffects, degrade, motion_blur
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


# --------------------------------------------------------------------------- camera effects


def _flat(value: int, size: int = 16) -> Image.Image:
    return Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8))


def test_each_camera_effect_does_what_it_says() -> None:
    rng = np.random.default_rng(0)
    camera = CameraEffects(noise_sigma=(6.0, 6.0), gamma=(2.0, 2.0), jpeg_quality=(10, 10))
    # sensor noise: zero-mean with the drawn standard deviation
    noisy = np.asarray(camera.noise(_flat(128, 64), rng), dtype=np.float64) - 128
    assert abs(noisy.mean()) < 0.3 and noisy.std() == pytest.approx(6.0, rel=0.05)
    # tone curve: 255 (x / 255) ** gamma
    toned = np.asarray(camera.tone(_flat(128), rng))
    assert np.all(toned == round(255 * (128 / 255) ** 2.0))
    # motion blur: a point becomes a streak of `length` pixels of 1/length its value
    point = np.zeros((9, 9), dtype=np.uint8)
    point[4, 4] = 255
    for direction, streak in ((0, [(4, 3), (4, 4), (4, 5)]), (1, [(3, 4), (4, 4), (5, 4)]),
                              (2, [(3, 3), (4, 4), (5, 5)]), (3, [(3, 5), (4, 4), (5, 3)])):
        blurred = np.asarray(motion_blur(Image.fromarray(point), 3, direction))
        assert sorted(zip(*np.nonzero(blurred), strict=True)) == streak, direction
        assert np.all(blurred[tuple(np.array(streak).T)] == 85)
    # defocus and motion both soften an edge; compression keeps size and mode
    face = Image.fromarray(np.kron(np.eye(4, dtype=np.uint8) * 255, np.ones((4, 4), np.uint8)))
    edges = [laplacian_score(np.asarray(camera.blur(face.convert("RGB"), np.random.default_rng(i))))
             .laplacian for i in range(6)]
    assert max(edges) < laplacian_score(np.asarray(face.convert("RGB"))).laplacian
    squeezed = camera.compress(face.convert("RGB"), rng)
    assert squeezed.size == face.size and squeezed.mode == "RGB"
    assert not np.array_equal(np.asarray(squeezed), np.asarray(face.convert("RGB")))


def test_camera_effects_are_seeded_and_optional(lfw_crops: list[np.ndarray]) -> None:
    crop = lfw_crops[0]
    camera = CameraEffects(effect_probability=1.0)

    def seeded(seed: int, effects: CameraEffects | None = camera) -> np.ndarray:
        return degrade(crop, 14, camera=effects, rng=np.random.default_rng(seed))

    first = seeded(1)
    assert first.shape == crop.shape and first.dtype == np.uint8
    np.testing.assert_array_equal(first, seeded(1))  # repeatable
    assert not np.array_equal(first, seeded(2))
    assert not np.array_equal(first, degrade(crop, 14))
    # probability 0: the resize alone; r >= 112: untouched, effects or not
    np.testing.assert_array_equal(seeded(1, CameraEffects(effect_probability=0.0)),
                                  degrade(crop, 14))
    np.testing.assert_array_equal(degrade(crop, 112, camera=camera,
                                          rng=np.random.default_rng(0)), crop)
    with pytest.raises(ValueError, match="seeded rng"):
        degrade(crop, 14, camera=camera)
    with pytest.raises(ValueError, match="jpeg_quality"):
        CameraEffects(jpeg_quality=(0, 50))
