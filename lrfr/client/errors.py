"""Exceptions of the client: one per kind of error answer, each carrying the service's
status, a short code and its message."""

from __future__ import annotations

import json
from typing import Any

import httpx

#: The code of an error whose answer carries none, by HTTP status.
_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "rate_limited",
    503: "unavailable",
}


class LrfrError(Exception):
    """Base of every error the client raises."""


class ApiError(LrfrError):
    """The service answered with an error status.

    Attributes:
        status: the HTTP status.
        code: the service's code (``no_face``, ``several_faces``, ``quality_refused``, ...),
            ``invalid_request`` for request validation errors, otherwise one named after
            the status (``not_found``, ``conflict``, ...).
        message: the service's message.
        detail: the answer's ``detail`` as the service sent it (a message, a list of
            validation problems, or an object such as the refused faces).
        response: the HTTP answer.
    """

    def __init__(
        self, *, status: int, code: str, message: str, detail: Any, response: httpx.Response
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
        self.response = response


class BadRequestError(ApiError):
    """400: an empty, truncated or corrupt image, or a body that cannot be parsed."""


class AuthenticationError(ApiError):
    """401: no valid API key."""


class PermissionDeniedError(ApiError):
    """403: the key's role may not do this."""


class NotFoundError(ApiError):
    """404: no such gallery, subject or face."""


class ConflictError(ApiError):
    """409: a duplicate name or id, or a gallery of another model version."""


class PayloadTooLargeError(ApiError):
    """413: a body, a file or an image over its limit."""


class UnsupportedMediaTypeError(ApiError):
    """415: not an image in an accepted format."""


class UnprocessableError(ApiError):
    """422: an invalid request, or one the service cannot answer (no face, ...)."""


class RateLimitedError(ApiError):
    """429: too many requests (after the client's retries)."""


class ServiceUnavailableError(ApiError):
    """503: the service is starting or stopping (after the client's retries)."""


class ServerError(ApiError):
    """Any other 5xx."""


_CLASSES: dict[int, type[ApiError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    422: UnprocessableError,
    429: RateLimitedError,
    503: ServiceUnavailableError,
}


def _validation_message(problems: list[Any]) -> str:
    parts = []
    for problem in problems:
        if isinstance(problem, dict):
            where = ".".join(str(part) for part in problem.get("loc", ()))
            parts.append(f"{where}: {problem.get('msg', '')}" if where else str(problem.get("msg")))
        else:
            parts.append(str(problem))
    return "; ".join(parts)


def error_from_response(response: httpx.Response) -> ApiError:
    """The exception for an error answer (``{"detail": ...}``, or any body at all)."""
    status = response.status_code
    code = _CODES.get(status, f"http_{status}")
    try:
        detail: Any = response.json().get("detail")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        detail = response.text[:1000]
    if isinstance(detail, dict):
        code = str(detail.get("code", code))
        message = str(detail.get("message", detail))
    elif isinstance(detail, list):
        code = "invalid_request"
        message = _validation_message(detail)
    else:
        message = str(detail) if detail else response.reason_phrase
    kind = _CLASSES.get(status, ServerError if status >= 500 else ApiError)
    return kind(status=status, code=code, message=message, detail=detail, response=response)
