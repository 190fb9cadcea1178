"""The asynchronous client (the same methods as ``Client``, awaited)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx

import lrfr.client.calls as calls
from lrfr.client.calls import Call, FaceMode, ImageInput, Retry
from service.schemas import (
    DetectResponse,
    EnrollResponse,
    GalleryOut,
    GalleryPage,
    Health,
    IdentifyFrameResponse,
    IdentifyResponse,
    Page,
    QualityResponse,
    Readiness,
    ReembedResponse,
    SubjectDetail,
    SubjectOut,
    SubjectPage,
    VerifyResponse,
)

T = TypeVar("T")


class AsyncClient:
    """An asyncio client of the lrfr service: one coroutine per operation of its API.

    Errors are raised as ``lrfr.client.ApiError`` subclasses carrying the service's
    status, code and message; answers 429 and 503 are retried with back-off (``retry``).

    Args:
        base_url: where the service is, e.g. ``http://127.0.0.1:8000``.
        api_key: the key sent in ``X-API-Key`` (a client key may read, verify and identify;
            an admin key may also enroll and delete).
        timeout: seconds per request.
        retry: the back-off for 429 and 503.
        http: an ``httpx.AsyncClient`` to send with instead of one of the client's own (its
            base URL is used; it is not closed by ``aclose``).

    Example:
        >>> async with AsyncClient("http://127.0.0.1:8000", api_key) as lrfr:  # doctest: +SKIP
        ...     (await lrfr.verify("a.jpg", "b.jpg")).decision
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retry: Retry | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._owns_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(
            base_url=base_url, timeout=timeout
        )
        self._headers = {"X-API-Key": api_key} if api_key else {}
        self.retry = retry or Retry()

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
            response = await self._http.request(
                call.method,
                call.path,
                params=call.params,
                json=call.json,
                data=call.data,
                files=call.files,
                headers=self._headers,
            )
            wait = self.retry.wait(attempt, response) if call.retry else None
            if wait is None:
                return call.result(response)
            await asyncio.sleep(wait)
            attempt += 1

    # -- health ------------------------------------------------------------------------------

    async def health(self) -> Health:
        """``GET /healthz``: the process is alive."""
        return await self.send(calls.health())

    async def ready(self) -> Readiness:
        """``GET /readyz``: the model, database and indexes (``status`` says whether ready)."""
        return await self.send(calls.ready())

    async def metrics(self) -> str:
        """``GET /metrics``: Prometheus text (a metrics or admin key)."""
        return await self.send(calls.metrics())

    # -- recognition -------------------------------------------------------------------------

    async def quality(
        self, image: ImageInput, *, face: FaceMode | None = None, face_index: int | None = None
    ) -> QualityResponse:
        """``POST /v1/quality``: the Laplacian quality of the face, and where it was found."""
        return await self.send(calls.quality(image, face=face, face_index=face_index))

    async def detect(self, image: ImageInput) -> DetectResponse:
        """``POST /v1/detect``: every face in the image, largest first."""
        return await self.send(calls.detect(image))

    async def verify(
        self,
        image1: ImageInput,
        image2: ImageInput,
        *,
        threshold: float | None = None,
        far: str | None = None,
        face: FaceMode | None = None,
    ) -> VerifyResponse:
        """``POST /v1/verify``: are the two faces the same person?"""
        return await self.send(
            calls.verify(image1, image2, threshold=threshold, far=far, face=face)
        )

    async def identify(
        self,
        image: ImageInput,
        *,
        gallery: str,
        top_k: int = 5,
        threshold: float | None = None,
        far: str | None = None,
        face: FaceMode | None = None,
        face_index: int | None = None,
    ) -> IdentifyResponse:
        """``POST /v1/identify``: who in ``gallery`` is this (open-set)?"""
        return await self.send(
            calls.identify(
                image, gallery=gallery, top_k=top_k, threshold=threshold, far=far, face=face,
                face_index=face_index,
            )
        )

    async def identify_all(
        self,
        image: ImageInput,
        *,
        gallery: str,
        top_k: int = 5,
        threshold: float | None = None,
        far: str | None = None,
    ) -> IdentifyFrameResponse:
        """``POST /v1/identify`` with ``faces=all``: every face of a frame identified."""
        return await self.send(
            calls.identify_all(image, gallery=gallery, top_k=top_k, threshold=threshold, far=far)
        )

    # -- galleries ---------------------------------------------------------------------------

    async def create_gallery(self, name: str) -> GalleryOut:
        """``POST /v1/galleries`` (admin)."""
        return await self.send(calls.create_gallery(name))

    async def list_galleries(self, *, offset: int = 0, limit: int = 100) -> GalleryPage:
        """``GET /v1/galleries``: one page of galleries."""
        return await self.send(calls.list_galleries(offset=offset, limit=limit))

    async def iter_galleries(self, *, page: int = 100) -> AsyncIterator[GalleryOut]:
        """Every gallery, reading ``page`` at a time."""
        async for item in _every_page(
            lambda offset: self.list_galleries(offset=offset, limit=page)
        ):
            yield item

    async def get_gallery(self, name: str) -> GalleryOut:
        """``GET /v1/galleries/{gallery}``."""
        return await self.send(calls.get_gallery(name))

    async def delete_gallery(self, name: str) -> None:
        """``DELETE /v1/galleries/{gallery}`` (admin): its subjects and faces go too."""
        return await self.send(calls.delete_gallery(name))

    async def reembed_gallery(self, name: str) -> ReembedResponse:
        """``POST /v1/galleries/{gallery}/reembed`` (admin): move it to the served model."""
        return await self.send(calls.reembed_gallery(name))

    # -- subjects and faces ------------------------------------------------------------------

    async def create_subject(
        self,
        gallery: str,
        subject: str,
        *,
        name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> SubjectOut:
        """``POST /v1/galleries/{gallery}/subjects`` (admin)."""
        return await self.send(calls.create_subject(gallery, subject, name=name, metadata=metadata))

    async def list_subjects(
        self, gallery: str, *, offset: int = 0, limit: int = 100
    ) -> SubjectPage:
        """``GET /v1/galleries/{gallery}/subjects``: one page of subjects."""
        return await self.send(calls.list_subjects(gallery, offset=offset, limit=limit))

    async def iter_subjects(
        self, gallery: str, *, page: int = 100
    ) -> AsyncIterator[SubjectOut]:
        """Every subject of ``gallery``, reading ``page`` at a time."""
        async for item in _every_page(
            lambda offset: self.list_subjects(gallery, offset=offset, limit=page)
        ):
            yield item

    async def get_subject(self, gallery: str, subject: str) -> SubjectDetail:
        """``GET /v1/galleries/{gallery}/subjects/{subject}``: with its faces."""
        return await self.send(calls.get_subject(gallery, subject))

    async def delete_subject(self, gallery: str, subject: str) -> None:
        """``DELETE /v1/galleries/{gallery}/subjects/{subject}`` (admin)."""
        return await self.send(calls.delete_subject(gallery, subject))

    async def enroll(
        self,
        gallery: str,
        subject: str,
        images: Sequence[ImageInput],
        *,
        face: FaceMode | None = None,
        face_index: int | None = None,
    ) -> EnrollResponse:
        """``POST /v1/galleries/{gallery}/subjects/{subject}/faces`` (admin): enrolls the
        images together (one bad file fails them all); those under the quality floor come
        back in ``refused``."""
        return await self.send(
            calls.enroll(gallery, subject, images, face=face, face_index=face_index)
        )

    async def face_image(self, gallery: str, subject: str, face: int) -> bytes:
        """``GET .../faces/{face}/image``: the stored face (PNG)."""
        return await self.send(calls.face_image(gallery, subject, face))

    async def delete_face(self, gallery: str, subject: str, face: int) -> None:
        """``DELETE .../faces/{face}`` (admin)."""
        return await self.send(calls.delete_face(gallery, subject, face))


async def _every_page(read: Callable[[int], Awaitable[Page[T]]]) -> AsyncIterator[T]:
    """The items of every page ``read(offset)`` answers, from offset 0 to the last page."""
    offset: int | None = 0
    while offset is not None:
        found = await read(offset)
        for item in found.items:
            yield item
        offset = calls.next_offset(offset, found)
