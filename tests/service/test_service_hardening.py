"""Hardening: keys checked before any body is read, body limits enforced on the stream
(over real HTTP, chunked), ids validated alike on every database, /metrics behind a key,
and an OpenAPI schema that lists what the service answers."""

from __future__ import annotations

import re
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.settings import Settings
from tests.support.service import (
    ADMIN,
    ADMIN_KEY,
    CLIENT,
    CLIENT_KEY,
    METRICS_KEY,
    create_gallery,
    create_subject,
    enroll,
    face_png,
    serve,
    serve_settings,
)

MB = 1024 * 1024

# -- over real HTTP: a server process, a raw socket ------------------------------------------


@pytest.fixture(scope="module")
def server(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``lrfr serve`` on SQLite with the default limits (10 MB per file)."""
    folder = tmp_path_factory.mktemp("served")
    settings = serve_settings(
        folder / "data", LRFR_MODEL_PATH=str(model_path), LRFR_METRICS_KEYS=METRICS_KEY
    )
    with serve(settings, folder / "serve.log") as base:
        yield base


def _body_bytes_read(base: str, endpoint: str) -> float:
    """Body bytes the service has read for ``endpoint`` so far (its own counter)."""
    text = httpx.get(f"{base}/metrics", headers={"X-API-Key": METRICS_KEY}).text
    match = re.search(
        rf'^lrfr_request_body_bytes_sum{{endpoint="{re.escape(endpoint)}"}} (\S+)$', text, re.M
    )
    return float(match.group(1)) if match else 0.0


@dataclass(frozen=True)
class Answer:
    status: int
    sent: int  # body bytes the client got out before the answer (or a reset) stopped it
    seconds: float  # from the first body byte to the status line


def _send_chunked(
    base: str,
    path: str,
    headers: dict[str, str],
    *,
    total: int,
    content_type: str = "multipart/form-data; boundary=hardening",
    preamble: bytes = (
        b'--hardening\r\nContent-Disposition: form-data; name="image"; filename="z.png"'
        b"\r\nContent-Type: image/png\r\n\r\n"
    ),
    chunk: int = 256 * 1024,
) -> Answer:
    """POSTs ``total`` zero bytes (after ``preamble``) with chunked transfer encoding,
    as fast as the server takes them, until it answers."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    head = [f"POST {path} HTTP/1.1", f"Host: {host}", "Transfer-Encoding: chunked"]
    head += [f"Content-Type: {content_type}", *(f"{k}: {v}" for k, v in headers.items())]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    frame = f"{chunk:x}\r\n".encode() + b"\0" * chunk + b"\r\n"
    pending = f"{len(preamble):x}\r\n".encode() + preamble + b"\r\n"
    sent = 0
    started = time.perf_counter()
    sock.setblocking(False)
    try:
        while True:
            readable, writable, _ = select.select([sock], [sock], [], 10)
            if readable or not writable:
                break
            if not pending:
                if sent >= total:  # all sent and no answer yet: end the body properly
                    tail = b"\r\n--hardening--\r\n"
                    sock.setblocking(True)
                    sock.sendall(f"{len(tail):x}\r\n".encode() + tail + b"\r\n0\r\n\r\n")
                    break
                pending = frame
            count = sock.send(pending)
            pending = pending[count:]
            sent += count
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed; its answer is still to be read
    sock.setblocking(True)
    sock.settimeout(10)
    reply = b""
    try:
        while b"\r\n" not in reply:
            data = sock.recv(4096)
            if not data:
                break
            reply += data
    finally:
        seconds = time.perf_counter() - started
        sock.close()
    assert reply.startswith(b"HTTP/1.1 "), reply[:200]
    return Answer(status=int(reply.split()[1]), sent=sent, seconds=seconds)


@pytest.mark.slow
def test_300_mb_chunked_upload_without_a_key_is_refused_unread(server: str) -> None:
    before = _body_bytes_read(server, "/v1/quality")
    answer = _send_chunked(server, "/v1/quality", {}, total=300 * MB)
    read = _body_bytes_read(server, "/v1/quality") - before
    assert answer.status == 401
    assert answer.seconds < 2.0
    assert read == 0
    # what the client got out at all (socket buffers included) bounds what the server read
    assert answer.sent < 10 * MB


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "key", "content_type", "status"),
    [
        ("/v1/galleries", None, "application/json", 401),
        ("/v1/galleries", CLIENT_KEY, "application/json", 403),
        ("/v1/galleries/g/subjects/s/faces", CLIENT_KEY, "multipart/form-data; boundary=x", 403),
        ("/v1/identify", "not-a-key-of-this-service", "multipart/form-data; boundary=x", 401),
    ],
)
def test_refusals_by_key_come_before_the_body(
    server: str, path: str, key: str | None, content_type: str, status: int
) -> None:
    endpoint = path.replace("/g/subjects/s/", "/{gallery}/subjects/{subject}/")
    before = _body_bytes_read(server, endpoint)
    headers = {"X-API-Key": key} if key else {}
    answer = _send_chunked(
        server, path, headers, total=100 * MB, content_type=content_type, preamble=b"{"
    )
    assert answer.status == status
    assert _body_bytes_read(server, endpoint) - before == 0
    assert answer.sent < 10 * MB


@pytest.mark.slow
def test_chunked_20_mb_image_is_413_as_soon_as_it_passes_the_limit(server: str) -> None:
    before = _body_bytes_read(server, "/v1/quality")
    answer = _send_chunked(server, "/v1/quality", CLIENT, total=20 * MB)
    read = _body_bytes_read(server, "/v1/quality") - before
    assert answer.status == 413
    assert 10 * MB < read < 12 * MB  # the limit (10 MB) plus the chunk that passed it
    assert answer.sent < 20 * MB


@pytest.mark.slow
def test_one_file_over_its_limit_is_413_early_in_a_two_file_request(server: str) -> None:
    # /v1/verify takes 2 files: the request may be 20 MB, each file 10 MB
    before = _body_bytes_read(server, "/v1/verify")
    preamble = (
        b'--hardening\r\nContent-Disposition: form-data; name="image1"; filename="a.png"\r\n\r\n'
    )
    answer = _send_chunked(server, "/v1/verify", CLIENT, total=18 * MB, preamble=preamble)
    assert answer.status == 413
    assert 10 * MB < _body_bytes_read(server, "/v1/verify") - before < 12 * MB


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "key", "status"),
    [
        ("/v1/quality", CLIENT_KEY, 413),  # over the route's limit
        ("/v1/galleries/g/subjects/s/faces", None, 401),  # under its 640 MB, but no key
    ],
)
def test_a_declared_length_is_judged_before_the_body(
    server: str, path: str, key: str | None, status: int
) -> None:
    host, port = server.removeprefix("http://").split(":")
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {200 * MB}\r\n"
    head += "Content-Type: multipart/form-data; boundary=x\r\n"
    head += f"X-API-Key: {key}\r\n" if key else ""
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall((head + "\r\n").encode())
        reply = sock.recv(4096)
    assert reply.startswith(f"HTTP/1.1 {status}".encode()), reply[:100]
    assert b"connection: close" in reply.lower()


@pytest.mark.slow
def test_a_body_nobody_reads_closes_the_connection(server: str) -> None:
    # an unknown path answers 404 without reading; keep-alive would read the rest
    answer = _send_chunked(server, "/v1/nothing-here", CLIENT, total=100 * MB)
    assert answer.status == 404
    assert answer.sent < 10 * MB


# -- keys before bodies, for every route that needs one ----------------------------------------


def _secured_operations(client: TestClient) -> list[tuple[str, str, bool]]:
    """(method, path with ids filled in, needs an admin key) of every operation with a key."""
    operations = []
    for template, methods in client.get("/openapi.json").json()["paths"].items():
        for method, operation in methods.items():
            if operation.get("security"):
                path = template.format(gallery="g", subject="s", face="1")
                operations.append((method.upper(), path, "403" in operation["responses"]))
    return operations


def _body_bytes_observed(client: TestClient) -> float:
    histogram = client.app.state.metrics.body_bytes
    return sum(s.value for s in histogram.collect()[0].samples if s.name.endswith("_sum"))


def test_every_secured_route_refuses_before_reading_the_body(client: TestClient) -> None:
    operations = _secured_operations(client)
    assert len(operations) >= 15
    body = b"{" * (2 * MB)  # malformed and large: nothing may parse or read it
    for method, path, admin_only in operations:
        for headers, status in [({}, 401), (CLIENT, 403 if admin_only else None)]:
            if status is None:
                continue
            before = _body_bytes_observed(client)
            response = client.request(
                method,
                path,
                content=body,
                headers={**headers, "content-type": "application/json"},
            )
            assert response.status_code == status, (method, path, response.text[:200])
            assert _body_bytes_observed(client) == before, (method, path)
            assert response.headers["connection"] == "close"


def test_malformed_json_without_a_key_is_401_and_with_one_422(client: TestClient) -> None:
    headers = {"content-type": "application/json"}
    assert client.post("/v1/galleries", content="{nope", headers=headers).status_code == 401
    response = client.post("/v1/galleries", content="{nope", headers={**headers, **ADMIN})
    assert response.status_code == 422


# -- body limits on the stream ------------------------------------------------------------------


def test_one_file_over_its_limit_is_413_even_when_the_request_is_under(make_client) -> None:
    with make_client(max_upload_bytes=20_000) as client:
        small, big = face_png(1), b"\0" * 25_000
        assert len(small) < 20_000
        response = client.post(
            "/v1/verify",
            files={"image1": ("a.png", small), "image2": ("b.png", big)},
            headers=CLIENT,
        )
        assert response.status_code == 413
        assert response.json()["detail"].startswith("image2 (b.png): the file is over")


def test_too_many_files_and_oversized_fields_are_413(make_client) -> None:
    with make_client(max_files_per_request=2) as client:
        create_gallery(client, "g")
        create_subject(client, "g", "s")
        files = [("images", (f"{i}.png", face_png(i))) for i in range(3)]
        response = client.post("/v1/galleries/g/subjects/s/faces", files=files, headers=ADMIN)
        assert response.status_code == 413
        assert "at most 2 files in images" in response.json()["detail"]
        assert client.get("/v1/galleries/g/subjects/s", headers=CLIENT).json()["faces"] == []
        response = client.post(
            "/v1/identify",
            files={"image": ("a.png", face_png(0))},
            data={"gallery": "g", "far": "1" * 20_000},
            headers=CLIENT,
        )
        assert response.status_code == 413
        assert "form field far" in response.json()["detail"]


@pytest.mark.parametrize(
    ("endpoint", "parts", "twice"),
    [
        ("/v1/quality", [("image", "a.png"), ("image", "b.png")], "image"),
        ("/v1/verify", [("image1", "a.png"), ("image1", "b.png"), ("image2", "c.png")], "image1"),
        ("/v1/identify", [("image", "a.png"), ("gallery", "g"), ("gallery", "h")], "gallery"),
    ],
)
def test_a_single_field_sent_twice_is_422(
    client: TestClient, endpoint: str, parts: list[tuple[str, str]], twice: str
) -> None:
    create_gallery(client, "g")
    files = [
        (name, (value, face_png(0)) if value.endswith(".png") else (None, value.encode()))
        for name, value in parts
    ]
    response = client.post(endpoint, files=files, headers=CLIENT)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["type"] == "duplicate_field"
    assert error["loc"] == ["body", twice]


def test_a_list_field_may_repeat(client: TestClient) -> None:
    create_gallery(client, "g")
    create_subject(client, "g", "s")
    assert len(enroll(client, "g", "s", face_png(1), face_png(2))) == 2


# -- ids ---------------------------------------------------------------------------------------

_BAD_IDS = {
    "nul": "a\x00b",
    "long": "x" * 300,
    "control": "a\x1fb",
    "newline": "g\n",
    "space": "a b",
}


def _id_routes(bad: str) -> list[tuple[str, str, dict]]:
    """(method, path, request arguments) of every route carrying a gallery or subject id,
    with ``bad`` in one of them (each position in turn)."""
    quoted = quote(bad, safe="")
    routes: list[tuple[str, str, dict]] = []
    for gallery, subject in ((quoted, "s"), ("g", quoted)):
        routes += [
            ("GET", f"/v1/galleries/{gallery}/subjects/{subject}", {}),
            ("DELETE", f"/v1/galleries/{gallery}/subjects/{subject}", {}),
            ("DELETE", f"/v1/galleries/{gallery}/subjects/{subject}/faces/1", {}),
            ("GET", f"/v1/galleries/{gallery}/subjects/{subject}/faces/1/image", {}),
            (
                "POST",
                f"/v1/galleries/{gallery}/subjects/{subject}/faces",
                {"files": [("images", ("a.png", face_png(0)))]},
            ),
        ]
    routes += [
        ("GET", f"/v1/galleries/{quoted}", {}),
        ("DELETE", f"/v1/galleries/{quoted}", {}),
        ("POST", f"/v1/galleries/{quoted}/reembed", {}),
        ("GET", f"/v1/galleries/{quoted}/subjects", {}),
        ("POST", f"/v1/galleries/{quoted}/subjects", {"json": {"id": "s2"}}),
        ("POST", "/v1/galleries/g/subjects", {"json": {"id": bad}}),
        ("POST", "/v1/galleries", {"json": {"name": bad}}),
        (
            "POST",
            "/v1/identify",
            {"files": {"image": ("a.png", face_png(0))}, "data": {"gallery": bad}},
        ),
    ]
    return routes


@pytest.mark.parametrize("kind", sorted(_BAD_IDS))
def test_bad_ids_are_422_on_every_route_and_database(db_client: TestClient, kind: str) -> None:
    create_gallery(db_client, "g")
    create_subject(db_client, "g", "s")
    for method, path, arguments in _id_routes(_BAD_IDS[kind]):
        response = db_client.request(method, path, headers=ADMIN, **arguments)
        assert response.status_code == 422, (method, path, response.text[:300])
    # nothing was created or deleted by any of them
    galleries = db_client.get("/v1/galleries", headers=CLIENT).json()["items"]
    assert [g["name"] for g in galleries] == ["g"]
    subjects = db_client.get("/v1/galleries/g/subjects", headers=CLIENT).json()["items"]
    assert [s["id"] for s in subjects] == ["s"]


def test_ids_at_the_limit_are_accepted(client: TestClient) -> None:
    longest = "a" * 128
    create_gallery(client, longest)
    create_subject(client, longest, longest)
    assert client.get(f"/v1/galleries/{longest}/subjects/{longest}", headers=CLIENT).is_success
    assert client.get(f"/v1/galleries/{longest}x", headers=CLIENT).status_code == 422


# -- /metrics ---------------------------------------------------------------------------------


def test_metrics_need_a_metrics_or_admin_key(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 401
    wrong = {"X-API-Key": "not-a-key-of-this-service"}
    assert client.get("/metrics", headers=wrong).status_code == 401
    assert client.get("/metrics", headers=CLIENT).status_code == 403
    assert client.get("/metrics", headers=ADMIN).status_code == 200


def test_metrics_key_reads_metrics_only(make_client) -> None:
    with make_client(metrics_keys=[METRICS_KEY]) as client:
        key = {"X-API-Key": METRICS_KEY}
        assert client.get("/metrics", headers=key).status_code == 200
        assert client.get("/v1/galleries", headers=key).status_code == 403
        assert client.post("/v1/galleries", json={"name": "g"}, headers=key).status_code == 403


def test_metrics_may_be_public_on_a_private_network(make_client) -> None:
    with make_client(metrics_public=True) as client:
        assert client.get("/metrics").status_code == 200
        assert client.get("/v1/galleries").status_code == 401


def test_metrics_name_no_gallery_unless_asked(make_client) -> None:
    for labels in (False, True):
        with make_client(metrics_gallery_labels=labels) as client:
            create_gallery(client, "secret-watchlist")
            create_subject(client, "secret-watchlist", "s")
            enroll(client, "secret-watchlist", "s", face_png(1), face_png(2))
            text = client.get("/metrics", headers=ADMIN).text
            assert "lrfr_index_faces 2.0" in text
            assert "lrfr_galleries 1.0" in text
            assert ("secret-watchlist" in text) is labels
            client.delete("/v1/galleries/secret-watchlist", headers=ADMIN)
            text = client.get("/metrics", headers=ADMIN).text
            assert "lrfr_index_faces 0.0" in text
            assert "secret-watchlist" not in text


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"metrics_keys": "short"}, "at least 16"),
        ({"metrics_keys": "admin-key-0123456789abcdef"}, "metrics key cannot also be"),
    ],
)
def test_metrics_keys_are_checked(make_settings, values: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        make_settings(**values)


def test_metrics_keys_from_the_environment(monkeypatch, model_path: Path) -> None:
    monkeypatch.setenv("LRFR_MODEL_PATH", str(model_path))
    monkeypatch.setenv("LRFR_ADMIN_KEYS", ADMIN_KEY)
    monkeypatch.setenv("LRFR_METRICS_KEYS", f" {METRICS_KEY} , other-metrics-key-0123456789")
    assert Settings().metrics_keys == [METRICS_KEY, "other-metrics-key-0123456789"]
    assert Settings().metrics_public is False


# -- the OpenAPI schema ----------------------------------------------------------------------


def test_openapi_lists_the_error_answers_of_every_route(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    for template, methods in schema["paths"].items():
        for method, operation in methods.items():
            if not operation.get("security"):
                continue
            responses = operation["responses"]
            assert "401" in responses, (method, template)
            admin = method != "get" and template.startswith("/v1/galleries")
            assert ("403" in responses) is (admin or template == "/metrics"), (method, template)
            if "requestBody" in operation:
                assert {"413", "422"} <= set(responses), (method, template)
            for status, answer in responses.items():
                if status.startswith("4"):
                    assert answer["content"]["application/json"]["schema"] == error_ref
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] in ("gallery", "subject"):
                    assert parameter["schema"]["maxLength"] == 128
                    assert parameter["schema"]["pattern"].startswith("^[A-Za-z0-9]")


def test_openapi_describes_uploads_and_runtime_bounds(make_client) -> None:
    with make_client(max_top_k=7, max_files_per_request=3) as client:
        schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]

    def form(path: str) -> tuple[dict, dict]:
        content = schema["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]
        return content["encoding"], components[content["schema"]["$ref"].rsplit("/", 1)[-1]]

    encoding, body = form("/v1/verify")
    assert set(encoding) == {"image1", "image2"}
    assert "image/png" in encoding["image1"]["contentType"]
    encoding, body = form("/v1/identify")
    assert body["properties"]["gallery"]["pattern"].startswith("^[A-Za-z0-9]")
    top_k = body["properties"]["top_k"]["anyOf"][0]
    assert top_k["maximum"] == 7
    assert {"type": "null"} not in body["properties"]["threshold"]["anyOf"]
    encoding, body = form("/v1/galleries/{gallery}/subjects/{subject}/faces")
    assert "image/jpeg" in encoding["images"]["contentType"]
    assert body["properties"]["images"]["maxItems"] == 3


def test_405_names_every_method_of_the_path(client: TestClient) -> None:
    response = client.request("PATCH", "/v1/galleries/g/subjects/s", headers=ADMIN)
    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) == {"GET", "DELETE"}
