"""/v1/quality, /v1/verify and /v1/identify, and every kind of bad input."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from models.embedder import resize_to_input
from models.quality import laplacian_score
from tests.support.service import ADMIN, CLIENT, encode, face_png, png_claiming, post_identify


def test_quality_is_measured_at_the_network_input(client: TestClient) -> None:
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 256, (30, 20, 3), dtype=np.uint8))
    response = client.post("/v1/quality", files={"image": ("x.png", encode(image))}, headers=CLIENT)
    assert response.status_code == 200, response.text
    quality = response.json()["quality"]
    expected = laplacian_score(resize_to_input(image, (112, 112)))
    assert quality["laplacian"] == pytest.approx(expected.laplacian, rel=1e-9)
    assert quality["laplacian_var"] == pytest.approx(expected.laplacian_var, rel=1e-9)
    assert (quality["width"], quality["height"]) == (20, 30)


def test_verify_same_image_matches_with_the_model_threshold(client: TestClient) -> None:
    data = face_png(1)
    response = client.post(
        "/v1/verify",
        files={"image1": ("a.png", data), "image2": ("b.png", data)},
        headers=CLIENT,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert body["match"] is True
    assert body["threshold"] == 0.86  # the reference model's FAR 1e-3 threshold
    assert body["model"] == {"name": "lrfr-reference-pixels", "version": "reference-1"}
    assert len(body["quality"]) == 2


def test_verify_threshold_decides(client: TestClient) -> None:
    files = {"image1": ("a.png", face_png(1)), "image2": ("b.png", face_png(2))}
    low = client.post("/v1/verify", files=files, data={"threshold": "-1"}, headers=CLIENT)
    high = client.post("/v1/verify", files=files, data={"threshold": "1"}, headers=CLIENT)
    assert low.json()["match"] is True and low.json()["threshold"] == -1
    assert high.json()["match"] is False
    assert low.json()["similarity"] == high.json()["similarity"] < 1.0


@pytest.mark.parametrize("size", [(1, 1), (1, 7), (3, 2), (16, 12)])
def test_tiny_images_are_scored_and_embedded(client: TestClient, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    tiny = encode(Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)))
    response = client.post(
        "/v1/verify",
        files={"image1": ("t.png", tiny), "image2": ("f.png", face_png(0))},
        headers=CLIENT,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert np.isfinite(body["similarity"])
    assert (body["quality"][0]["width"], body["quality"][0]["height"]) == size


@pytest.mark.parametrize("mode", ["L", "RGBA", "LA", "P", "I;16"])
def test_modes_are_converted(client: TestClient, mode: str) -> None:
    if mode == "I;16":
        image = Image.fromarray((np.arange(400).reshape(20, 20) * 100).astype(np.uint16))
    else:
        image = Image.new("RGB", (20, 20), (200, 100, 50)).convert(mode)
    response = client.post("/v1/quality", files={"image": ("x.png", encode(image))}, headers=CLIENT)
    assert response.status_code == 200, response.text


def _bad_inputs() -> list[tuple[str, bytes, int]]:
    png = face_png(5)
    jpeg = encode(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")
    return [
        ("empty", b"", 400),
        ("text", b"definitely not an image", 415),
        ("gif", encode(Image.new("RGB", (8, 8)), "GIF"), 415),
        ("tiff", encode(Image.new("RGB", (8, 8)), "TIFF"), 415),
        ("truncated-png", png[: len(png) // 2], 400),
        ("truncated-jpeg", jpeg[:300], 400),
        ("bomb", png_claiming(6000, 6000), 413),
        ("pillow-bomb", png_claiming(20000, 20000), 413),
    ]


@pytest.mark.parametrize(("name", "data", "status"), _bad_inputs(), ids=lambda v: str(v)[:14])
@pytest.mark.parametrize("endpoint", ["/v1/quality", "/v1/verify", "/v1/identify"])
def test_bad_images_get_clear_errors(
    client: TestClient, endpoint: str, name: str, data: bytes, status: int
) -> None:
    if endpoint == "/v1/verify":
        files = {"image1": (f"{name}.png", data), "image2": ("ok.png", face_png(0))}
    else:
        files = {"image": (f"{name}.png", data)}
    form = {"gallery": "none"} if endpoint == "/v1/identify" else {}
    response = client.post(endpoint, files=files, data=form, headers=CLIENT)
    assert response.status_code == status, response.text
    assert "image" in response.json()["detail"]


def test_oversized_upload_is_413(make_client) -> None:
    with make_client(max_upload_bytes=2000) as client:
        big = encode(
            Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
        )
        assert len(big) > 2000
        response = client.post("/v1/quality", files={"image": ("big.png", big)}, headers=CLIENT)
        assert response.status_code == 413
        assert "LRFR_MAX_UPLOAD_BYTES" in response.json()["detail"]
        # far over the limit: refused from the Content-Length, before the body is parsed
        huge = b"\0" * 300_000
        response = client.post("/v1/quality", files={"image": ("huge.png", huge)}, headers=CLIENT)
        assert response.status_code == 413


@pytest.mark.parametrize(
    ("endpoint", "files", "form"),
    [
        ("/v1/quality", {}, {}),
        ("/v1/verify", {"image1": ("a.png", b"x")}, {}),
        ("/v1/identify", {"image": ("a.png", b"x")}, {}),
        ("/v1/identify", {}, {"gallery": "g"}),
        ("/v1/verify", {"image1": ("a", b"x"), "image2": ("b", b"x")}, {"threshold": "2"}),
        ("/v1/identify", {"image": ("a", b"x")}, {"gallery": "g", "top_k": "0"}),
    ],
)
def test_missing_or_invalid_fields_are_422(
    client: TestClient, endpoint: str, files: dict, form: dict
) -> None:
    response = client.post(endpoint, files=files or None, data=form, headers=CLIENT)
    assert response.status_code == 422, response.text


def test_identify_unknown_gallery_is_404(client: TestClient) -> None:
    response = post_identify(client, "nope", face_png(0))
    assert response.status_code == 404
    assert "nope" in response.json()["detail"]


def test_top_k_over_the_configured_maximum(make_client) -> None:
    with make_client(max_top_k=3) as client:
        client.post("/v1/galleries", json={"name": "g"}, headers=ADMIN)
        response = post_identify(client, "g", face_png(0), top_k=4)
        assert response.status_code == 422
        assert "at most 3" in response.json()["detail"]
