"""More than one worker process (``lrfr serve --workers N``): every worker keeps its own
gallery indexes, and they stay consistent through the shared database's revisions. Two
apps on one database and data folder stand in for two workers; the slow test runs the
real command."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.support.service import (
    ADMIN,
    CLIENT,
    create_subject,
    face_png,
    identify,
    populate,
    serve,
    serve_settings,
)


def _subjects(client: TestClient, image: bytes) -> list[str]:
    return [match["subject"] for match in identify(client, "g", image)["matches"]]


def test_what_one_worker_writes_the_others_search(make_client: Callable[..., object]) -> None:
    with make_client() as first, make_client() as second:  # type: ignore[attr-defined]
        populate(first, {"a": [face_png(1)]})
        assert _subjects(second, face_png(1))[0] == "a"
        # the second worker writes; the first, whose index is now behind, follows
        create_subject(second, "g", "b", face_png(2))
        assert _subjects(first, face_png(2))[0] == "b"
        response = second.delete("/v1/galleries/g/subjects/a", headers=ADMIN)
        assert response.status_code == 204, response.text
        assert "a" not in _subjects(first, face_png(1))
        assert "a" not in _subjects(second, face_png(1))


@pytest.mark.slow
def test_lrfr_serve_with_two_workers(model_path: Path, tmp_path: Path) -> None:
    settings = serve_settings(
        tmp_path / "data",
        LRFR_MODEL_PATH=str(model_path),
        LRFR_DEFAULT_FACE="aligned",
        LRFR_WORKERS="2",
    )
    log = tmp_path / "serve.log"
    with serve(settings, log, timeout=90, stop_timeout=30) as base:

        def call(method: str, path: str, **kwargs: object) -> httpx.Response:
            # a fresh connection per request, so requests reach either worker
            with httpx.Client(base_url=base, timeout=20) as http:
                return http.request(method, path, **kwargs)  # type: ignore[arg-type]

        assert call("POST", "/v1/galleries", json={"name": "g"}, headers=ADMIN).status_code == 201
        for round_, subject in enumerate("abcd"):
            assert call("POST", "/v1/galleries/g/subjects", json={"id": subject},
                        headers=ADMIN).status_code == 201
            enrolled = call("POST", f"/v1/galleries/g/subjects/{subject}/faces",
                            files=[("images", ("f.png", face_png(round_)))], headers=ADMIN)
            assert enrolled.status_code == 201, enrolled.text
            for _ in range(6):  # whichever worker answers has the new face
                found = call("POST", "/v1/identify", files={"image": ("p.png", face_png(round_))},
                             data={"gallery": "g"}, headers=CLIENT)
                assert found.status_code == 200, found.text
                assert found.json()["matches"][0]["subject"] == subject
        assert call("DELETE", "/v1/galleries/g/subjects/a", headers=ADMIN).status_code == 204
        for _ in range(6):
            found = call("POST", "/v1/identify", files={"image": ("p.png", face_png(0))},
                         data={"gallery": "g"}, headers=CLIENT)
            assert "a" not in [m["subject"] for m in found.json()["matches"]]
    assert "starting 2 workers" in log.read_text()
