"""``lrfr.client``: every route of /openapi.json has a client method, each method works
against the real app, errors carry the service's code and message, and only 429 and
503 are retried."""

from __future__ import annotations

import asyncio
import inspect
import re
import subprocess
import sys
import textwrap

import httpx
import pytest
from fastapi.testclient import TestClient

from lrfr.client import (
    ROUTES,
    ApiError,
    AsyncClient,
    AuthenticationError,
    Client,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    Retry,
    ServerError,
    ServiceUnavailableError,
    UnprocessableError,
    calls,
)
from tests.support.service import ADMIN_KEY, CLIENT_KEY, REPO_ROOT, encode, face_png

_METHODS = {"get", "post", "put", "patch", "delete"}


def _operations(schema: dict) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in schema["paths"].items()
        for method in item
        if method in _METHODS
    }


def test_the_client_covers_every_route_of_the_openapi_schema(app_client: TestClient) -> None:
    schema = app_client.get("/openapi.json").json()
    assert set(ROUTES) == _operations(schema)


@pytest.mark.parametrize("name", sorted({name for names in ROUTES.values() for name in names}))
def test_sync_and_async_methods_take_what_the_operation_takes(name: str) -> None:
    builder = inspect.signature(getattr(calls, name))
    for kind in (Client, AsyncClient):
        method = getattr(kind, name)
        assert inspect.iscoroutinefunction(method) is (kind is AsyncClient), (kind, name)
        params = list(inspect.signature(method).parameters.values())[1:]
        assert [(p.name, p.kind, p.default) for p in params] == [
            (p.name, p.kind, p.default) for p in builder.parameters.values()
        ], (kind, name)


def _templates() -> list[tuple[str, re.Pattern[str], str]]:
    return [
        (method, re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"), path)
        for method, path in ROUTES
    ]


def test_every_operation_through_the_sync_client(app_client: TestClient) -> None:
    called: set[tuple[str, str]] = set()
    templates = _templates()

    def record(request: httpx.Request) -> None:
        for method, pattern, path in templates:
            if request.method == method and pattern.match(request.url.path):
                called.add((method, path))

    app_client.event_hooks["request"].append(record)
    admin = Client(api_key=ADMIN_KEY, http=app_client)
    reader = Client(api_key=CLIENT_KEY, http=app_client)
    image, other = face_png(1), face_png(2)

    assert admin.health().status == "ok"
    assert admin.ready().status == "ready"
    assert "lrfr_requests" in admin.metrics()
    assert admin.create_gallery("g").name == "g"
    assert admin.create_subject("g", "alice", name="Alice", metadata={"team": "blue"}).id == "alice"
    admin.create_subject("g", "bob")
    enrolled = admin.enroll("g", "alice", [image, ("second.png", other)])
    assert [face.sha256 is not None for face in enrolled.faces] == [True, True]
    admin.enroll("g", "bob", [face_png(3)])
    page = reader.list_subjects("g", limit=1)
    assert (page.total, [s.id for s in page.items]) == (2, ["alice"])
    assert [s.id for s in reader.iter_subjects("g", page=1)] == ["alice", "bob"]
    assert reader.list_galleries().total == 1
    assert [g.name for g in reader.iter_galleries()] == ["g"]
    assert reader.get_gallery("g").faces == 3
    detail = reader.get_subject("g", "alice")
    assert detail.metadata == {"team": "blue"}
    assert reader.face_image("g", "alice", detail.faces[0].id).startswith(b"\x89PNG")
    assert reader.quality(image).quality.width == 48
    assert reader.detect(image).width == 48
    assert reader.verify(image, image, threshold=0.5).match is True
    found = reader.identify(image, gallery="g", top_k=2)
    assert found.matches[0].subject == "alice"
    assert reader.identify_all(encode_frame(), gallery="g").model.name
    assert admin.reembed_gallery("g").faces == 3
    admin.delete_face("g", "alice", detail.faces[0].id)
    admin.delete_subject("g", "bob")
    admin.delete_gallery("g")
    assert reader.list_galleries().items == []
    assert called == set(ROUTES)


def encode_frame() -> bytes:
    from PIL import Image

    return encode(Image.new("RGB", (160, 120), (90, 90, 90)))


def test_errors_carry_the_services_status_code_and_message(app_client: TestClient) -> None:
    admin = Client(api_key=ADMIN_KEY, http=app_client)
    with pytest.raises(NotFoundError) as missing:
        admin.get_gallery("nowhere")
    assert (missing.value.status, missing.value.code) == (404, "not_found")
    assert missing.value.message == "gallery 'nowhere' not found"
    admin.create_gallery("g")
    with pytest.raises(ConflictError, match="already exists"):
        admin.create_gallery("g")
    with pytest.raises(AuthenticationError):
        Client(api_key="not-a-valid-key-at-all", http=app_client).list_galleries()
    with pytest.raises(PermissionDeniedError):
        Client(api_key=CLIENT_KEY, http=app_client).create_gallery("h")
    with pytest.raises(UnprocessableError) as invalid:
        admin.list_galleries(limit=0)
    assert invalid.value.code == "invalid_request"
    assert "limit" in invalid.value.message
    with pytest.raises(UnprocessableError) as no_face:
        admin.quality(face_png(1, size=(200, 200)), face="auto")
    assert no_face.value.code == "no_face"
    assert isinstance(no_face.value.detail, dict)


def _scripted(statuses: list[int], seen: list[str]) -> httpx.MockTransport:
    answers = iter(statuses)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        status = next(answers)
        if status == 200:
            return httpx.Response(200, json={"status": "ok"})
        headers = {"Retry-After": "0"} if status == 429 else {}
        return httpx.Response(status, json={"detail": f"status {status}"}, headers=headers)

    return httpx.MockTransport(handler)


_FAST = Retry(attempts=3, backoff=0.001)


@pytest.mark.parametrize(
    ("statuses", "outcome", "tries"),
    [
        ([503, 429, 200], None, 3),
        ([503, 503, 503, 200], ServiceUnavailableError, 3),
        ([500, 200], ServerError, 1),
        ([422, 200], UnprocessableError, 1),
        ([404, 200], NotFoundError, 1),
    ],
)
def test_only_429_and_503_are_retried(
    statuses: list[int], outcome: type[ApiError] | None, tries: int
) -> None:
    seen: list[str] = []
    http = httpx.Client(transport=_scripted(statuses, seen), base_url="http://lrfr")
    client = Client(http=http, retry=_FAST)
    if outcome is None:
        assert client.health().status == "ok"
    else:
        with pytest.raises(outcome):
            client.health()
    assert len(seen) == tries

    seen.clear()

    async def run() -> None:
        transport = _scripted(statuses, seen)
        async with httpx.AsyncClient(transport=transport, base_url="http://lrfr") as http:
            client = AsyncClient(http=http, retry=_FAST)
            if outcome is None:
                assert (await client.health()).status == "ok"
            else:
                with pytest.raises(outcome):
                    await client.health()

    asyncio.run(run())
    assert len(seen) == tries


def test_back_off_grows_and_follows_retry_after() -> None:
    retry = Retry(attempts=5, backoff=1.0, factor=2.0, max_wait=5.0, jitter=lambda: 1.0)
    busy = httpx.Response(503)
    assert [retry.wait(attempt, busy) for attempt in range(5)] == [1.0, 2.0, 4.0, 5.0, None]
    assert retry.wait(0, httpx.Response(429, headers={"Retry-After": "3"})) == 3.0
    assert retry.wait(0, httpx.Response(500)) is None


def test_the_client_imports_without_torch_or_the_service_stack() -> None:
    # what `pip install lrfr` (no extras) gives: none of these is installed there
    code = textwrap.dedent(
        """
        import sys
        blocked = ("torch", "fastapi", "starlette", "onnxruntime", "faiss", "sqlalchemy")

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in blocked:
                    raise ImportError(f"{name} is not installed")
                return None

        sys.meta_path.insert(0, Block())
        from lrfr.client import AsyncClient, Client
        print("ok")
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"
