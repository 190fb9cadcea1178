"""The synchronous client."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
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


class Client:
    """A client of the lrfr service: one method per operation of its API.

    Errors are raised as ``lrfr.client.ApiError`` subclasses carrying the service's
    status, code and message; answers 429 and 503 are retried with back-off (``retry``).

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

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retry: Retry | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self._owns_http = http is None
        self._http = http if http is not None else httpx.Client(base_url=base_url, timeout=timeout)
        self._headers = {"X-API-Key": api_key} if api_key else {}
        self.retry = retry or Retry()

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
            response = self._http.request(
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
            time.sleep(wait)
            attempt += 1

    # -- health ------------------------------------------------------------------------------

    def health(self) -> Health:
        """``GET /healthz``: the process is alive."""
        return self.send(calls.health())

    def ready(self) -> Readiness:
        """``GET /readyz``: the model, database and indexes (``status`` says whether ready)."""
        return self.send(calls.ready())

    def metrics(self) -> str:
        """``GET /metrics``: Prometheus text (a metrics or admin key)."""
        return self.send(calls.metrics())

    # -- recognition -------------------------------------------------------------------------

    def quality(
        self, image: ImageInput, *, face: FaceMode | None = None, face_index: int | None = None
    ) -> QualityResponse:
        """``POST /v1/quality``: the Laplacian quality of the face, and where it was found."""
        return self.send(calls.quality(image, face=face, face_index=face_index))

    def detect(self, image: ImageInput) -> DetectResponse:
        """``POST /v1/detect``: every face in the image, largest first."""
        return self.send(calls.detect(image))

    def verify(
        self,
        image1: ImageInput,
        image2: ImageInput,
        *,
        threshold: float | None = None,
        far: str | None = None,
        face: FaceMode | None = None,
    ) -> VerifyResponse:
        """``POST /v1/verify``: are the two faces the same person?"""
        return self.send(calls.verify(image1, image2, threshold=threshold, far=far, face=face))

    def identify(
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
        return self.send(
            calls.identify(
                image, gallery=gallery, top_k=top_k, threshold=threshold, far=far, face=face,
                face_index=face_index,
            )
        )

    def identify_all(
        self,
        image: ImageInput,
        *,
        gallery: str,
        top_k: int = 5,
        threshold: float | None = None,
        far: str | None = None,
    ) -> IdentifyFrameResponse:
        """``POST /v1/identify`` with ``faces=all``: every face of a frame identified."""
        return self.send(
            calls.identify_all(image, gallery=gallery, top_k=top_k, threshold=threshold, far=far)
        )

    # -- galleries ---------------------------------------------------------------------------

    def create_gallery(self, name: str) -> GalleryOut:
        """``POST /v1/galleries`` (admin)."""
        return self.send(calls.create_gallery(name))

    def list_galleries(self, *, offset: int = 0, limit: int = 100) -> GalleryPage:
        """``GET /v1/galleries``: one page of galleries."""
        return self.send(calls.list_galleries(offset=offset, limit=limit))

    def iter_galleries(self, *, page: int = 100) -> Iterator[GalleryOut]:
        """Every gallery, reading ``page`` at a time."""
        yield from _every_page(lambda offset: self.list_galleries(offset=offset, limit=page))

    def get_gallery(self, name: str) -> GalleryOut:
        """``GET /v1/galleries/{gallery}``."""
        return self.send(calls.get_gallery(name))

    def delete_gallery(self, name: str) -> None:
        """``DELETE /v1/galleries/{gallery}`` (admin): its subjects and faces go too."""
        return self.send(calls.delete_gallery(name))

    def reembed_gallery(self, name: str) -> ReembedResponse:
        """``POST /v1/galleries/{gallery}/reembed`` (admin): move it to the served model."""
        return self.send(calls.reembed_gallery(name))

    # -- subjects and faces ------------------------------------------------------------------

    def create_subject(
        self,
        gallery: str,
        subject: str,
        *,
        name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> SubjectOut:
        """``POST /v1/galleries/{gallery}/subjects`` (admin)."""
        return self.send(calls.create_subject(gallery, subject, name=name, metadata=metadata))

    def list_subjects(self, gallery: str, *, offset: int = 0, limit: int = 100) -> SubjectPage:
        """``GET /v1/galleries/{gallery}/subjects``: one page of subjects."""
        return self.send(calls.list_subjects(gallery, offset=offset, limit=limit))

    def iter_subjects(self, gallery: str, *, page: int = 100) -> Iterator[SubjectOut]:
        """Every subject of ``gallery``, reading ``page`` at a time."""
        yield from _every_page(
            lambda offset: self.list_subjects(gallery, offset=offset, limit=page)
        )

    def get_subject(self, gallery: str, subject: str) -> SubjectDetail:
        """``GET /v1/galleries/{gallery}/subjects/{subject}``: with its faces."""
        return self.send(calls.get_subject(gallery, subject))

    def delete_subject(self, gallery: str, subject: str) -> None:
        """``DELETE /v1/galleries/{gallery}/subjects/{subject}`` (admin)."""
        return self.send(calls.delete_subject(gallery, subject))

    def enroll(
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
        return self.send(calls.enroll(gallery, subject, images, face=face, face_index=face_index))

    def face_image(self, gallery: str, subject: str, face: int) -> bytes:
        """``GET .../faces/{face}/image``: the stored face (PNG)."""
        return self.send(calls.face_image(gallery, subject, face))

    def delete_face(self, gallery: str, subject: str, face: int) -> None:
        """``DELETE .../faces/{face}`` (admin)."""
        return self.send(calls.delete_face(gallery, subject, face))


def _every_page(read: Callable[[int], Page[T]]) -> Iterator[T]:
    """The items of every page ``read(offset)`` answers, from offset 0 to the last page."""
    offset: int | None = 0
    while offset is not None:
        found = read(offset)
        yield from found.items
        offset = calls.next_offset(offset, found)
