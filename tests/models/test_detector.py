"""models.detector: the vendored CenterFace, its loading, decoding, NMS and edge cases."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.alignment import ARCFACE_TEMPLATE_112, apply_transform, landmark_matrix, warp
from models.detector import (
    DEFAULT_MODEL_PATH,
    LANDMARK_NAMES,
    MODEL_SHA256,
    Detection,
    FaceDetector,
    as_rgb,
    centerface,
    nms,
    upscale_factor,
)
from models.detector._dynamic import with_dynamic_shapes

pytest.importorskip("onnxruntime")

VENDORED_SHA256 = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(threads=2)


@pytest.fixture(scope="module")
def lfw_image(lfw_face_paths: list[Path]) -> np.ndarray:
    """The first LFW image (250x250 RGB), one frontal face in the middle."""
    with Image.open(lfw_face_paths[0]) as image:
        return np.asarray(image.convert("RGB"))


def _rotation_about_centre(degrees: float, size: int, out: int) -> np.ndarray:
    """2x3: rotate a size x size image by ``degrees`` (counter-clockwise as seen) into
    an out x out frame, centre to centre."""
    angle = np.radians(degrees)
    rotation = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    shift = np.array([out / 2, out / 2]) - rotation @ np.array([size / 2, size / 2])
    return np.hstack([rotation, shift[:, None]])


def test_vendored_model_is_unchanged() -> None:
    digest = hashlib.sha256(DEFAULT_MODEL_PATH.read_bytes()).hexdigest()
    assert digest == MODEL_SHA256 == VENDORED_SHA256
    folder = DEFAULT_MODEL_PATH.parent
    assert "MIT" in (folder / "LICENSE-centerface.txt").read_text(encoding="utf-8")
    assert VENDORED_SHA256 in (folder / "SOURCE.md").read_text(encoding="utf-8")


def test_dynamic_shapes_are_valid_onnx() -> None:
    import onnx
    shapes = {"input.1": ["N", 3, "H", "W"], "537": ["N", 1, "h", "w"]}
    model = onnx.load_from_string(with_dynamic_shapes(DEFAULT_MODEL_PATH.read_bytes(), shapes))
    onnx.checker.check_model(model)
    (graph_input,) = model.graph.input  # the weights are no longer listed as inputs
    dims = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert (graph_input.name, dims) == ("input.1", ["N", 3, "H", "W"])
    heatmap = next(o for o in model.graph.output if o.name == "537")
    assert [d.dim_param or d.dim_value for d in heatmap.type.tensor_type.shape.dim] == [
        "N",
        1,
        "h",
        "w",
    ]
    assert len(model.graph.initializer) > 100 and len(model.graph.node) > 100


def test_dynamic_shapes_reject_unknown_names_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not graph inputs or outputs"):
        with_dynamic_shapes(DEFAULT_MODEL_PATH.read_bytes(), {"no-such-tensor": [1]})
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(DEFAULT_MODEL_PATH.read_bytes()[:1000])
    with pytest.raises(ValueError, match="CenterFace model"):
        FaceDetector(broken)


def test_finds_one_lfw_face_with_plausible_landmarks(
    detector: FaceDetector, lfw_image: np.ndarray
) -> None:
    (face,) = detector.detect(lfw_image)
    assert face.score > 0.8
    x1, y1, x2, y2 = face.box
    assert x1 < 125 < x2 and y1 < 125 < y2  # LFW centres the face
    assert 60 < face.width < 160 and 60 < face.height < 200
    marks = dict(zip(LANDMARK_NAMES, face.landmarks, strict=True))
    assert marks["left_eye"][0] < marks["nose"][0] < marks["right_eye"][0]  # image-left first
    assert marks["mouth_left"][0] < marks["mouth_right"][0]
    eyes_y = (marks["left_eye"][1] + marks["right_eye"][1]) / 2
    mouth_y = (marks["mouth_left"][1] + marks["mouth_right"][1]) / 2
    assert y1 < eyes_y < marks["nose"][1] < mouth_y < y2
    assert np.all((face.landmarks >= [x1, y1]) & (face.landmarks <= [x2, y2]))
    interocular = np.linalg.norm(marks["right_eye"] - marks["left_eye"])
    assert 0.3 < interocular / face.width < 0.6


def test_all_lfw_faces_put_left_eye_left(
    detector: FaceDetector, lfw_face_paths: list[Path]
) -> None:
    for path in lfw_face_paths:
        with Image.open(path) as image:
            (face, *_) = detector.detect(np.asarray(image.convert("RGB")))
        assert face.landmarks[0, 0] < face.landmarks[1, 0], path.name
        assert face.landmarks[3, 0] < face.landmarks[4, 0], path.name


@pytest.mark.parametrize("kind", ["flat", "noise", "gradient"])
def test_no_face_no_detection(detector: FaceDetector, kind: str) -> None:
    rng = np.random.default_rng(0)
    image = {
        "flat": np.full((480, 640, 3), 128, dtype=np.uint8),
        "noise": rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8),
        "gradient": np.repeat(np.linspace(0, 255, 640)[None, :, None], 480, 0).repeat(3, 2),
    }[kind]
    assert detector.detect(image) == []
    assert detector.detect(image[:60, :80], upscale_small=4) == []


@pytest.mark.parametrize("shape", [(1, 1, 3), (7, 7, 3), (31, 33, 3), (20, 20), (3, 5000, 3)])
def test_tiny_and_degenerate_images_do_not_crash(
    detector: FaceDetector, shape: tuple[int, ...]
) -> None:
    image = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    for upscale in (False, True, 3):
        assert detector.detect(image, upscale_small=upscale) == []


def test_rejects_images_that_are_not_images(detector: FaceDetector) -> None:
    with pytest.raises(ValueError, match="empty image"):
        detector.detect(np.zeros((0, 10, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="expected an"):
        detector.detect(np.zeros((10, 10, 2), dtype=np.uint8))


def test_grey_images_are_detected(detector: FaceDetector, lfw_image: np.ndarray) -> None:
    grey = np.asarray(Image.fromarray(lfw_image).convert("L"))
    (colour,) = detector.detect(lfw_image)
    for image in (grey, grey[..., None], np.repeat(grey[..., None], 3, axis=2)):
        (face,) = detector.detect(image)
        np.testing.assert_allclose(face.box, colour.box, atol=6)


def test_as_rgb_converts_layouts_and_types() -> None:
    assert as_rgb(np.zeros((4, 5), dtype=np.uint8)).shape == (4, 5, 3)
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    assert as_rgb(rgba).shape == (4, 5, 3) and as_rgb(rgba).max() == 0
    floats = as_rgb(np.full((2, 2, 3), 300.7))
    assert floats.dtype == np.uint8 and floats.max() == 255


def test_huge_images_are_shrunk_and_mapped_back(
    detector: FaceDetector, lfw_image: np.ndarray
) -> None:
    (small,) = detector.detect(lfw_image)
    big = np.asarray(Image.fromarray(lfw_image).resize((1000, 1000), Image.Resampling.BICUBIC))
    frame = np.full((2000, 3000, 3), 100, dtype=np.uint8)
    frame[500:1500, 1500:2500] = big
    (face,) = detector.detect(frame)  # 3000 px shrunk to 640 for the network
    expected = np.asarray(small.box) * 4 + [1500, 500, 1500, 500]
    assert np.abs(np.asarray(face.box) - expected).max() < 0.1 * small.width * 4
    np.testing.assert_allclose(
        face.landmarks, small.landmarks * 4 + [1500, 500], atol=0.08 * small.width * 4
    )


def test_wide_image_face_far_right(detector: FaceDetector, lfw_image: np.ndarray) -> None:
    (small,) = detector.detect(lfw_image)
    wide = np.full((250, 1500, 3), 128, dtype=np.uint8)
    wide[:, 1200:1450] = lfw_image
    (face,) = detector.detect(wide)
    expected = np.asarray(small.box) + np.array([1200, 0, 1200, 0])
    assert np.abs(np.asarray(face.box) - expected).max() < 15


def test_two_faces_side_by_side(detector: FaceDetector, lfw_face_paths: list[Path]) -> None:
    halves = []
    for path in lfw_face_paths[:2]:
        with Image.open(path) as image:
            halves.append(np.asarray(image.convert("RGB").resize((250, 250))))
    faces = detector.detect(np.concatenate(halves, axis=1))
    assert len(faces) == 2
    centres = sorted((f.box[0] + f.box[2]) / 2 for f in faces)
    assert centres[0] < 250 < centres[1]
    assert faces[0].score >= faces[1].score


def test_face_cut_by_the_border_is_found_inside_the_image(
    detector: FaceDetector, lfw_image: np.ndarray
) -> None:
    (whole,) = detector.detect(lfw_image)
    cut = round((whole.box[0] + whole.box[2]) / 2) - 10  # the left ~60% of the face is gone
    image = np.ascontiguousarray(lfw_image[:, cut:])
    faces = detector.detect(image)
    assert faces, "a face cut in half is still found"
    x1, y1, x2, y2 = faces[0].box
    assert 0 <= x1 < 3 and 0 <= y1 < y2 <= image.shape[0]  # reaches the border, no further
    assert abs(x2 - (whole.box[2] - cut)) < 15


def test_boxes_are_clipped_but_landmarks_are_not(
    detector: FaceDetector, lfw_image: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the network's raw box reaching 60 px past the top-left corner
    real_decode = centerface._decode

    def shifted(*args: np.ndarray, threshold: float) -> tuple[np.ndarray, ...]:
        boxes, scores, points = real_decode(*args, threshold=threshold)
        return boxes - [150, 110, 0, 0], scores, points - 150

    (face,) = detector.detect(lfw_image)
    monkeypatch.setattr(centerface, "_decode", shifted)
    (moved,) = detector.detect(lfw_image)
    assert moved.box[:2] == (0.0, 0.0)
    assert moved.box[2:] == pytest.approx(face.box[2:])
    assert moved.landmarks.min() < 0  # true geometry kept for alignment


def test_rotated_face_is_found_and_aligned(detector: FaceDetector, lfw_image: np.ndarray) -> None:
    (upright,) = detector.detect(lfw_image)
    rotation = _rotation_about_centre(25, 250, 360)
    rotated = warp(lfw_image, rotation, size=360)
    faces = detector.detect(rotated)
    assert faces, "a face rolled by 25 degrees is still found"
    matrix = landmark_matrix(faces[0].landmarks)
    roll = np.degrees(np.arctan2(matrix[1, 0], matrix[0, 0]))
    assert 15 < roll < 35  # the alignment undoes most of the roll
    true_eyes = apply_transform(rotation, upright.landmarks[:2])
    aligned_eyes = apply_transform(matrix, true_eyes)
    eye_error = np.linalg.norm(aligned_eyes - ARCFACE_TEMPLATE_112[:2], axis=1)
    assert eye_error.max() < 8.0, eye_error


def test_upscaling_finds_a_small_face_crop(detector: FaceDetector, lfw_image: np.ndarray) -> None:
    (face,) = detector.detect(lfw_image)
    cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
    half = 0.75 * face.width
    crop = Image.fromarray(lfw_image).crop(
        (round(cx - half), round(cy - half), round(cx + half), round(cy + half))
    )
    side = round(1.5 * 12)  # the face 12 px wide
    tiny = np.asarray(crop.resize((side, side), Image.Resampling.BICUBIC))
    found = detector.detect(tiny, upscale_small=True)
    assert len(found) == 1
    assert 6 < found[0].width < 24 and 0 <= found[0].box[0] < found[0].box[2] <= side


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10.5]])
    scores = np.array([0.6, 0.9, 0.7, 0.5])
    assert nms(boxes, scores, 0.3).tolist() == [1, 2]
    assert nms(boxes, scores, 0.99).tolist() == [1, 2, 0, 3]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.3).tolist() == []


@pytest.mark.parametrize(
    ("shape", "upscale", "max_side", "factor"),
    [
        ((20, 20), False, 640, 1),
        ((20, 20), True, 640, 4),
        ((100, 80), True, 640, 3),
        ((120, 160), True, 640, 2),
        ((250, 250), True, 640, 1),
        ((250, 250), 2, 640, 2),
        ((480, 640), 2, 640, 1),
        ((480, 640), 2, 1280, 2),
    ],
)
def test_upscale_factor(
    shape: tuple[int, int], upscale: bool | int, max_side: int, factor: int
) -> None:
    assert upscale_factor(*shape, upscale, max_side) == factor


def test_detection_helpers() -> None:
    det = Detection((10.0, 20.0, 40.0, 60.0), 0.9, np.arange(10, dtype=float).reshape(5, 2))
    assert (det.width, det.height, det.area) == (30.0, 40.0, 1200.0)
    assert det.as_dict() == {
        "box": [10.0, 20.0, 40.0, 60.0],
        "score": 0.9,
        "landmarks": [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0], [8.0, 9.0]],
    }
    with pytest.raises(ValueError, match="upscale_small"):
        upscale_factor(10, 10, -1, 640)
