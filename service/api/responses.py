"""The error body, and the error answers each route declares in the OpenAPI schema."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    """Every error answer of the API: ``{"detail": ...}``."""

    detail: str | list[dict[str, Any]] | dict[str, Any] = Field(
        description="What went wrong: a message; for a 422 from request validation, one "
        "entry per problem (loc, msg, type); for an enrollment refused in full, the message "
        "and the refused faces."
    )


_WHY: dict[int, str] = {
    400: "The image is empty, truncated or corrupt, or the body cannot be parsed.",
    401: "No valid API key in the X-API-Key header.",
    403: "The key's role may not do this (an admin key, or for /metrics a metrics key).",
    404: "No such gallery, subject or face.",
    409: "A duplicate name or id, or a gallery of another model version (re-embed it).",
    413: "The request body, a file in it, or an image's pixel count is over its limit.",
    415: "The file is not an image in an accepted format.",
    422: "A missing, invalid or repeated field, or a request the service cannot answer "
    "as asked (e.g. top_k over LRFR_MAX_TOP_K).",
    503: "The service is starting or stopping.",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route for these error statuses, each with the error body."""
    return {code: {"model": ErrorBody, "description": _WHY[code]} for code in codes}
