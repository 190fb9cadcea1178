"""The asynchronous client (the same methods as ``Client``, awaited)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import TypeVar

import httpx

import lrfr.client.calls as calls
from lrfr.client.base import ClientBase
from lrfr.client.calls import Call, async_method
from service.schemas import GalleryOut, Page, SubjectOut

T = TypeVar("T")


class AsyncClient(ClientBase[httpx.AsyncClient]):
    """An asyncio client of the lrfr service: the methods of ``lrfr.client.Client`` as
    coroutines, with the same arguments (``http`` excepted) and the same errors and retries.

    Args:
        http: an ``httpx.AsyncClient`` to send with instead of one of the client's own (its
            base URL is used; it is not closed by ``aclose``).

    Example:
        >>> async with AsyncClient("http://127.0.0.1:8000", api_key) as lrfr:  # doctest: +SKIP
        ...     (await lrfr.verify("a.jpg", "b.jpg")).decision
    """

    _http_type = httpx.AsyncClient

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def send(self, call: Call[T]) -> T:
        """Sends one call, retrying 429 and 503 answers as ``retry`` says."""
        attempt = 0
        while True:
            response = await self._http.send(call.request(self._http, self._headers))
            wait = self.retry.wait(attempt, response) if call.retry else None
            if wait is None:
                return call.result(response)
            await asyncio.sleep(wait)
            attempt += 1

    health = async_method(calls.health)
    ready = async_method(calls.ready)
    metrics = async_method(calls.metrics)

    quality = async_method(calls.quality)
    detect = async_method(calls.detect)
    verify = async_method(calls.verify)
    identify = async_method(calls.identify)
    identify_all = async_method(calls.identify_all)

    create_gallery = async_method(calls.create_gallery)
    list_galleries = async_method(calls.list_galleries)
    get_gallery = async_method(calls.get_gallery)
    delete_gallery = async_method(calls.delete_gallery)
    reembed_gallery = async_method(calls.reembed_gallery)

    create_subject = async_method(calls.create_subject)
    list_subjects = async_method(calls.list_subjects)
    get_subject = async_method(calls.get_subject)
    delete_subject = async_method(calls.delete_subject)
    enroll = async_method(calls.enroll)
    face_image = async_method(calls.face_image)
    delete_face = async_method(calls.delete_face)

    async def iter_galleries(self, *, page: int = 100) -> AsyncIterator[GalleryOut]:
        """Every gallery, reading ``page`` at a time."""
        async for item in _every_page(
            lambda offset: self.list_galleries(offset=offset, limit=page)
        ):
            yield item

    async def iter_subjects(
        self, gallery: str, *, page: int = 100
    ) -> AsyncIterator[SubjectOut]:
        """Every subject of ``gallery``, reading ``page`` at a time."""
        async for item in _every_page(
            lambda offset: self.list_subjects(gallery, offset=offset, limit=page)
        ):
            yield item


async def _every_page(read: Callable[[int], Awaitable[Page[T]]]) -> AsyncIterator[T]:
    """The items of every page ``read(offset)`` answers, from offset 0 to the last page."""
    offset: int | None = 0
    while offset is not None:
        found = await read(offset)
        for item in found.items:
            yield item
        offset = calls.next_offset(offset, found)
