"""A typed Python client of the lrfr service: ``Client`` (sync) and ``AsyncClient``.

Installed with the base package (``pip install lrfr``: httpx and pydantic, no torch, no
service dependencies). Answers are the service's own response models
(``service.schemas``); errors are ``ApiError`` subclasses carrying the service's status,
code and message; answers 429 and 503 are retried with back-off (``Retry``).

Example:
    >>> from lrfr.client import Client  # doctest: +SKIP
    >>> with Client("http://127.0.0.1:8000", api_key="...") as lrfr:  # doctest: +SKIP
    ...     lrfr.create_gallery("staff")
    ...     lrfr.create_subject("staff", "s3", name="Subject 3")
    ...     lrfr.enroll("staff", "s3", ["s3/1.pgm", "s3/2.pgm"])
    ...     lrfr.identify("probe.jpg", gallery="staff").decision
"""

from lrfr.client.aio import AsyncClient
from lrfr.client.calls import ROUTES, FaceMode, ImageInput, Retry
from lrfr.client.errors import (
    ApiError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    LrfrError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    ServiceUnavailableError,
    UnprocessableError,
    UnsupportedMediaTypeError,
)
from lrfr.client.sync import Client

__all__ = [
    "ROUTES",
    "ApiError",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ConflictError",
    "FaceMode",
    "ImageInput",
    "LrfrError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitedError",
    "Retry",
    "ServerError",
    "ServiceUnavailableError",
    "UnprocessableError",
    "UnsupportedMediaTypeError",
]
