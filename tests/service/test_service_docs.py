"""/docs and /redoc load everything from the service itself (no CDN): their pages name
no outside URL, and every script, style and icon they name is served."""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.metadata import files as package_files

import pytest
from fastapi.testclient import TestClient

from service.api.docs import ASSETS, assets_dir
from service.app import create_app


@pytest.fixture
def pages(make_settings) -> TestClient:
    # no lifespan: the docs need neither the model nor the database
    return TestClient(create_app(make_settings()))


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_from_the_service(pages: TestClient, page: str) -> None:
    response = pages.get(page)
    assert response.status_code == 200
    html = response.text
    assert "://" not in html.replace("http://www.w3.org", ""), html
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url:\s*["']([^"']+)["']""", html)
    named = [first or second for first, second in urls]
    assert any(url.endswith(".js") for url in named), named
    for url in named:
        assert url.startswith("/"), url
        assert pages.get(url).status_code == 200, url


def test_the_assets_are_the_installed_packages_files() -> None:
    # pip checked these against the wheel's RECORD; hold the served files to it too
    record = {
        str(entry): entry.hash
        for entry in package_files("fastapi-offline") or []
        if entry.hash is not None
    }
    for name in ASSETS:
        key = next(path for path in record if path.endswith(f"static/{name}"))
        digest = hashlib.sha256((assets_dir() / name).read_bytes()).digest()
        assert record[key].value == base64.urlsafe_b64encode(digest).rstrip(b"=").decode(), name
