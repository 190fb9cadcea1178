"""models.alignment: the similarity fit, landmark and box alignment, the shared names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import training.faces
from models import alignment
from models.alignment import (
    ARCFACE_TEMPLATE_112,
    CENTERFACE_BOX,
    INPUT_SIZE,
    BoxTransform,
    align_box,
    align_by_landmarks,
    apply_transform,
    box_matrix,
    landmark_matrix,
    similarity_transform,
)


def _rotation(angle: float) -> np.ndarray:
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def _dots(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    image = Image.new("RGB", size, "black")
    draw = ImageDraw.Draw(image)
    for x, y in points:
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill="white")
    return np.asarray(image)


def _blob_centre(pixels: np.ndarray, x: float, y: float, radius: int = 5) -> np.ndarray:
    grey = pixels.astype(np.float64).mean(axis=2)
    x0, y0 = max(round(x) - radius, 0), max(round(y) - radius, 0)
    window = grey[y0 : y0 + 2 * radius + 1, x0 : x0 + 2 * radius + 1]
    assert window.sum() > 0, f"no bright blob near ({x}, {y})"
    ys, xs = np.mgrid[0 : window.shape[0], 0 : window.shape[1]]
    return np.array([(xs * window).sum(), (ys * window).sum()]) / window.sum() + (x0, y0)


def test_similarity_transform_recovers_a_known_transform() -> None:
    angle, scale, shift = -0.4, 0.6, np.array([-30.0, 17.5])
    source = np.random.default_rng(0).uniform(0, 200, size=(7, 2))
    target = (scale * _rotation(angle) @ source.T).T + shift
    matrix = similarity_transform(source, target)
    np.testing.assert_allclose(matrix[:, :2], scale * _rotation(angle), atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-9)
    np.testing.assert_allclose(apply_transform(matrix, source), target, atol=1e-9)


def test_similarity_transform_never_reflects() -> None:
    mirrored = ARCFACE_TEMPLATE_112 * [-1.0, 1.0]
    matrix = similarity_transform(mirrored, ARCFACE_TEMPLATE_112)
    assert np.linalg.det(matrix[:, :2]) > 0


@pytest.mark.parametrize(
    ("source", "target", "message"),
    [
        (np.ones((5, 2)), ARCFACE_TEMPLATE_112, "identical"),
        (np.ones((4, 2)), ARCFACE_TEMPLATE_112, "matching"),
        (np.ones((1, 2)), np.ones((1, 2)), "matching"),
    ],
)
def test_similarity_transform_rejects_bad_points(
    source: np.ndarray, target: np.ndarray, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        similarity_transform(source, target)


@pytest.mark.parametrize("size", [112, 224])
def test_align_by_landmarks_puts_dots_on_the_template(size: int) -> None:
    landmarks = (1.8 * _rotation(0.35) @ (ARCFACE_TEMPLATE_112 - 56).T).T + np.array([150, 110])
    aligned = align_by_landmarks(_dots(landmarks, (300, 240)), landmarks, size=size)
    assert aligned.shape == (size, size, 3) and aligned.dtype == np.uint8
    zoom = size / INPUT_SIZE  # errors in template px at 112
    for x, y in ARCFACE_TEMPLATE_112 * zoom:
        centre = _blob_centre(aligned, x, y, radius=round(5 * zoom))
        assert np.hypot(*(centre - (x, y))) / zoom < 1.0


def test_align_by_landmarks_takes_grey_arrays_and_checks_the_count() -> None:
    landmarks = ARCFACE_TEMPLATE_112 + 20
    grey = _dots(landmarks, (160, 160))[..., 0]
    aligned = align_by_landmarks(grey, landmarks)
    assert aligned.shape == (112, 112, 3)
    nose = ARCFACE_TEMPLATE_112[2]
    assert np.hypot(*(_blob_centre(aligned, *nose) - nose)) < 1.0
    with pytest.raises(ValueError, match="5 landmarks"):
        landmark_matrix(landmarks[:4])


def test_box_matrix_maps_the_box_centre_and_width() -> None:
    transform = BoxTransform(scale=80.0, centre=(56.0, 64.0))
    box = (100.0, 50.0, 140.0, 100.0)  # 40 px wide, centre (120, 75)
    matrix = box_matrix(box, transform)
    np.testing.assert_allclose(apply_transform(matrix, [(120, 75)])[0], (56, 64))
    np.testing.assert_allclose(matrix[:, :2], np.eye(2) * 2.0)  # 80 template px / 40 px
    double = box_matrix(box, transform, size=224)
    np.testing.assert_allclose(apply_transform(double, [(120, 75)])[0], (112, 128))
    with pytest.raises(ValueError, match="empty box"):
        box_matrix((10, 10, 10, 20))


def test_align_box_reproduces_the_expected_framing() -> None:
    # dots placed where the default box transform says the template points are
    box = np.array([60.0, 40.0, 108.0, 100.0])
    to_image = np.linalg.inv(np.vstack([box_matrix(box), [0, 0, 1]]))[:2]
    points = apply_transform(to_image, ARCFACE_TEMPLATE_112)
    aligned = align_box(_dots(points, (200, 180)), box)
    assert aligned.shape == (112, 112, 3)
    for x, y in ARCFACE_TEMPLATE_112:
        assert np.hypot(*(_blob_centre(aligned, x, y) - (x, y))) < 1.0
    # the box itself spans CENTERFACE_BOX.scale template pixels, centred as measured
    corners = apply_transform(box_matrix(box), box.reshape(2, 2))
    assert corners[1, 0] - corners[0, 0] == pytest.approx(CENTERFACE_BOX.scale)
    np.testing.assert_allclose(corners.mean(axis=0), CENTERFACE_BOX.centre)


def test_centerface_box_constants_frame_real_faces(lfw_face_paths: list[Path]) -> None:
    pytest.importorskip("onnxruntime")
    from models.detector import FaceDetector

    detector = FaceDetector()
    errors = []
    for path in lfw_face_paths:
        with Image.open(path) as image:
            (face, *_) = detector.detect(np.asarray(image.convert("RGB")))
        mapped = apply_transform(box_matrix(face.box), face.landmarks)
        errors.append(np.linalg.norm(mapped - ARCFACE_TEMPLATE_112, axis=1).mean())
    # measured: mean 7.4 px on held-out LFW (docs/detector.md); a wrong constant is far off
    assert np.mean(errors) < 10.0, errors


def test_training_faces_keeps_the_old_names() -> None:
    names = ("ARCFACE_TEMPLATE_112", "INPUT_SIZE", "align_by_landmarks", "similarity_transform")
    for name in names:
        assert getattr(training.faces, name) is getattr(alignment, name)
