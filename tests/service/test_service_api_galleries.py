"""Galleries, subjects and faces over HTTP, on SQLite and PostgreSQL: CRUD, conflicts,
real deletion, concurrent enrollments."""

from __future__ import annotations

import hashlib
import io
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.support.service import (
    ADMIN,
    CLIENT,
    create_gallery,
    create_subject,
    encode,
    enroll,
    face_png,
    identify,
    populate,
)


def test_gallery_lifecycle(db_client: TestClient) -> None:
    client = db_client
    response = client.post("/v1/galleries", json={"name": "staff"}, headers=ADMIN)
    assert response.status_code == 201
    assert response.json()["model"]["version"] == "reference-1"
    assert client.post("/v1/galleries", json={"name": "staff"}, headers=ADMIN).status_code == 409
    listed = client.get("/v1/galleries", headers=CLIENT).json()
    assert [g["name"] for g in listed["items"]] == ["staff"]
    assert (listed["total"], listed["offset"], listed["limit"]) == (1, 0, 100)
    assert listed["items"][0]["compatible"] is True
    assert client.get("/v1/galleries/staff", headers=CLIENT).json()["faces"] == 0
    assert client.delete("/v1/galleries/staff", headers=ADMIN).status_code == 204
    assert client.get("/v1/galleries/staff", headers=CLIENT).status_code == 404
    assert client.delete("/v1/galleries/staff", headers=ADMIN).status_code == 404


def test_subject_lifecycle(db_client: TestClient) -> None:
    client = db_client
    create_gallery(client, "g")
    body = {"id": "alice", "name": "Alice A.", "metadata": {"team": "blue", "level": 3}}
    response = client.post("/v1/galleries/g/subjects", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    assert response.json()["metadata"] == {"team": "blue", "level": 3}
    duplicate = client.post("/v1/galleries/g/subjects", json={"id": "alice"}, headers=ADMIN)
    assert duplicate.status_code == 409
    create_subject(client, "g", "bob")
    listed = client.get("/v1/galleries/g/subjects", headers=CLIENT).json()
    assert [s["id"] for s in listed["items"]] == ["alice", "bob"]
    page = client.get("/v1/galleries/g/subjects?offset=1&limit=1", headers=CLIENT).json()
    assert page == {**page, "total": 2, "offset": 1, "limit": 1}
    assert [s["id"] for s in page["items"]] == ["bob"]
    face_ids = enroll(client, "g", "alice", face_png(1), face_png(2))
    detail = client.get("/v1/galleries/g/subjects/alice", headers=CLIENT).json()
    assert detail["name"] == "Alice A."
    assert detail["face_count"] == 2
    assert [f["id"] for f in detail["faces"]] == face_ids
    assert client.get("/v1/galleries/g/subjects/zed", headers=CLIENT).status_code == 404
    assert client.get("/v1/galleries/x/subjects", headers=CLIENT).status_code == 404
    assert client.delete("/v1/galleries/g/subjects/alice", headers=ADMIN).status_code == 204
    assert client.get("/v1/galleries/g/subjects/alice", headers=CLIENT).status_code == 404


@pytest.mark.parametrize(
    "body",
    [{}, {"id": ""}, {"id": "has space"}, {"id": "a/b"}, {"id": "x", "unknown": 1}],
)
def test_invalid_subject_bodies_are_422(client: TestClient, body: dict) -> None:
    create_gallery(client, "g")
    assert client.post("/v1/galleries/g/subjects", json=body, headers=ADMIN).status_code == 422


@pytest.mark.parametrize("body", [{}, {"name": ""}, {"name": "a b"}, {"name": "-x"}])
def test_invalid_gallery_bodies_are_422(client: TestClient, body: dict) -> None:
    assert client.post("/v1/galleries", json=body, headers=ADMIN).status_code == 422


def test_subject_in_unknown_gallery_is_404(client: TestClient) -> None:
    response = client.post("/v1/galleries/none/subjects", json={"id": "a"}, headers=ADMIN)
    assert response.status_code == 404


def test_enrollment_answers_face_ids_with_quality(db_client: TestClient) -> None:
    create_gallery(db_client, "g")
    create_subject(db_client, "g", "a")
    files = [("images", (f"{i}.png", face_png(i), "image/png")) for i in range(3)]
    response = db_client.post("/v1/galleries/g/subjects/a/faces", files=files, headers=ADMIN)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["subject"] == "a" and body["refused"] == []
    assert len({face["id"] for face in body["faces"]}) == 3
    assert all(face["quality"]["laplacian"] > 0 for face in body["faces"])
    assert body["faces"][0]["quality"]["width"] == 48


def test_enrollment_errors(client: TestClient) -> None:
    create_gallery(client, "g")
    create_subject(client, "g", "a")
    url = "/v1/galleries/g/subjects/a/faces"
    assert client.post(url, headers=ADMIN).status_code == 422  # no images field
    missing = client.post(
        "/v1/galleries/g/subjects/zz/faces",
        files=[("images", ("a.png", face_png(0)))],
        headers=ADMIN,
    )
    assert missing.status_code == 404
    # one bad file fails the whole request and names the file; nothing is stored
    files = [("images", ("ok.png", face_png(0))), ("images", ("bad.png", b"junk"))]
    response = client.post(url, files=files, headers=ADMIN)
    assert response.status_code == 415
    assert "images[1]" in response.json()["detail"]
    assert client.get("/v1/galleries/g/subjects/a", headers=CLIENT).json()["face_count"] == 0


def test_quality_floor_refuses_blurry_faces_with_a_reason(make_client) -> None:
    sharp = face_png(0, size=(112, 112))
    with make_client(min_enroll_quality=1.0) as client:
        create_gallery(client, "g")
        create_subject(client, "g", "a")
        flat = encode(Image.new("RGB", (3, 3), (90, 90, 90)))  # q = 0
        quality = client.post(
            "/v1/quality", files={"image": ("f.png", flat)}, headers=CLIENT
        ).json()["quality"]["laplacian"]
        assert quality < 1.0
        files = [("images", ("sharp.png", sharp)), ("images", ("flat.png", flat))]
        response = client.post("/v1/galleries/g/subjects/a/faces", files=files, headers=ADMIN)
        assert response.status_code == 201, response.text
        body = response.json()
        assert len(body["faces"]) == 1
        (refused,) = body["refused"]
        assert refused["index"] == 1 and refused["filename"] == "flat.png"
        assert "LRFR_MIN_ENROLL_QUALITY" in refused["reason"]
        only_flat = client.post(
            "/v1/galleries/g/subjects/a/faces", files=[("images", ("f.png", flat))], headers=ADMIN
        )
        assert only_flat.status_code == 422
        assert only_flat.json()["detail"]["refused"][0]["filename"] == "f.png"


def test_deleting_faces_subjects_and_galleries_removes_their_vectors(db_client: TestClient) -> None:
    client = db_client
    seeds = {"a": 10, "b": 20, "c": 30}
    populate(client, {subject: [face_png(s), face_png(s + 1)] for subject, s in seeds.items()})
    probe = face_png(10)
    first = identify(client, "g", probe, top_k=10)
    assert first["matches"][0]["subject"] == "a"
    assert first["matches"][0]["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert {m["subject"] for m in first["matches"]} == {"a", "b", "c"}

    face = first["matches"][0]["face"]
    assert (
        client.delete(f"/v1/galleries/g/subjects/a/faces/{face}", headers=ADMIN).status_code == 204
    )
    assert (
        client.delete(f"/v1/galleries/g/subjects/a/faces/{face}", headers=ADMIN).status_code == 404
    )
    after_face = identify(client, "g", probe, top_k=10)
    assert face not in [m["face"] for m in after_face["matches"]]
    assert after_face["matches"][0]["similarity"] < 1.0 - 1e-4

    assert client.delete("/v1/galleries/g/subjects/a", headers=ADMIN).status_code == 204
    after_subject = identify(client, "g", probe, top_k=10)
    assert {m["subject"] for m in after_subject["matches"]} == {"b", "c"}
    assert client.get("/v1/galleries/g", headers=CLIENT).json()["faces"] == 4

    assert client.delete("/v1/galleries/g", headers=ADMIN).status_code == 204
    gone = client.post(
        "/v1/identify", files={"image": ("p.png", probe)}, data={"gallery": "g"}, headers=CLIENT
    )
    assert gone.status_code == 404
    # a new gallery of the same name starts empty
    create_gallery(client, "g")
    assert identify(client, "g", probe)["matches"] == []
    assert identify(client, "g", probe)["decision"] == "unknown"


def test_face_of_another_subject_cannot_be_deleted_through_this_one(client: TestClient) -> None:
    (face,) = populate(client, {"a": [face_png(1)], "b": []})["a"]
    assert (
        client.delete(f"/v1/galleries/g/subjects/b/faces/{face}", headers=ADMIN).status_code == 404
    )
    assert client.get("/v1/galleries/g", headers=CLIENT).json()["faces"] == 1


def test_identify_returns_each_subject_once_best_first(client: TestClient) -> None:
    populate(client, {f"s{s}": [face_png(100 * s + k) for k in range(4)] for s in range(6)})
    result = identify(client, "g", face_png(203), top_k=4)
    subjects = [m["subject"] for m in result["matches"]]
    assert subjects[0] == "s2"
    assert len(subjects) == len(set(subjects)) == 4
    sims = [m["similarity"] for m in result["matches"]]
    assert sims == sorted(sims, reverse=True)
    assert result["decision"] == "match"
    unknown = identify(client, "g", face_png(999), threshold=0.999)
    assert unknown["decision"] == "unknown" and unknown["threshold"] == 0.999


def test_concurrent_enrollments_lose_nothing(db_client: TestClient) -> None:
    client = db_client
    create_gallery(client, "g")
    subjects = [f"s{i}" for i in range(8)]
    for subject in subjects:
        create_subject(client, "g", subject)

    def work(position: int) -> list[int]:
        subject = subjects[position % len(subjects)]
        return enroll(client, "g", subject, face_png(1000 + position), face_png(2000 + position))

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = [face for result in pool.map(work, range(24)) for face in result]
    assert len(ids) == len(set(ids)) == 48
    assert client.get("/v1/galleries/g", headers=CLIENT).json()["faces"] == 48
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    # every enrolled face is findable as its own best match
    for position in (0, 7, 23):
        best = identify(client, "g", face_png(1000 + position))["matches"][0]
        assert best["subject"] == subjects[position % len(subjects)]
        assert best["similarity"] == pytest.approx(1.0, abs=1e-5)


def test_subject_metadata_too_deep_or_large_or_nan_is_refused(client: TestClient) -> None:
    # A deeply nested metadata used to be stored and then fail to serialise (500) on every
    # read of the subject and of the gallery's subject list.
    create_gallery(client, "g")
    deep: dict = {"a": 1}
    for _ in range(900):
        deep = {"a": deep}
    for metadata in (deep, {"k": "x" * 70_000}):
        body = {"id": "s", "metadata": metadata}
        response = client.post("/v1/galleries/g/subjects", json=body, headers=ADMIN)
        assert response.status_code == 422, response.text[:200]
    nan = '{"id": "s", "metadata": {"a": NaN}}'
    response = client.post(
        "/v1/galleries/g/subjects",
        content=nan,
        headers={**ADMIN, "content-type": "application/json"},
    )
    assert response.status_code == 422
    assert client.get("/v1/galleries/g/subjects", headers=CLIENT).json()["items"] == []
    nested = {"a": [1, {"b": None}], "c": {"d": {"e": "ü"}}}
    create = client.post(
        "/v1/galleries/g/subjects", json={"id": "ok", "metadata": nested}, headers=ADMIN
    )
    assert create.status_code == 201
    assert client.get("/v1/galleries/g/subjects/ok", headers=CLIENT).json()["metadata"] == nested


@pytest.mark.parametrize(
    "body",
    [
        {"id": "s", "name": "a\x00b"},
        {"id": "s", "metadata": {"note": "a\x00b"}},
        {"id": "s", "metadata": {"k\x00": 1}},
        {"id": "s", "metadata": {"list": [{"deep": "\x00"}]}},
    ],
)
def test_nul_characters_are_refused(client: TestClient, body: dict) -> None:
    # PostgreSQL cannot store U+0000 in text or JSONB: refuse it on every database.
    create_gallery(client, "g")
    response = client.post("/v1/galleries/g/subjects", json=body, headers=ADMIN)
    assert response.status_code == 422, response.text[:200]
    assert "NUL" in response.text
    assert client.get("/v1/galleries/g/subjects", headers=CLIENT).json()["items"] == []


def test_oversized_json_body_is_413(client: TestClient) -> None:
    body = '{"id": "s", "metadata": {"k": "' + "x" * (2 * 1024 * 1024) + '"}}'
    create_gallery(client, "g")
    response = client.post(
        "/v1/galleries/g/subjects",
        content=body,
        headers={**ADMIN, "content-type": "application/json"},
    )
    assert response.status_code == 413
    assert "over the limit" in response.json()["detail"]


def test_out_of_range_integers_are_422_not_500(client: TestClient) -> None:
    create_gallery(client, "g")
    create_subject(client, "g", "s")
    big = 10**22
    listed = client.get(f"/v1/galleries/g/subjects?offset={big}", headers=CLIENT)
    assert listed.status_code == 422
    deleted = client.delete(f"/v1/galleries/g/subjects/s/faces/{big}", headers=ADMIN)
    assert deleted.status_code == 422
    largest = 2**63 - 1
    far_page = client.get(f"/v1/galleries/g/subjects?offset={largest}", headers=CLIENT).json()
    assert far_page == {"items": [], "total": 1, "offset": largest, "limit": 100}
    missing = client.delete(f"/v1/galleries/g/subjects/s/faces/{largest}", headers=ADMIN)
    assert missing.status_code == 404


def test_created_at_always_carries_its_zone(client: TestClient) -> None:
    # SQLite returns naive datetimes: reads said "...T02:23:41" where the create said "...Z".
    created = client.post("/v1/galleries", json={"name": "g"}, headers=ADMIN).json()
    subject = client.post("/v1/galleries/g/subjects", json={"id": "s"}, headers=ADMIN).json()
    enroll(client, "g", "s", face_png(1))
    stamps = [
        client.get("/v1/galleries/g", headers=CLIENT).json()["created_at"],
        client.get("/v1/galleries", headers=CLIENT).json()["items"][0]["created_at"],
        client.get("/v1/galleries/g/subjects", headers=CLIENT).json()["items"][0]["created_at"],
        client.get("/v1/galleries/g/subjects/s", headers=CLIENT).json()["created_at"],
        client.get("/v1/galleries/g/subjects/s", headers=CLIENT).json()["faces"][0]["created_at"],
    ]
    for stamp in stamps:
        assert stamp.endswith("Z") or stamp.endswith("+00:00"), stamp
    assert stamps[0] == created["created_at"]
    assert stamps[3] == subject["created_at"]


def test_nan_or_infinity_in_an_invalid_body_is_422_not_500(client: TestClient) -> None:
    # The 422 echoes the input; JSON cannot carry NaN/Infinity, so this used to be a 500.
    json_headers = {**ADMIN, "content-type": "application/json"}
    for body in ('{"name": NaN}', '{"name": "g", "extra": Infinity}'):
        response = client.post("/v1/galleries", content=body, headers=json_headers)
        assert response.status_code == 422, body
        assert response.json()["detail"][0]["loc"][0] == "body"
    assert client.get("/v1/galleries", headers=CLIENT).json()["items"] == []


def test_faces_carry_the_upload_hash_and_their_stored_image(client: TestClient) -> None:
    image = face_png(5)
    (face_id,) = populate(client, {"s": [image]})["s"]
    face = client.get("/v1/galleries/g/subjects/s", headers=CLIENT).json()["faces"][0]
    assert face["sha256"] == hashlib.sha256(image).hexdigest()
    stored = client.get(f"/v1/galleries/g/subjects/s/faces/{face_id}/image", headers=CLIENT)
    assert stored.status_code == 200
    assert stored.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(stored.content)).size == (112, 112)
    missing = client.get(f"/v1/galleries/g/subjects/s/faces/{face_id + 1}/image", headers=CLIENT)
    assert missing.status_code == 404


def test_face_images_not_stored_are_404(make_client) -> None:
    with make_client(store_face_images=False) as client:
        (face_id,) = populate(client, {"s": [face_png(5)]})["s"]
        response = client.get(f"/v1/galleries/g/subjects/s/faces/{face_id}/image", headers=CLIENT)
        assert response.status_code == 404
        assert "LRFR_STORE_FACE_IMAGES" in response.json()["detail"]


def test_lists_are_pages_with_totals(client: TestClient) -> None:
    for name in ("c", "a", "b"):
        create_gallery(client, name)
    page = client.get("/v1/galleries?offset=1&limit=1", headers=CLIENT).json()
    assert page == {**page, "total": 3, "offset": 1, "limit": 1}
    assert [g["name"] for g in page["items"]] == ["b"]
    assert client.get("/v1/galleries?limit=0", headers=CLIENT).status_code == 422
    assert client.get("/v1/galleries?limit=1001", headers=CLIENT).status_code == 422
