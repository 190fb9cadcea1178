"""What each operation of the API sends and how its answer is read, shared by the sync
and the async client (which only differ in how they wait).

Every builder is registered with the route it calls (``ROUTES``), so a test can hold
the client against the service's ``/openapi.json``. A builder is the one definition of
its operation: its parameters, types and docstring are those of the clients' method of
the same name (``sync_method``, ``async_method``), which only sends what it builds.
"""

from __future__ import annotations

import functools
import inspect
import mimetypes
import os
import random
import typing
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Concatenate, Generic, Literal, ParamSpec, Protocol, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from lrfr.client.errors import error_from_response
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
M = TypeVar("M", bound=BaseModel)
P = ParamSpec("P")
F = TypeVar("F", bound=Callable[..., Any])

#: An image to send: its bytes, a path, an open binary file, or (filename, bytes).
ImageInput = bytes | str | os.PathLike[str] | IO[bytes] | tuple[str, bytes]
#: How the service finds the face in an upload (docs/service.md, "What should I send?").
FaceMode = Literal["auto", "aligned", "box"]

#: The statuses worth retrying: the service is busy or starting, not the request wrong.
RETRY_STATUSES = frozenset({429, 503})

#: (method, route template) -> the names of the client methods that call it.
ROUTES: dict[tuple[str, str], list[str]] = {}


@dataclass(frozen=True)
class Call(Generic[T]):
    """One HTTP request and how to read its answer."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    params: dict[str, Any] | None = None
    json: Any = None
    data: dict[str, str] | None = None
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    #: statuses that are answers, not errors (/readyz answers 503 when not ready)
    answers: frozenset[int] = frozenset({200, 201, 204})
    retry: bool = True

    def request(
        self, http: httpx.Client | httpx.AsyncClient, headers: Mapping[str, str]
    ) -> httpx.Request:
        """The request, built by the client that will send it (its base URL and defaults)."""
        return http.build_request(
            self.method,
            self.path,
            params=self.params,
            json=self.json,
            data=self.data,
            files=self.files,
            headers=headers,
        )

    def result(self, response: httpx.Response) -> T:
        """The answer read, or the error it carries raised."""
        if response.status_code not in self.answers:
            raise error_from_response(response)
        return self.read(response)


@dataclass(frozen=True)
class Retry:
    """Back-off for answers 429 and 503 (only those: other errors are the request's).

    Attributes:
        attempts: tries in all, the first included.
        backoff: seconds before the first retry; each next one waits ``factor`` times
            longer, up to ``max_wait``, with jitter (50-100 %). A ``Retry-After`` header
            in seconds is followed instead, up to ``max_wait``.
    """

    attempts: int = 4
    backoff: float = 0.5
    factor: float = 2.0
    max_wait: float = 30.0
    jitter: Callable[[], float] = field(default=lambda: random.uniform(0.5, 1.0))

    def wait(self, attempt: int, response: httpx.Response) -> float | None:
        """Seconds to wait before trying again after ``response`` (attempt 0 = the first),
        or None when it is not to be retried."""
        if response.status_code not in RETRY_STATUSES or attempt + 1 >= self.attempts:
            return None
        after = response.headers.get("retry-after", "")
        try:
            return min(self.max_wait, max(0.0, float(after)))
        except ValueError:
            return min(self.max_wait, self.backoff * self.factor**attempt) * self.jitter()


class Sender(Protocol):
    """What ``sync_method`` needs of its class: ``Client``."""

    def send(self, call: Call[T], /) -> T: ...


class AsyncSender(Protocol):
    """What ``async_method`` needs of its class: ``AsyncClient``."""

    async def send(self, call: Call[T], /) -> T: ...


def sync_method(build: Callable[P, Call[T]]) -> Callable[Concatenate[Sender, P], T]:
    """The client method of an operation: sends what ``build`` builds, returns the answer."""

    def method(self: Sender, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self.send(build(*args, **kwargs))

    return _like(build, method, owner="Client")


def async_method(
    build: Callable[P, Call[T]],
) -> Callable[Concatenate[AsyncSender, P], Coroutine[Any, Any, T]]:
    """As ``sync_method``, for ``AsyncClient``: a coroutine that awaits the answer."""

    async def method(self: AsyncSender, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.send(build(*args, **kwargs))

    return _like(build, method, owner="AsyncClient")


def _like(build: Callable[..., Call[Any]], method: F, *, owner: str) -> F:
    """``method`` presented as if written out in ``owner``: the builder's name and
    docstring, ``self`` and the builder's parameters, the type of the answer (for
    ``help()``, ``inspect.signature`` and ``typing.get_type_hints``)."""
    hints = typing.get_type_hints(build)
    (answer,) = typing.get_args(hints.pop("return"))
    answer = None if answer is type(None) else answer  # shown as "-> None"
    signature = inspect.signature(build)
    parameters = [
        inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        *(p.replace(annotation=hints[p.name]) for p in signature.parameters.values()),
    ]
    functools.update_wrapper(method, build)
    method.__qualname__ = f"{owner}.{build.__name__}"
    method.__annotations__ = {**hints, "return": answer}
    # read by inspect.signature; typeshed's callables do not declare it
    method.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=parameters, return_annotation=answer
    )
    return method


def _route(method: str, template: str) -> Callable[[F], F]:
    def register(builder: F) -> F:
        ROUTES.setdefault((method, template), []).append(builder.__name__)
        return builder

    return register


def _segment(value: str | int) -> str:
    return quote(str(value), safe="")


def _model(model: type[M]) -> Callable[[httpx.Response], M]:
    return lambda response: model.model_validate_json(response.content)


def _nothing(_: httpx.Response) -> None:
    return None


def read_image(image: ImageInput, name: str = "image") -> tuple[str, bytes, str]:
    """(filename, bytes, media type) of an image given in any of ``ImageInput``'s forms."""
    if isinstance(image, bytes):
        filename, data = name, image
    elif isinstance(image, tuple):
        filename, data = image
    elif isinstance(image, str | os.PathLike):
        path = Path(image)
        filename, data = path.name, path.read_bytes()
    else:
        filename, data = Path(str(getattr(image, "name", name))).name, image.read()
    media = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    return filename, data, media


def next_offset(offset: int, page: Page[Any]) -> int | None:
    """Where the page after ``page`` (read at ``offset``) starts, or None after the last."""
    offset += len(page.items)
    return None if not page.items or offset >= page.total else offset


def _form(**fields: object) -> dict[str, str]:
    """The form fields that are set (a field left out takes the service's default)."""
    return {key: str(value) for key, value in fields.items() if value is not None}


# -- health ----------------------------------------------------------------------------------


@_route("GET", "/healthz")
def health() -> Call[Health]:
    """``GET /healthz``: the process is alive."""
    return Call("GET", "/healthz", _model(Health))


@_route("GET", "/readyz")
def ready() -> Call[Readiness]:
    """``GET /readyz``: the model, database and indexes (``status`` says whether ready)."""
    return Call(
        "GET", "/readyz", _model(Readiness), answers=frozenset({200, 503}), retry=False
    )


@_route("GET", "/metrics")
def metrics() -> Call[str]:
    """``GET /metrics``: Prometheus text (a metrics or admin key)."""
    return Call("GET", "/metrics", lambda response: response.text)


# -- recognition -----------------------------------------------------------------------------


@_route("POST", "/v1/quality")
def quality(
    image: ImageInput, *, face: FaceMode | None = None, face_index: int | None = None
) -> Call[QualityResponse]:
    """``POST /v1/quality``: the Laplacian quality of the face, and where it was found."""
    return Call(
        "POST", "/v1/quality", _model(QualityResponse),
        data=_form(face=face, face_index=face_index), files=[("image", read_image(image))],
    )


@_route("POST", "/v1/detect")
def detect(image: ImageInput) -> Call[DetectResponse]:
    """``POST /v1/detect``: every face in the image, largest first."""
    return Call("POST", "/v1/detect", _model(DetectResponse), files=[("image", read_image(image))])


@_route("POST", "/v1/verify")
def verify(
    image1: ImageInput,
    image2: ImageInput,
    *,
    threshold: float | None = None,
    far: str | None = None,
    face: FaceMode | None = None,
) -> Call[VerifyResponse]:
    """``POST /v1/verify``: are the two faces the same person?"""
    return Call(
        "POST", "/v1/verify", _model(VerifyResponse),
        data=_form(threshold=threshold, far=far, face=face),
        files=[("image1", read_image(image1, "image1")), ("image2", read_image(image2, "image2"))],
    )


@_route("POST", "/v1/identify")
def identify(
    image: ImageInput,
    *,
    gallery: str,
    top_k: int = 5,
    threshold: float | None = None,
    far: str | None = None,
    face: FaceMode | None = None,
    face_index: int | None = None,
) -> Call[IdentifyResponse]:
    """``POST /v1/identify``: who in ``gallery`` is this (open-set)?"""
    return Call(
        "POST", "/v1/identify", _model(IdentifyResponse),
        data=_form(
            gallery=gallery, top_k=top_k, threshold=threshold, far=far, face=face,
            face_index=face_index,
        ),
        files=[("image", read_image(image))],
    )


@_route("POST", "/v1/identify")
def identify_all(
    image: ImageInput,
    *,
    gallery: str,
    top_k: int = 5,
    threshold: float | None = None,
    far: str | None = None,
) -> Call[IdentifyFrameResponse]:
    """``POST /v1/identify`` with ``faces=all``: every face of a frame identified."""
    return Call(
        "POST", "/v1/identify", _model(IdentifyFrameResponse),
        data=_form(gallery=gallery, top_k=top_k, threshold=threshold, far=far, faces="all"),
        files=[("image", read_image(image))],
    )


# -- galleries -------------------------------------------------------------------------------

_GALLERIES = "/v1/galleries"


@_route("POST", _GALLERIES)
def create_gallery(name: str) -> Call[GalleryOut]:
    """``POST /v1/galleries`` (admin)."""
    return Call("POST", _GALLERIES, _model(GalleryOut), json={"name": name})


@_route("GET", _GALLERIES)
def list_galleries(*, offset: int = 0, limit: int = 100) -> Call[GalleryPage]:
    """``GET /v1/galleries``: one page of galleries."""
    return Call(
        "GET", _GALLERIES, _model(GalleryPage), params={"offset": offset, "limit": limit}
    )


@_route("GET", f"{_GALLERIES}/{{gallery}}")
def get_gallery(name: str) -> Call[GalleryOut]:
    """``GET /v1/galleries/{gallery}``."""
    return Call("GET", f"{_GALLERIES}/{_segment(name)}", _model(GalleryOut))


@_route("DELETE", f"{_GALLERIES}/{{gallery}}")
def delete_gallery(name: str) -> Call[None]:
    """``DELETE /v1/galleries/{gallery}`` (admin): its subjects and faces go too."""
    return Call("DELETE", f"{_GALLERIES}/{_segment(name)}", _nothing)


@_route("POST", f"{_GALLERIES}/{{gallery}}/reembed")
def reembed_gallery(name: str) -> Call[ReembedResponse]:
    """``POST /v1/galleries/{gallery}/reembed`` (admin): move it to the served model."""
    return Call("POST", f"{_GALLERIES}/{_segment(name)}/reembed", _model(ReembedResponse))


# -- subjects and faces ----------------------------------------------------------------------


def _subjects(gallery: str) -> str:
    return f"{_GALLERIES}/{_segment(gallery)}/subjects"


@_route("POST", f"{_GALLERIES}/{{gallery}}/subjects")
def create_subject(
    gallery: str,
    subject: str,
    *,
    name: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Call[SubjectOut]:
    """``POST /v1/galleries/{gallery}/subjects`` (admin)."""
    body: dict[str, Any] = {"id": subject, "metadata": dict(metadata or {})}
    if name is not None:
        body["name"] = name
    return Call("POST", _subjects(gallery), _model(SubjectOut), json=body)


@_route("GET", f"{_GALLERIES}/{{gallery}}/subjects")
def list_subjects(gallery: str, *, offset: int = 0, limit: int = 100) -> Call[SubjectPage]:
    """``GET /v1/galleries/{gallery}/subjects``: one page of subjects."""
    return Call(
        "GET", _subjects(gallery), _model(SubjectPage), params={"offset": offset, "limit": limit}
    )


@_route("GET", f"{_GALLERIES}/{{gallery}}/subjects/{{subject}}")
def get_subject(gallery: str, subject: str) -> Call[SubjectDetail]:
    """``GET /v1/galleries/{gallery}/subjects/{subject}``: with its faces."""
    return Call("GET", f"{_subjects(gallery)}/{_segment(subject)}", _model(SubjectDetail))


@_route("DELETE", f"{_GALLERIES}/{{gallery}}/subjects/{{subject}}")
def delete_subject(gallery: str, subject: str) -> Call[None]:
    """``DELETE /v1/galleries/{gallery}/subjects/{subject}`` (admin)."""
    return Call("DELETE", f"{_subjects(gallery)}/{_segment(subject)}", _nothing)


@_route("POST", f"{_GALLERIES}/{{gallery}}/subjects/{{subject}}/faces")
def enroll(
    gallery: str,
    subject: str,
    images: Sequence[ImageInput],
    *,
    face: FaceMode | None = None,
    face_index: int | None = None,
) -> Call[EnrollResponse]:
    """``POST /v1/galleries/{gallery}/subjects/{subject}/faces`` (admin): enrolls the
    images together (one bad file fails them all); those under the quality floor come
    back in ``refused``."""
    return Call(
        "POST", f"{_subjects(gallery)}/{_segment(subject)}/faces", _model(EnrollResponse),
        data=_form(face=face, face_index=face_index),
        files=[("images", read_image(image, f"image{i}")) for i, image in enumerate(images)],
    )


@_route("GET", f"{_GALLERIES}/{{gallery}}/subjects/{{subject}}/faces/{{face}}/image")
def face_image(gallery: str, subject: str, face: int) -> Call[bytes]:
    """``GET .../faces/{face}/image``: the stored face (PNG)."""
    path = f"{_subjects(gallery)}/{_segment(subject)}/faces/{_segment(face)}/image"
    return Call("GET", path, lambda response: response.content)


@_route("DELETE", f"{_GALLERIES}/{{gallery}}/subjects/{{subject}}/faces/{{face}}")
def delete_face(gallery: str, subject: str, face: int) -> Call[None]:
    """``DELETE .../faces/{face}`` (admin)."""
    return Call(
        "DELETE", f"{_subjects(gallery)}/{_segment(subject)}/faces/{_segment(face)}", _nothing
    )
