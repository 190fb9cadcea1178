"""The app as a whole: startup checks, auth matrix, restart and index recovery,
model versions, readiness, metrics and request batching."""

from __future__ import annotations

import inspect
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from models.artifact import (
    ArtifactError,
    GateBranch,
    GateInfo,
    load_metadata,
    metadata_path,
    write_metadata,
)
from service.app import create_app
from service.reference_model import build_reference_model
from tests.support.service import (
    ADMIN,
    CLIENT,
    enroll,
    face_png,
    identify,
    populate,
    post_identify,
)

# -- startup ------------------------------------------------------------------------------


def test_missing_model_fails_startup_clearly(make_settings, tmp_path: Path) -> None:
    app = create_app(make_settings(model_path=tmp_path / "nope.onnx"))
    with pytest.raises(ArtifactError, match="model file not found"), TestClient(app):
        pass


def test_model_without_metadata_fails_startup(
    make_settings, model_path: Path, tmp_path: Path
) -> None:
    lonely = tmp_path / "lonely.onnx"
    lonely.write_bytes(model_path.read_bytes())
    with (
        pytest.raises(ArtifactError, match="has no metadata"),
        TestClient(create_app(make_settings(model_path=lonely))),
    ):
        pass


def test_corrupt_model_fails_startup(make_settings, tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    build_reference_model(path)
    path.write_bytes(b"garbage")  # the recorded sha256 no longer matches
    with (
        pytest.raises(ArtifactError, match="does not match its metadata"),
        TestClient(create_app(make_settings(model_path=path))),
    ):
        pass
    meta = json.loads(metadata_path(path).read_text())
    meta["onnx_sha256"] = None
    metadata_path(path).write_text(json.dumps(meta))
    with (
        pytest.raises(ArtifactError, match="ONNX Runtime cannot load"),
        TestClient(create_app(make_settings(model_path=path))),
    ):
        pass


# -- auth -------------------------------------------------------------------------------

_ROUTES = [
    # (method, path, needs admin)
    ("POST", "/v1/quality", False),
    ("POST", "/v1/verify", False),
    ("POST", "/v1/identify", False),
    ("GET", "/v1/galleries", False),
    ("GET", "/v1/galleries/g", False),
    ("GET", "/v1/galleries/g/subjects", False),
    ("GET", "/v1/galleries/g/subjects/a", False),
    ("GET", "/v1/galleries/g/subjects/a/faces/1/image", False),
    ("POST", "/v1/galleries", True),
    ("DELETE", "/v1/galleries/g", True),
    ("POST", "/v1/galleries/g/reembed", True),
    ("POST", "/v1/galleries/g/subjects", True),
    ("DELETE", "/v1/galleries/g/subjects/a", True),
    ("POST", "/v1/galleries/g/subjects/a/faces", True),
    ("DELETE", "/v1/galleries/g/subjects/a/faces/1", True),
]


@pytest.mark.parametrize(("method", "path", "admin_only"), _ROUTES)
@pytest.mark.parametrize("who", ["nobody", "wrong", "client", "admin"])
def test_auth_matrix(
    client: TestClient, method: str, path: str, admin_only: bool, who: str
) -> None:
    headers = {
        "nobody": {},
        "wrong": {"X-API-Key": "not-a-valid-key-at-all"},
        "client": CLIENT,
        "admin": ADMIN,
    }[who]
    response = client.request(method, path, headers=headers)
    if who in ("nobody", "wrong"):
        assert response.status_code == 401
    elif who == "client" and admin_only:
        assert response.status_code == 403
    else:
        # authorised: the request itself is judged (422 no body, 404 no gallery, ...)
        assert response.status_code not in (401, 403), response.text


def test_open_endpoints_need_no_key(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    assert client.get("/openapi.json").json()["info"]["title"] == "lrfr"
    assert client.get("/docs").status_code == 200


def test_dev_mode_without_keys_lets_everyone_in(make_client, caplog) -> None:
    with caplog.at_level("WARNING"), make_client(dev_mode=True, admin_keys=[], client_keys=[]) as c:
        assert c.post("/v1/galleries", json={"name": "g"}).status_code == 201
    assert "EVERY CALLER IS AN ADMIN" in caplog.text


# -- restart and index recovery ------------------------------------------------------------


def _populate(client: TestClient) -> None:
    populate(client, {"a": [face_png(1), face_png(2)], "b": [face_png(3)]})


def _top(client: TestClient, seed: int) -> tuple[str, float]:
    best = identify(client, "g", face_png(seed))["matches"][0]
    return best["subject"], best["similarity"]


def test_restart_loads_the_persisted_index(make_client, database_url: str) -> None:
    with make_client(database_url=database_url) as client:
        _populate(client)
    with make_client(database_url=database_url) as client:
        report = client.app.state.startup_report
        assert report.loaded == ["g"] and report.rebuilt == {}
        assert _top(client, 3) == ("b", pytest.approx(1.0, abs=1e-5))
        assert client.get("/readyz").status_code == 200


def test_restart_without_index_files_rebuilds_from_the_database(
    make_client, make_settings, database_url: str
) -> None:
    with make_client(database_url=database_url) as client:
        _populate(client)
    for path in make_settings().index_dir.glob("*.faiss"):
        path.unlink()
    with make_client(database_url=database_url) as client:
        assert client.app.state.startup_report.rebuilt == {"g": "is missing"}
        assert _top(client, 1) == ("a", pytest.approx(1.0, abs=1e-5))
        assert client.get("/v1/galleries/g", headers=CLIENT).json()["faces"] == 3


def test_corrupted_index_file_is_detected_and_rebuilt(make_client, make_settings) -> None:
    with make_client() as client:
        _populate(client)
    (path,) = make_settings().index_dir.glob("*.faiss")
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))
    with make_client() as client:
        reason = client.app.state.startup_report.rebuilt["g"]
        assert "corrupted" in reason and "checksum" in reason
        assert _top(client, 2) == ("a", pytest.approx(1.0, abs=1e-5))
        metrics = client.get("/metrics", headers=ADMIN).text
        assert "lrfr_index_rebuilds_total 1.0" in metrics
    # the rebuilt index was persisted: the next start loads it as is
    with make_client() as client:
        assert client.app.state.startup_report.loaded == ["g"]


def test_stale_index_file_is_rebuilt(make_client, make_settings) -> None:
    with make_client() as client:
        _populate(client)
    (path,) = make_settings().index_dir.glob("*.faiss")
    stale = path.read_bytes()
    with make_client() as client:
        enroll(client, "g", "b", face_png(4))
    path.write_bytes(stale)  # as if the process died before flushing the last change
    with make_client() as client:
        assert "stale" in client.app.state.startup_report.rebuilt["g"]
        assert _top(client, 4) == ("b", pytest.approx(1.0, abs=1e-5))


def test_index_behind_the_database_catches_up(make_client, database_url: str) -> None:
    """Two app instances on one database (two replicas): each sees the other's writes."""
    with (
        make_client(database_url=database_url) as first,
        make_client(
            database_url=database_url, data_dir=Path(first.app.state.settings.data_dir) / "other"
        ) as second,
    ):
        _populate(first)
        assert _top(second, 3)[0] == "b"
        enroll(second, "g", "a", face_png(9))
        assert _top(first, 9) == ("a", pytest.approx(1.0, abs=1e-5))
        face = _top_face(first, 9)
        assert (
            second.delete(f"/v1/galleries/g/subjects/a/faces/{face}", headers=ADMIN).status_code
            == 204
        )
        assert _top_face(first, 9) != face
        assert first.get("/readyz").status_code == 200


def _top_face(client: TestClient, seed: int) -> int:
    return identify(client, "g", face_png(seed))["matches"][0]["face"]


# -- model versions ---------------------------------------------------------------------


def test_gallery_of_another_model_is_refused_then_reembedded(make_client, tmp_path: Path) -> None:
    with make_client() as client:
        _populate(client)
    newer = tmp_path / "newer.onnx"
    build_reference_model(newer, version="reference-2", cell=16)
    with make_client(model_path=newer) as client:
        assert client.app.state.startup_report.skipped["g"].startswith("embedded with")
        listed = client.get("/v1/galleries", headers=CLIENT).json()["items"]
        assert listed[0]["compatible"] is False
        assert listed[0]["model"]["version"] == "reference-1"
        refused = post_identify(client, "g", face_png(1))
        assert refused.status_code == 409
        assert "reembed" in refused.json()["detail"]
        enroll_refused = client.post(
            "/v1/galleries/g/subjects/a/faces",
            files=[("images", ("x.png", face_png(5)))],
            headers=ADMIN,
        )
        assert enroll_refused.status_code == 409
        assert client.get("/readyz").status_code == 200  # other models' galleries don't count
        response = client.post("/v1/galleries/g/reembed", headers=ADMIN)
        assert response.status_code == 200, response.text
        assert response.json() == {
            "gallery": "g",
            "faces": 3,
            "model": {"name": "lrfr-reference-pixels", "version": "reference-2"},
        }
        assert _top(client, 1) == ("a", pytest.approx(1.0, abs=1e-5))
        assert client.get("/v1/galleries/g", headers=CLIENT).json()["embedding_size"] == 49


def test_reembed_needs_stored_images(make_client, tmp_path: Path) -> None:
    with make_client(store_face_images=False) as client:
        _populate(client)
    newer = tmp_path / "newer.onnx"
    build_reference_model(newer, version="reference-2")
    with make_client(model_path=newer) as client:
        response = client.post("/v1/galleries/g/reembed", headers=ADMIN)
        assert response.status_code == 409
        assert "without a stored image" in response.json()["detail"]


# -- readiness, metrics, batching ------------------------------------------------------


def test_readyz_describes_the_served_model_and_its_gate(make_client, tmp_path: Path) -> None:
    with make_client() as client:
        served = client.get("/readyz").json()["model"]
    assert served["name"] == "lrfr-reference-pixels" and served["gate"] is None
    assert served["comparison"] == "cosine"
    assert served["embedding_size"] > 0 and served["backbone"]
    gated = tmp_path / "gated.onnx"
    build_reference_model(gated)
    gate = GateInfo(
        threshold=4.25,
        sharp=GateBranch(name="released-net", source="released weights (public domain)"),
        blurred=GateBranch(name="student", source="configs/s.yaml, step 9", head="approach2"),
        chosen_on="600 toy pairs",
    )
    # the service reads the gate from the metadata; the graph itself is not gated here
    write_metadata(gated, load_metadata(gated).model_copy(
        update={"gate": gate, "head": gate.head_label()}))
    with make_client(model_path=gated) as gated_client:
        ready = gated_client.get("/readyz")
    assert ready.status_code == 200, ready.text
    model = ready.json()["model"]
    assert model["head"] == "gated(sharp: released weights | blurred: approach2)"
    assert model["gate"] == {
        "quality": "laplacian",
        "threshold": 4.25,
        "sharp": {"name": "released-net", "source": "released weights (public domain)",
                  "head": None},
        "blurred": {"name": "student", "source": "configs/s.yaml, step 9", "head": "approach2"},
        "chosen_on": "600 toy pairs",
    }


def test_readyz_reports_an_unreachable_database(client: TestClient) -> None:
    client.app.state.engine.dispose()
    client.app.state.engine = _BrokenEngine()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["database"] is False
    assert "database unreachable" in response.json()["problems"][0]
    assert client.get("/healthz").status_code == 200


class _BrokenEngine:
    def connect(self) -> None:
        raise ConnectionError("no route to database")

    def dispose(self) -> None:
        pass


def test_metrics_count_requests_batches_and_gallery_sizes(make_client) -> None:
    with make_client(metrics_gallery_labels=True) as client:
        _populate(client)
        client.post(
            "/v1/verify",
            files={"image1": ("a.png", face_png(1)), "image2": ("b.png", face_png(2))},
            headers=CLIENT,
        )
        text = client.get("/metrics", headers=ADMIN).text
    assert 'lrfr_requests_total{endpoint="/v1/verify",method="POST",status="200"} 1.0' in text
    assert 'endpoint="/v1/galleries/{gallery}/subjects/{subject}/faces"' in text
    assert 'lrfr_request_duration_seconds_count{endpoint="/v1/verify",method="POST"} 1.0' in text
    assert 'lrfr_gallery_faces{gallery="g"} 3.0' in text
    assert "lrfr_embedding_batch_size_count" in text


def _dependencies(dependant: Dependant) -> list[Dependant]:
    return [
        found for sub in dependant.dependencies for found in [sub, *_dependencies(sub)]
    ]


def _api_routes(routes: list) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)  # app.include_router(...)
        if included is not None:
            yield from _api_routes(included.routes)


def test_routes_resolve_their_dependencies_on_the_event_loop(make_settings) -> None:
    # FastAPI runs a plain ``def`` dependency in the thread pool: a thread hop per request
    # for each, on every route.
    app = create_app(make_settings())
    routes = list(_api_routes(app.routes))
    assert any(route.path.endswith("/identify") for route in routes)
    for route in routes:
        for dependency in _dependencies(route.dependant):
            call = dependency.call
            method = getattr(call, "__call__", None)  # noqa: B004 - security scheme objects
            assert inspect.iscoroutinefunction(call) or (
                not inspect.isfunction(call) and inspect.iscoroutinefunction(method)
            ), f"{route.path}: dependency {call} is not async"


def test_concurrent_requests_are_embedded_in_one_batch(make_client) -> None:
    with make_client(batch_window_ms=1000.0, max_batch_size=64) as client:
        barrier = threading.Barrier(6)
        statuses: list[int] = []

        def call() -> None:
            barrier.wait()
            response = client.post(
                "/v1/verify",
                files={"image1": ("a.png", face_png(1)), "image2": ("b.png", face_png(2))},
                headers=CLIENT,
            )
            statuses.append(response.status_code)

        threads = [threading.Thread(target=call) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert statuses == [200] * 6
        histogram = client.app.state.metrics.batch_size
        samples = {s.name: s.value for s in histogram.collect()[0].samples if not s.labels}
        # 12 images arrived within one window: far fewer model calls than images
        assert samples["lrfr_embedding_batch_size_sum"] == 12
        assert samples["lrfr_embedding_batch_size_count"] <= 3
