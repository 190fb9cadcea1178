"""Errors raised by the service objects, each carrying its HTTP status and a message."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """Base of the errors that the API turns into JSON answers (never a 500).

    Attributes:
        status_code: the HTTP status of the answer.
        detail: a message for the caller, or a structured detail.
    """

    status_code = 400

    def __init__(self, detail: str | dict[str, Any]) -> None:
        super().__init__(detail if isinstance(detail, str) else detail.get("message", ""))
        self.detail = detail


class InvalidImageError(ServiceError):
    """The file is empty, truncated or corrupt (400, the base's status)."""


class UnsupportedImageError(ServiceError):
    """The file is not an image in an accepted format."""

    status_code = 415


class PayloadTooLargeError(ServiceError):
    """The upload or the decoded image is over its configured limit."""

    status_code = 413


class NotFoundError(ServiceError):
    status_code = 404


class ConflictError(ServiceError):
    """A duplicate name or id."""

    status_code = 409


class ModelMismatchError(ConflictError):
    """A gallery was embedded with another model version than the one served."""


class UnusableFaceError(ServiceError):
    """The image was read, but no face in it can be used for the request (422)."""

    status_code = 422


class QualityRefusedError(UnusableFaceError):
    """Every face of an enrollment was under the quality floor."""
