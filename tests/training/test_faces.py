"""Face inputs: LFW crop, landmark alignment, aligned crops, landmarks files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from training.faces import (
    ARCFACE_TEMPLATE_112,
    LFW_DEEPFUNNELED_BOX,
    FaceLoader,
    align_by_landmarks,
    crop_lfw_deepfunneled,
    load_landmarks,
    resize_aligned,
    similarity_transform,
)


def test_similarity_transform_recovers_a_known_transform() -> None:
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    target = ARCFACE_TEMPLATE_112
    source = (np.linalg.inv(scale * rotation) @ (target - shift).T).T
    matrix = similarity_transform(source, target)
    np.testing.assert_allclose(matrix[:, :2], scale * rotation, atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-9)
    with pytest.raises(ValueError, match="identical"):
        similarity_transform(np.ones((5, 2)), target)


def _dots_image(points: np.ndarray, size: tuple[int, int]) -> Image.Image:
    image = Image.new("RGB", size, "black")
    draw = ImageDraw.Draw(image)
    for x, y in points:
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill="white")
    return image


def _blob_centre(pixels: np.ndarray, x: float, y: float, radius: int = 8) -> np.ndarray:
    grey = pixels.mean(axis=2)
    x0, y0 = round(x) - radius, round(y) - radius
    window = grey[max(y0, 0) : y0 + 2 * radius + 1, max(x0, 0) : x0 + 2 * radius + 1]
    ys, xs = np.mgrid[0 : window.shape[0], 0 : window.shape[1]]
    total = window.sum()
    assert total > 0, f"no bright blob near ({x}, {y})"
    centre_x = (xs * window).sum() / total + max(x0, 0)
    centre_y = (ys * window).sum() / total + max(y0, 0)
    return np.array([centre_x, centre_y])


def test_alignment_puts_landmarks_on_the_template() -> None:
    # a tilted, larger face somewhere in a 300x240 frame
    angle, scale = -0.25, 2.2
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmarks = (scale * rotation @ (ARCFACE_TEMPLATE_112 - 56).T).T + np.array([160, 120])
    aligned = align_by_landmarks(_dots_image(landmarks, (300, 240)), landmarks)
    assert aligned.shape == (112, 112, 3) and aligned.dtype == np.uint8
    for x, y in ARCFACE_TEMPLATE_112:
        centre = _blob_centre(aligned, x, y, radius=5)
        assert np.hypot(*(centre - (x, y))) < 1.0


def test_lfw_crop_takes_the_documented_box() -> None:
    image = Image.new("RGB", (250, 250), "black")
    left, top, right, bottom = LFW_DEEPFUNNELED_BOX
    ImageDraw.Draw(image).rectangle([left, top, right - 1, bottom - 1], fill=(200, 100, 50))
    crop = crop_lfw_deepfunneled(image)
    assert crop.shape == (112, 112, 3)
    assert np.abs(crop[2:-2, 2:-2].astype(int) - (200, 100, 50)).max() <= 2  # box fills it
    assert right - left == bottom - top == 136 and (left + right) / 2 == 125


def test_lfw_crop_frames_real_faces(lfw_face_paths: list[Path]) -> None:
    # the eyes, nose and mouth (the detailed, lit middle) should fill the crop's centre
    for path in lfw_face_paths:
        with Image.open(path) as image:
            crop = crop_lfw_deepfunneled(image).astype(np.float64)
        centre = crop[40:100, 30:82].mean(axis=2)
        assert np.abs(np.diff(centre, axis=1)).mean() > 2.0, f"{path.name}: flat centre"
        assert centre.mean() > 40, f"{path.name}: centre too dark to be a face"


def test_resize_aligned_and_loader_modes(tmp_path: Path) -> None:
    small = Image.new("L", (30, 40), 128)
    assert resize_aligned(small).shape == (112, 112, 3)
    path = tmp_path / "face.png"
    small.save(path)
    assert FaceLoader("aligned").load(path).shape == (112, 112, 3)
    with pytest.raises(ValueError, match="landmarks table"):
        FaceLoader("landmarks")
    with pytest.raises(ValueError, match="unknown face mode"):
        FaceLoader("centre")  # type: ignore[arg-type]


def test_landmarks_file_and_lookup(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "alice"
    folder.mkdir(parents=True)
    landmarks = ARCFACE_TEMPLATE_112 * 2 + 10
    _dots_image(landmarks, (260, 260)).save(folder / "a.png")
    numbers = " ".join(f"{v:.4f}" for v in landmarks.ravel())
    table_path = tmp_path / "landmarks.txt"
    commas = numbers.replace(" ", ",")
    table_path.write_text(f"# name x1 y1 ...\nalice/a.png {numbers}\n\nother.png,{commas}\n")
    table = load_landmarks(table_path)
    assert set(table) == {"alice/a.png", "other.png"}
    np.testing.assert_allclose(table["alice/a.png"], landmarks, atol=1e-4)
    loader = FaceLoader("landmarks", table, tmp_path / "data")
    aligned = loader.load(folder / "a.png")
    centre = _blob_centre(aligned, *ARCFACE_TEMPLATE_112[0], radius=5)
    assert np.hypot(*(centre - ARCFACE_TEMPLATE_112[0])) < 1.0
    Image.new("RGB", (50, 50)).save(tmp_path / "elsewhere.png")
    with pytest.raises(KeyError, match="no landmarks"):
        loader.load(tmp_path / "elsewhere.png")
    table_path.write_text("bad.png 1 2 3\n")
    with pytest.raises(ValueError, match="10 numbers"):
        load_landmarks(table_path)
