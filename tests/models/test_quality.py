"""The Laplacian quality score (METHODS §3): numpy and torch, by hand and on real faces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from models.quality import laplacian, laplacian_score
from models.quality_torch import (
    laplacian_quality_torch,
    laplacian_torch,
    laplacian_variance_torch,
)
from training.degrade import degrade


def torch_score(image: np.ndarray) -> tuple[float, float]:
    """(mean |L|, var L) of one (H, W) or (H, W, C) image through the torch twin."""
    chw = image[None] if image.ndim == 2 else image.transpose(2, 0, 1)
    batch = torch.from_numpy(np.ascontiguousarray(chw)).double()[None]
    return (
        laplacian_quality_torch(batch).item(),
        laplacian_variance_torch(batch).item(),
    )


@pytest.mark.parametrize("value", [0, 128, 255])
def test_flat_image_scores_zero(value: int) -> None:
    flat = np.full((112, 112, 3), value, dtype=np.uint8)
    score = laplacian_score(flat)
    assert score.laplacian == 0.0 and score.laplacian_var == 0.0
    assert torch_score(flat) == (0.0, 0.0)


def test_dot_by_hand_with_reflect101_borders() -> None:
    # reflect-101 mirrors about the edge pixel without repeating it: the pixel beyond
    # row 0 is row 1. So the edge centres see the 4 twice: 4 + 4 = 8; the corners see
    # only zeros; the centre is −4·4 = −16. (Zero padding would give 4 at the edges.)
    image = np.array([[0, 0, 0], [0, 4, 0], [0, 0, 0]], dtype=np.uint8)
    expected = np.array([[0, 8, 0], [8, -16, 8], [0, 8, 0]], dtype=np.float64)
    np.testing.assert_array_equal(laplacian(image), expected)
    score = laplacian_score(image)
    assert score.laplacian == pytest.approx(48 / 9)  # (4·8 + 16) / 9
    assert score.laplacian_var == pytest.approx(512 / 9 - (16 / 9) ** 2)  # E[L²] − E[L]²
    q, var = torch_score(image)
    assert q == pytest.approx(48 / 9) and var == pytest.approx(512 / 9 - (16 / 9) ** 2)


def test_asymmetric_4x4_by_hand() -> None:
    image = np.array(
        [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 9], [0, 0, 0, 0]],
        dtype=np.uint8,
    )
    # the 9 at (2, 3): itself −36; neighbours (1,3), (3,3), (2,2) get 9; (3,3) also sees
    # it as its reflected lower neighbour (row 4 -> row 2): 18; (2,3) sees its right
    # neighbour (col 4 -> col 2) = 0 and left = 0, so −36 stands.
    expected = np.zeros((4, 4))
    expected[2, 3] = -36
    expected[1, 3] = 9
    expected[3, 3] = 18
    expected[2, 2] = 9
    np.testing.assert_array_equal(laplacian(image), expected)
    assert laplacian_score(image).laplacian == pytest.approx(72 / 16)
    assert torch_score(image)[0] == pytest.approx(72 / 16)


def test_single_row_by_hand() -> None:
    # a side of length 1 reflects onto itself (OpenCV), so up + down − 2x cancel and
    # L = left + right − 2x with reflect-101 along the row: [3+3−0, 0+0−6, 3+6−0, 0+0−12]
    row = np.array([[0, 3, 0, 6]], dtype=np.uint8)
    np.testing.assert_array_equal(laplacian(row), [[6, -6, 9, -12]])
    assert laplacian_score(row).laplacian == pytest.approx(33 / 4)
    assert torch_score(row)[0] == pytest.approx(33 / 4)
    column = row.T.copy()
    np.testing.assert_array_equal(laplacian(column), [[6], [-6], [9], [-12]])
    assert torch_score(column)[0] == pytest.approx(33 / 4)


def test_channels_are_scored_separately_and_averaged() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    per_channel = [laplacian_score(image[..., c]).laplacian for c in range(3)]
    assert laplacian_score(image).laplacian == pytest.approx(np.mean(per_channel))


@pytest.mark.parametrize(
    "shape",
    [(112, 112, 3), (1, 17, 3), (17, 1, 3), (1, 1, 3), (2, 2, 3), (5, 9), (1, 40), (40, 1)],
)
def test_numpy_and_torch_agree_on_random_images(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(sum(shape))
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    expected = laplacian_score(image)
    q, var = torch_score(image)
    assert q == pytest.approx(expected.laplacian, rel=1e-4, abs=1e-9)
    assert var == pytest.approx(expected.laplacian_var, rel=1e-4, abs=1e-9)


@pytest.mark.parametrize(
    "shape", [(112, 112, 3), (2, 2, 3), (1, 17, 3), (17, 1), (3, 5), (1, 1, 3)]
)
def test_shifted_sums_equal_scipy_mirror_convolution(shape: tuple[int, ...]) -> None:
    """The shift-and-add Laplacian equals a plain 2-D convolution with scipy's
    ``mirror`` borders (reflect-101), on non-integer pixels too; scipy repeats a side of
    length 1 the same way."""
    rng = np.random.default_rng(len(shape) * 100 + shape[0])
    image = rng.uniform(0, 255, shape)
    kernel = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float64)
    planes = image[..., None] if image.ndim == 2 else image
    expected = np.stack(
        [ndimage.convolve(planes[..., c], kernel, mode="mirror")
         for c in range(planes.shape[-1])], axis=-1,
    ).reshape(image.shape)
    np.testing.assert_allclose(laplacian(image), expected, rtol=0, atol=1e-9)


def test_float32_torch_batch_agrees_with_numpy() -> None:
    # training runs the torch twin batched in float32 on uint8-valued pixels
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (4, 112, 112, 3), dtype=np.uint8)
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    q = laplacian_quality_torch(batch)
    assert q.dtype == torch.float32 and q.shape == (4,)
    for i, image in enumerate(images):
        assert q[i].item() == pytest.approx(laplacian_score(image).laplacian, rel=1e-4)
    # an integer batch is promoted, not refused
    assert laplacian_torch(torch.from_numpy(images).permute(0, 3, 1, 2)).is_floating_point()


def test_torch_refuses_unbatched_input() -> None:
    with pytest.raises(ValueError, match="N, C, H, W"):
        laplacian_torch(torch.zeros(3, 8, 8))


def test_degraded_lfw_face_scores_lower(lfw_faces: list[np.ndarray]) -> None:
    for face in lfw_faces:
        low = degrade(face, 14)
        assert low.shape == face.shape
        original = laplacian_score(face).laplacian
        degraded = laplacian_score(low).laplacian
        assert degraded < 0.6 * original, (original, degraded)
        assert torch_score(low)[0] < torch_score(face)[0]


def test_numpy_and_torch_agree_on_lfw_faces(lfw_faces: list[np.ndarray]) -> None:
    images = np.stack(lfw_faces + [degrade(face, 28) for face in lfw_faces])
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    q = laplacian_quality_torch(batch)
    var = laplacian_variance_torch(batch)
    for i, image in enumerate(images):
        expected = laplacian_score(image)
        assert q[i].item() == pytest.approx(expected.laplacian, rel=1e-4)
        assert var[i].item() == pytest.approx(expected.laplacian_var, rel=1e-4)
    # thin strips of a real face exercise the length-1 borders
    face = lfw_faces[0]
    for strip in (face[50:51], face[:, 50:51]):
        assert torch_score(strip)[0] == pytest.approx(laplacian_score(strip).laplacian, rel=1e-4)


def test_laplacian_module_matches_the_function_and_keeps_no_state() -> None:
    from models.quality_torch import LaplacianQuality

    batch = torch.rand(3, 3, 9, 7) * 255
    module = LaplacianQuality(channels=3)
    torch.testing.assert_close(module(batch), laplacian_quality_torch(batch))
    assert module.state_dict() == {}
