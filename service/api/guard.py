"""What is checked before a route reads its body: the caller's key, and the body's size.

FastAPI parses a route's body (spooling uploads to disk) before it resolves any
dependency, so a key checked by a dependency comes too late: a caller without a key
could make the service read and store hundreds of megabytes first. ``GuardedRoute`` runs
between routing and body parsing: it checks the key from the headers (401/403), refuses a
declared ``Content-Length`` over the route's limit (413), and hands FastAPI a ``receive``
that meters the body as it streams, chunked or not: 413 as soon as the request or one of
its files passes its limit, 422 when a single-valued field comes twice. ``CloseUnreadBody``
closes the connection after any answer given before the body was read to its end, so the
server does not go on reading the rest.
"""

from __future__ import annotations

import collections
import typing
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request, Response, params
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.deps import API_KEY_HEADER, check_access, required_access
from service.settings import Settings

#: Largest body of a request without files (JSON): metadata is capped far below this.
MAX_JSON_BODY = 1024 * 1024
#: Room for multipart boundaries and part headers on top of the files and fields.
MULTIPART_OVERHEAD = 64 * 1024
#: Largest form field that is not a file (gallery names, numbers).
FORM_FIELD_LIMIT = 16 * 1024


def _too_large(message: str) -> HTTPException:
    # An HTTPException, not a ServiceError: raised from inside FastAPI's body parsing, any
    # other exception would be turned into "400 There was an error parsing the body".
    return HTTPException(413, message)


@dataclass(frozen=True)
class BodyLimits:
    """The limits of one route's body under the current settings.

    Attributes:
        total: bytes of the whole body.
        file: bytes of one file part.
        field: bytes of one form field that is not a file.
        file_parts: how many parts each file field may have.
        once: fields that may be sent only once.
    """

    total: int
    file: int
    field: int
    file_parts: dict[str, int]
    once: frozenset[str]


@dataclass(frozen=True)
class BodyShape:
    """What a route reads from its body, from its declared parameters.

    Attributes:
        files: the file fields, each with whether it takes several files.
        fields: the other form fields, each with whether it takes several values.
        json: whether the route reads a JSON body.
    """

    files: tuple[tuple[str, bool], ...] = ()
    fields: tuple[tuple[str, bool], ...] = ()
    json: bool = False

    @property
    def reads_body(self) -> bool:
        return bool(self.files or self.fields or self.json)

    @property
    def reads_form(self) -> bool:
        return bool(self.files or self.fields)

    @classmethod
    def of(cls, dependant: Dependant) -> BodyShape:
        files: list[tuple[str, bool]] = []
        fields: list[tuple[str, bool]] = []
        json = False
        for field in _body_fields(dependant):
            many = _takes_many(field.field_info.annotation)
            if isinstance(field.field_info, params.File):
                files.append((field.alias, many))
            elif isinstance(field.field_info, params.Form):
                fields.append((field.alias, many))
            else:
                json = True
        return cls(files=tuple(files), fields=tuple(fields), json=json)

    def limits(self, settings: Settings) -> BodyLimits:
        if not self.reads_form:
            return BodyLimits(MAX_JSON_BODY, 0, 0, {}, frozenset())
        file_parts = {
            name: settings.max_files_per_request if many else 1 for name, many in self.files
        }
        total = (
            sum(file_parts.values()) * settings.max_upload_bytes
            + len(self.fields) * FORM_FIELD_LIMIT
            + MULTIPART_OVERHEAD
        )
        once = frozenset(name for name, many in self.files + self.fields if not many)
        return BodyLimits(total, settings.max_upload_bytes, FORM_FIELD_LIMIT, file_parts, once)


def _body_fields(dependant: Dependant) -> Iterator[Any]:
    yield from dependant.body_params
    for sub in dependant.dependencies:
        yield from _body_fields(sub)


def _takes_many(annotation: object) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, set, frozenset):
        return True
    # Optional[list[...]] and other unions: many if any member is
    return origin is not None and any(_takes_many(arg) for arg in typing.get_args(annotation))


class _PartMeter:
    """Follows a multipart body as it streams: the size of each part, the parts per field.

    A body this cannot parse is left to Starlette's parser, which answers 400.
    """

    def __init__(self, boundary: bytes, limits: BodyLimits) -> None:
        self._limits = limits
        self._counts: collections.Counter[str] = collections.Counter()
        self._header = bytearray()
        self._value = bytearray()
        self._disposition = b""
        self._refusal = ""
        self._limit = 0
        self._size = 0
        self._parser: MultipartParser | None = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
            },
        )

    @classmethod
    def for_content_type(cls, content_type: str | None, limits: BodyLimits) -> _PartMeter | None:
        if not content_type:
            return None
        kind, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            return None
        return cls(boundary, limits)

    def feed(self, chunk: bytes) -> None:
        if self._parser is None:
            return
        try:
            self._parser.write(chunk)
        except MultipartParseError:
            self._parser = None

    def _part_begin(self) -> None:
        self._disposition = b""
        self._header.clear()
        self._value.clear()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        if bytes(self._header).lower() == b"content-disposition":
            self._disposition = bytes(self._value)
        self._header.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        self._counts[name] += 1
        count = self._counts[name]
        if name in self._limits.once and count > 1:
            raise HTTPException(
                422,
                [
                    {
                        "type": "duplicate_field",
                        "loc": ["body", name],
                        "msg": f"{name} may be sent only once",
                    }
                ],
            )
        allowed = self._limits.file_parts.get(name)
        if allowed is not None and count > allowed:
            raise _too_large(f"at most {allowed} files in {name} (LRFR_MAX_FILES_PER_REQUEST)")
        if filename is None:
            self._limit = self._limits.field
            self._refusal = f"form field {name} is over the limit of {self._limit} bytes"
        else:
            label = f"{name} ({filename.decode('utf-8', 'replace')})" if filename else name
            self._limit = self._limits.file
            self._refusal = (
                f"{label}: the file is over the upload limit of {self._limit} bytes "
                "(LRFR_MAX_UPLOAD_BYTES)"
            )
        self._size = 0

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self._size += end - start
        if self._size > self._limit:
            raise _too_large(self._refusal)


class MeteredBody:
    """A ``receive`` that counts the body as it streams and refuses it past its limits.

    Args:
        receive: the server's ``receive``.
        limits: the route's limits.
        content_type: the request's ``Content-Type`` (multipart bodies are followed part
            by part).
    """

    def __init__(self, receive: Receive, limits: BodyLimits, content_type: str | None) -> None:
        self._receive = receive
        self._limits = limits
        self._parts = _PartMeter.for_content_type(content_type, limits)
        self.received = 0

    async def __call__(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            self.received += len(chunk)
            if self._parts is not None and chunk:
                self._parts.feed(chunk)
            if self.received > self._limits.total:
                raise _too_large(
                    f"the request body is over the limit of {self._limits.total} bytes"
                )
        return message


def _declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    return int(value) if value is not None and value.isdigit() else None


class GuardedRoute(APIRoute):
    """An ``APIRoute`` that checks the key and meters the body before FastAPI reads it.

    The key a route needs comes from its dependencies (``deps.required_access``), the
    limits from its body parameters (``BodyShape``) and the settings on ``app.state``.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        access = required_access(self.dependant)
        shape = BodyShape.of(self.dependant)

        async def guarded(request: Request) -> Response:
            settings: Settings = request.app.state.settings
            if access is not None:
                check_access(settings, access, request.headers.get(API_KEY_HEADER))
            if shape.reads_body:
                limits = shape.limits(settings)
                length = _declared_length(request)
                if length is not None and length > limits.total:
                    raise _too_large(
                        f"request body of {length} bytes is over the limit of {limits.total}"
                    )
                # multipart parts are followed only where the route reads a form
                content_type = request.headers.get("content-type") if shape.reads_form else None
                metered = MeteredBody(request.receive, limits, content_type)
                request = Request(request.scope, metered)
            return await handler(request)

        return guarded


class CloseUnreadBody:
    """Closes the connection after an answer given before the request body was all read.

    Otherwise a keep-alive server reads (and discards) the rest of the body, however
    large, to reach the next request on the connection.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        done = False

        async def receive_to_end() -> Message:
            nonlocal done
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                done = True
            return message

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and not done:
                headers = [*message.get("headers", []), (b"connection", b"close")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive_to_end, send_closing)


def _has_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return True
    return False
