"""The web console at ``/ui``: static ES modules that call the public API (no build step).

The page keeps the API key the user types in ``sessionStorage`` only; it is served with
a Content-Security-Policy that lets it load and call nothing but this service, so a
script injected through data it shows could neither run inline nor send the key away.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The console's files (index.html and its modules), shipped inside the package.
CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
CONSOLE_URL = "/ui"

_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'none'"
)
_HEADERS = [
    (b"content-security-policy", _CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    # the page changes with the service: always ask again (a 304 keeps it cheap)
    (b"cache-control", b"no-cache"),
]


class _WithHeaders:
    """Adds the console's security headers to every answer of the wrapped app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_console(app: FastAPI) -> None:
    """Serves the console's files under ``/ui`` (``/ui/`` is its page)."""
    if not (CONSOLE_DIR / "index.html").is_file():
        raise RuntimeError(f"the web console is missing from {CONSOLE_DIR}")
    static = StaticFiles(directory=CONSOLE_DIR, html=True)
    app.mount(CONSOLE_URL, _WithHeaders(static), name="console")
