"""What the sync and the async client share: how they are set up (the service, the key,
the back-off) and the HTTP client they send with."""

from __future__ import annotations

from typing import Generic, TypeVar

import httpx

from lrfr.client.calls import Retry

#: The HTTP client a client sends with: ``httpx.Client`` or ``httpx.AsyncClient``.
H = TypeVar("H", httpx.Client, httpx.AsyncClient)


class ClientBase(Generic[H]):
    """A client's settings and its HTTP client; the arguments are ``lrfr.client.Client``'s.

    A subclass names the HTTP client it opens when none is given (``_http_type``).
    """

    _http_type: type[H]

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retry: Retry | None = None,
        http: H | None = None,
    ) -> None:
        self._owns_http = http is None
        self._http: H = (
            http if http is not None else self._http_type(base_url=base_url, timeout=timeout)
        )
        self._headers = {"X-API-Key": api_key} if api_key else {}
        self.retry = retry or Retry()
