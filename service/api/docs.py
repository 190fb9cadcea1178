"""The API docs (Swagger UI at ``/docs``, ReDoc at ``/redoc``) without a CDN.

FastAPI's own pages load their scripts and styles from a public CDN, so on an
air-gapped network they stay blank. Here the same pages load them from the service,
which serves the copies packaged by ``fastapi-offline`` (MIT; Swagger UI Apache-2.0,
ReDoc MIT).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

#: Where the docs' scripts, styles and icon are served from.
ASSETS_URL = "/static/docs"
#: The files the pages load (all of them from ``ASSETS_URL``).
ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
#: The pages may load and call only this service (their inline start-up scripts aside):
#: ReDoc's footer would otherwise fetch its logo from a CDN.
_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; worker-src 'self' blob:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def _contained(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = _CSP
    return page


def assets_dir() -> Path:
    """The folder of the installed ``fastapi_offline`` package's assets."""
    return Path(str(files("fastapi_offline") / "static"))


def install_docs(app: FastAPI, *, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Adds the docs pages to ``app`` (built with ``docs_url=None, redoc_url=None``)."""
    folder = assets_dir()
    missing = [name for name in ASSETS if not (folder / name).is_file()]
    if missing:
        raise RuntimeError(f"fastapi-offline is installed without {', '.join(missing)}")
    app.mount(ASSETS_URL, StaticFiles(directory=folder), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    redirect_url = f"{docs_url}/oauth2-redirect"

    def add_page(url: str, build: Callable[..., HTMLResponse], title: str, **paths: str) -> None:
        """Serves at ``url`` the page ``build`` makes under the CSP; ``paths`` are the URLs it
        names (the OpenAPI schema's among them), each put under the app's root path."""

        async def page(request: Request) -> HTMLResponse:
            root = request.scope.get("root_path", "")
            urls = {name: f"{root}{path}" for name, path in paths.items()}
            return _contained(build(title=f"{app.title} - {title}", **urls))

        app.add_api_route(url, page, include_in_schema=False)

    add_page(
        docs_url,
        partial(get_swagger_ui_html, swagger_ui_parameters=app.swagger_ui_parameters),
        "Swagger UI",
        openapi_url=openapi_url,
        oauth2_redirect_url=redirect_url,
        swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
    )

    @app.get(redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    add_page(
        redoc_url,
        partial(get_redoc_html, with_google_fonts=False),
        "ReDoc",
        openapi_url=openapi_url,
        redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
        redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
    )
