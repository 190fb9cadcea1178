"""Dependencies: the objects on ``app.state``, API-key roles, and upload reading."""

from __future__ import annotations

import hmac
import logging
from enum import Enum
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security, UploadFile, status
from fastapi.security import APIKeyHeader

from service.errors import PayloadTooLargeError
from service.recognition import RecognitionService, Upload
from service.settings import Settings

logger = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
_api_key = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="An API key.")


class Role(str, Enum):
    CLIENT = "client"
    ADMIN = "admin"


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_recognition(request: Request) -> RecognitionService:
    service = getattr(request.app.state, "recognition", None)
    if service is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the service is starting")
    return service


SettingsDep = Annotated[Settings, Depends(get_settings)]
RecognitionDep = Annotated[RecognitionService, Depends(get_recognition)]


def _matches(key: str, keys: list[str]) -> bool:
    # compare_digest against every key, so timing does not reveal which one nearly matched
    found = False
    for candidate in keys:
        found |= hmac.compare_digest(key.encode(), candidate.encode())
    return found


def caller_role(
    settings: SettingsDep, key: Annotated[str | None, Security(_api_key)] = None
) -> Role:
    """The role of the caller's key; 401 without a valid key."""
    if settings.auth_disabled:
        return Role.ADMIN
    if key and _matches(key, settings.admin_keys):
        return Role.ADMIN
    if key and _matches(key, settings.client_keys):
        return Role.CLIENT
    raise HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        f"a valid API key is required in the {API_KEY_HEADER} header",
        headers={"WWW-Authenticate": "APIKey"},
    )


def require_admin(role: Annotated[Role, Depends(caller_role)]) -> Role:
    """403 unless the caller holds an admin key."""
    if role is not Role.ADMIN:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this operation needs an admin key")
    return role


ClientRole = Annotated[Role, Depends(caller_role)]
AdminRole = Annotated[Role, Depends(require_admin)]


async def read_upload(file: UploadFile, *, field: str, settings: Settings) -> Upload:
    """Reads one uploaded file, refusing it (413) past ``max_upload_bytes``."""
    limit = settings.max_upload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLargeError(
            f"{field} ({file.filename}): the file is over the upload limit of {limit} bytes "
            "(LRFR_MAX_UPLOAD_BYTES)"
        )
    return Upload(data=data, field=field, filename=file.filename)
