"""Quality-aware decisions of /v1/verify and /v1/identify (models/decision.py in the API)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydantic import ValidationError

from models.artifact import (
    QualityCalibration,
    QualityCell,
    load_metadata,
    write_metadata,
)
from tests.support.service import (
    ADMIN,
    CLIENT,
    create_gallery,
    encode,
    face_png,
    populate,
)

#: One edge: band 0 = q < 10 (the smooth test blobs), band 1 = q >= 10 (noise images).
EDGE = 10.0


def _cell(low: int, high: int, t2: float, t3: float, tar: float) -> QualityCell:
    return QualityCell(
        low=low, high=high, thresholds={"1e-2": t2, "1e-3": t3, "1e-4": None},
        tar={"1e-2": tar, "1e-3": tar, "1e-4": None}, genuine=10, impostors=10_000,
    )


CALIBRATION = QualityCalibration(
    edges=(EDGE,),
    cells=(
        _cell(0, 0, 0.9, 0.95, 0.01),  # both blurred: TAR 1 % -> undecidable
        _cell(0, 1, -1.0, 1.0, 0.5),  # mixed: 1e-3 never accepts (cosine < 1), 1e-2 always
        _cell(1, 1, -1.0, -1.0, 0.9),  # both sharp: always accepted
    ),
    tar_floor=0.05,
    source="hand-made for the tests",
)


@pytest.fixture(scope="module")
def banded_model(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference model with a hand-made quality calibration in its metadata."""
    folder = tmp_path_factory.mktemp("banded")
    onnx = folder / "banded.onnx"
    shutil.copy(model_path, onnx)
    metadata = load_metadata(model_path).model_copy(update={"quality_calibration": CALIBRATION})
    write_metadata(onnx, metadata)
    return onnx


@pytest.fixture
def banded(make_client: Callable[..., object], banded_model: Path) -> Iterator[TestClient]:
    with make_client(model_path=banded_model) as started:  # type: ignore[attr-defined]
        yield started


def noise_png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return encode(Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)))


def verify(client: TestClient, first: bytes, second: bytes, **form: object) -> dict:
    response = client.post(
        "/v1/verify",
        files={"image1": ("a.png", first), "image2": ("b.png", second)},
        data={k: str(v) for k, v in form.items()},
        headers=CLIENT,
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_test_images_fall_in_the_intended_bands(banded: TestClient) -> None:
    for image, sharp in ((face_png(1), False), (noise_png(1), True)):
        response = banded.post("/v1/quality", files={"image": ("x.png", image)}, headers=CLIENT)
        assert (response.json()["quality"]["laplacian"] >= EDGE) is sharp


def test_both_blurred_faces_are_undecidable_with_a_reason(banded: TestClient) -> None:
    answer = verify(banded, face_png(1), face_png(2))
    assert answer["decision"] == "undecidable"
    assert answer["match"] is False
    assert answer["band"]["low"] == 0 and answer["band"]["high"] == 0
    assert answer["band"]["low_range"] == [None, EDGE]
    assert "floor" in answer["reason"]
    assert answer["far"] == "1e-3"
    assert answer["tar"] == pytest.approx(0.01)
    assert answer["threshold"] == pytest.approx(0.95)


def test_each_band_has_its_own_threshold(banded: TestClient) -> None:
    sharp = verify(banded, noise_png(1), noise_png(2))
    assert (sharp["decision"], sharp["match"]) == ("match", True)
    assert sharp["threshold"] == pytest.approx(-1.0)
    assert (sharp["band"]["low"], sharp["band"]["high"]) == (1, 1)
    assert sharp["reason"] is None
    mixed = verify(banded, face_png(1), noise_png(2))
    assert (mixed["decision"], mixed["threshold"]) == ("no_match", 1.0)
    assert (mixed["band"]["low"], mixed["band"]["high"]) == (0, 1)


def test_far_per_request_and_refused_when_not_calibrated(banded: TestClient) -> None:
    mixed = verify(banded, face_png(1), noise_png(2), far="0.01")
    assert (mixed["decision"], mixed["far"], mixed["threshold"]) == ("match", "1e-2", -1.0)
    response = banded.post(
        "/v1/verify",
        files={"image1": ("a.png", face_png(1)), "image2": ("b.png", noise_png(2))},
        data={"far": "1e-4"},
        headers=CLIENT,
    )
    assert response.status_code == 422
    assert "1e-2, 1e-3" in response.text


def test_callers_threshold_decides_without_bands(banded: TestClient) -> None:
    answer = verify(banded, face_png(1), face_png(2), threshold=-1)
    assert (answer["decision"], answer["far"], answer["threshold"]) == ("match", None, -1.0)


def test_target_far_setting(make_client: Callable[..., object], banded_model: Path) -> None:
    with make_client(model_path=banded_model, target_far="0.01") as client:  # type: ignore[attr-defined]
        answer = verify(client, face_png(1), noise_png(2))
    assert (answer["far"], answer["decision"]) == ("1e-2", "match")
    with pytest.raises(ValidationError, match="LRFR_TARGET_FAR"):
        make_client(model_path=banded_model, target_far="0.3").__enter__()  # type: ignore[attr-defined]


def test_identify_decides_with_the_probe_and_face_band(banded: TestClient) -> None:
    (face_id,) = populate(banded, {"sharp": [noise_png(5)]})["sharp"]
    stored = banded.get("/v1/galleries/g/subjects/sharp", headers=CLIENT).json()
    stored_q = stored["faces"][0]["quality"]["laplacian"]

    def ask(image: bytes) -> dict:
        response = banded.post(
            "/v1/identify", files={"image": ("p.png", image)}, data={"gallery": "g"},
            headers=CLIENT,
        )
        assert response.status_code == 200, response.text
        return response.json()

    sharp = ask(noise_png(6))
    assert sharp["decision"] == "match"
    (match,) = sharp["matches"]
    assert match["face"] == face_id
    assert match["face_quality"] == pytest.approx(stored_q)
    assert (match["decision"], match["threshold"]) == ("match", -1.0)
    blurred = ask(face_png(3))  # cell (0, 1) at 1e-3: threshold 1.0
    assert blurred["decision"] == "unknown"
    assert blurred["threshold"] == pytest.approx(1.0)
    assert (blurred["band"]["low"], blurred["band"]["high"]) == (0, 1)


def test_identify_probe_too_poor_against_a_poor_face_is_undecidable(banded: TestClient) -> None:
    populate(banded, {"blurred": [face_png(7)]})
    response = banded.post(
        "/v1/identify", files={"image": ("p.png", face_png(8))}, data={"gallery": "g"},
        headers=CLIENT,
    )
    answer = response.json()
    assert answer["decision"] == "undecidable"
    assert "floor" in answer["reason"]
    assert answer["matches"][0]["decision"] == "undecidable"


def test_identify_empty_gallery_is_unknown(banded: TestClient) -> None:
    create_gallery(banded, "empty")
    response = banded.post(
        "/v1/identify", files={"image": ("p.png", noise_png(1))}, data={"gallery": "empty"},
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text
    assert response.json()["decision"] == "unknown"
    assert response.json()["matches"] == []


def test_a_face_located_only_by_a_box_is_undecidable(banded: TestClient) -> None:
    answer = verify(banded, noise_png(1), noise_png(2), face="box")
    assert answer["decision"] == "undecidable" and "box" in answer["reason"]
    assert answer["faces"][0]["alignment"] == "box"
    own = verify(banded, noise_png(1), noise_png(2), face="box", threshold=-1)
    assert own["decision"] == "match"
