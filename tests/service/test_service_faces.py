"""Faces as they arrive (service/faces.py through the API): detection, alignment, frames
with several faces, no face, the border, rotation, grey and 16-bit images."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.support.service import ADMIN, CLIENT, create_gallery, create_subject, encode, face_png


@pytest.fixture(scope="module")
def lfw_photos(shared_data_dir: Path) -> list[Image.Image]:
    """Four LFW photos (250x250) of four different people."""
    folder = shared_data_dir / "lfw" / "images"
    names = ["Aaron_Peirsol", "Abdullah_Gul", "Adrien_Brody", "Alejandro_Toledo"]
    paths = [folder / n / f"{n}_0001.jpg" for n in names]
    if not all(p.is_file() for p in paths):
        pytest.skip(f"LFW images not found under {folder}")
    return [Image.open(p).convert("RGB") for p in paths]


@pytest.fixture
def auto(make_client: Callable[..., object]) -> Iterator[TestClient]:
    """The app with the API's default face finding (``auto``)."""
    with make_client(default_face="auto") as started:  # type: ignore[attr-defined]
        yield started


def frame(photos: list[Image.Image], places: list[tuple[int, int]], size: int = 160,
          canvas: tuple[int, int] = (640, 480)) -> Image.Image:
    """Photos scaled to ``size`` px pasted into a flat grey frame."""
    scene = Image.new("RGB", canvas, (120, 120, 120))
    for photo, place in zip(photos, places, strict=False):
        scene.paste(photo.resize((size, size), Image.Resampling.BICUBIC), place)
    return scene


def post(client: TestClient, path: str, image: Image.Image | bytes, **form: object):
    data = image if isinstance(image, bytes) else encode(image)
    return client.post(path, files={"image": ("i.png", data)},
                       data={k: str(v) for k, v in form.items()}, headers=CLIENT)


def test_detect_lists_every_face_with_box_landmarks_score_quality(
    auto: TestClient, lfw_photos: list[Image.Image]
) -> None:
    scene = frame(lfw_photos[:3], [(20, 40), (240, 200), (460, 60)])
    response = post(auto, "/v1/detect", scene)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"]) == (640, 480)
    faces = body["faces"]
    assert len(faces) == 3
    centres = sorted((f["face"]["box"][0] + f["face"]["box"][2]) / 2 for f in faces)
    assert centres[0] < 180 < centres[1] < 400 < centres[2]  # one per pasted photo
    for found in faces:
        x1, y1, x2, y2 = found["face"]["box"]
        left_eye, right_eye = found["face"]["landmarks"][:2]
        assert x1 < left_eye[0] < right_eye[0] < x2 and y1 < left_eye[1] < y2
        assert found["face"]["alignment"] == "landmarks"
        assert found["face"]["score"] > 0.5
        assert found["quality"]["laplacian"] > 0


def test_no_face_in_a_large_image_is_a_422_no_face(auto: TestClient) -> None:
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    response = post(auto, "/v1/quality", noise)
    assert response.status_code == 422
    assert response.json()["detail"]["code"] == "no_face"
    assert post(auto, "/v1/detect", noise).json()["faces"] == []


def test_a_small_image_without_a_detection_is_taken_as_a_box(
    auto: TestClient, lfw_photos: list[Image.Image]
) -> None:
    # the detector, enlarging small images, finds even an 11 px face in a 20 px photo
    photo = lfw_photos[0].resize((20, 20), Image.Resampling.BICUBIC)
    assert post(auto, "/v1/quality", photo).json()["face"]["alignment"] == "landmarks"
    blob = Image.open(io.BytesIO(face_png(3, size=(24, 30))))  # smooth colours: no face
    body = post(auto, "/v1/quality", blob).json()
    assert body["face"]["alignment"] == "box"
    assert body["face"]["box"] == [0.0, 0.0, 24.0, 30.0]


def test_the_face_mode_is_the_callers_to_choose(
    auto: TestClient, lfw_photos: list[Image.Image]
) -> None:
    photo = lfw_photos[0]
    assert post(auto, "/v1/quality", photo).json()["face"]["alignment"] == "landmarks"
    assert post(auto, "/v1/quality", photo, face="aligned").json()["face"]["alignment"] == "as_is"
    assert post(auto, "/v1/quality", photo, face="box").json()["face"]["alignment"] == "box"
    assert post(auto, "/v1/quality", photo, face="nose").status_code == 422


def test_verify_says_how_each_face_was_found(
    auto: TestClient, lfw_photos: list[Image.Image]
) -> None:
    scene = frame(lfw_photos[1:2], [(300, 150)])
    response = auto.post(
        "/v1/verify",
        files={"image1": ("a.png", encode(lfw_photos[1])), "image2": ("b.png", encode(scene))},
        headers=CLIENT,
    )
    assert response.status_code == 200, response.text
    first, second = response.json()["faces"]
    assert first["alignment"] == second["alignment"] == "landmarks"
    x1, y1, x2, y2 = second["box"]
    assert 300 < x1 < x2 < 460 and 150 < y1 < y2 < 310  # in the frame's pixels


@pytest.mark.parametrize("place", [(-60, 100), (540, -40)])
def test_a_face_cut_by_the_border_is_found_and_aligned(
    auto: TestClient, lfw_photos: list[Image.Image], place: tuple[int, int]
) -> None:
    scene = frame(lfw_photos[2:3], [place], size=200)
    body = post(auto, "/v1/quality", scene).json()
    x1, y1, x2, y2 = body["face"]["box"]
    assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480
    assert body["face"]["alignment"] == "landmarks"


def test_a_rotated_face_is_levelled_by_its_landmarks(
    auto: TestClient, lfw_photos: list[Image.Image]
) -> None:
    rotated = lfw_photos[3].rotate(25, resample=Image.Resampling.BICUBIC, fillcolor=(128,) * 3)
    body = post(auto, "/v1/detect", rotated).json()
    (face,) = body["faces"]
    (lx, ly), (rx, ry) = face["face"]["landmarks"][:2]
    # counter-clockwise rotation on screen: the right eye (image right) rises
    assert np.degrees(np.arctan2(ly - ry, rx - lx)) == pytest.approx(25, abs=8)


def test_grey_and_16_bit_images(auto: TestClient, lfw_photos: list[Image.Image]) -> None:
    grey = lfw_photos[0].convert("L")
    assert post(auto, "/v1/quality", grey).json()["face"]["alignment"] == "landmarks"
    deep = Image.fromarray(np.asarray(grey, dtype=np.uint16) * 257)  # 16-bit grey
    assert deep.mode == "I;16"
    response = post(auto, "/v1/quality", deep)
    assert response.status_code == 200, response.text
    assert response.json()["face"]["alignment"] == "landmarks"


def test_enrollment_refuses_two_similar_faces_unless_one_is_picked(
    auto: TestClient, lfw_photos: list[Image.Image]
) -> None:
    create_gallery(auto, "g")
    create_subject(auto, "g", "s")
    two = encode(frame(lfw_photos[:2], [(40, 100), (360, 100)]))
    response = auto.post("/v1/galleries/g/subjects/s/faces",
                         files=[("images", ("two.png", two))], headers=ADMIN)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail["code"] == "several_faces" and len(detail["boxes"]) == 2
    response = auto.post("/v1/galleries/g/subjects/s/faces", data={"face_index": "1"},
                         files=[("images", ("two.png", two))], headers=ADMIN)
    assert response.status_code == 201, response.text
    (stored,) = response.json()["faces"]
    assert stored["face"]["index"] == 1 and stored["face"]["faces_found"] == 2
    response = auto.post("/v1/galleries/g/subjects/s/faces", data={"face_index": "5"},
                         files=[("images", ("two.png", two))], headers=ADMIN)
    assert response.status_code == 422 and "face_index" in response.text


def test_identify_every_face_of_a_frame(auto: TestClient, lfw_photos: list[Image.Image]) -> None:
    create_gallery(auto, "g")
    for index, photo in enumerate(lfw_photos[:2]):
        create_subject(auto, "g", f"p{index}")
        response = auto.post(f"/v1/galleries/g/subjects/p{index}/faces",
                             files=[("images", ("f.png", encode(photo)))], headers=ADMIN)
        assert response.status_code == 201, response.text
    scene = frame(lfw_photos[:3], [(20, 40), (240, 200), (460, 60)])
    response = post(auto, "/v1/identify", scene, gallery="g", faces="all")
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["faces"]) == 3
    for answer in body["faces"]:
        assert answer["face"]["alignment"] == "landmarks"
        assert answer["decision"] in ("match", "unknown", "undecidable")
        assert answer["matches"]
    empty = Image.new("RGB", (320, 240), (90, 90, 90))
    assert post(auto, "/v1/identify", empty, gallery="g", faces="all").json()["faces"] == []
    assert post(auto, "/v1/identify", empty, gallery="nope", faces="all").status_code == 404
