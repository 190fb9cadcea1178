"""The synchronous client."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TypeVar

import httpx

import lrfr.client.calls as calls
from lrfr.client.base import ClientBase
from lrfr.client.calls import Call, sync_method
from service.schemas import GalleryOut, Page, SubjectOut

T = TypeVar("T")


class Client(ClientBase[httpx.Client]):
    """A client of the lrfr service: one method per operation of its API.

    Errors are raised as ``lrfr.client.ApiError`` subclasses carrying the service's
    status, code and message; answers 429 and 503 are retried with back-off (``retry``).
    Each operation's parameters and answer are those of its builder in
    ``lrfr.client.calls``.

    Args:
        base_url: where the service is, e.g. ``http://127.0.0.1:8000``.
        api_key: the key sent in ``X-API-Key`` (a client key may read, verify and identify;
            an admin key may also enroll and delete).
        timeout: seconds per request.
        retry: the back-off for 429 and 503.
        http: an ``httpx.Client`` to send with instead of one of the client's own (its
            base URL is used; it is not closed by ``close``).

    Example:
        >>> with Client("http://127.0.0.1:8000", api_key) as lrfr:  # doctest: +SKIP
        ...     lrfr.verify("a.jpg", "b.jpg").decision
    """

    _http_type = httpx.Client

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def send(self, call: Call[T]) -> T:
        """Sends one call, retrying 429 and 503 answers as ``retry`` says."""
        attempt = 0
        while True:
            response = self._http.send(call.request(self._http, self._headers))
            wait = self.retry.wait(attempt, response) if call.retry else None
            if wait is None:
                return call.result(response)
            time.sleep(wait)
            attempt += 1

    health = sync_method(calls.health)
    ready = sync_method(calls.ready)
    metrics = sync_method(calls.metrics)

    quality = sync_method(calls.quality)
    detect = sync_method(calls.detect)
    verify = sync_method(calls.verify)
    identify = sync_method(calls.identify)
    identify_all = sync_method(calls.identify_all)

    create_gallery = sync_method(calls.create_gallery)
    list_galleries = sync_method(calls.list_galleries)
    get_gallery = sync_method(calls.get_gallery)
    delete_gallery = sync_method(calls.delete_gallery)
    reembed_gallery = sync_method(calls.reembed_gallery)

    create_subject = sync_method(calls.create_subject)
    list_subjects = sync_method(calls.list_subjects)
    get_subject = sync_method(calls.get_subject)
    delete_subject = sync_method(calls.delete_subject)
    enroll = sync_method(calls.enroll)
    face_image = sync_method(calls.face_image)
    delete_face = sync_method(calls.delete_face)

    def iter_galleries(self, *, page: int = 100) -> Iterator[GalleryOut]:
        """Every gallery, reading ``page`` at a time."""
        yield from _every_page(lambda offset: self.list_galleries(offset=offset, limit=page))

    def iter_subjects(self, gallery: str, *, page: int = 100) -> Iterator[SubjectOut]:
        """Every subject of ``gallery``, reading ``page`` at a time."""
        yield from _every_page(
            lambda offset: self.list_subjects(gallery, offset=offset, limit=page)
        )


def _every_page(read: Callable[[int], Page[T]]) -> Iterator[T]:
    """The items of every page ``read(offset)`` answers, from offset 0 to the last page."""
    offset: int | None = 0
    while offset is not None:
        found = read(offset)
        yield from found.items
        offset = calls.next_offset(offset, found)
