"""Dependencies: the objects on ``app.state``, API-key roles, and upload reading.

The key checks here run twice for a guarded route: ``service.api.guard.GuardedRoute`` runs
them from the headers before the body is read (``required_access`` tells it which), and
the dependencies run them again as FastAPI resolves the route, which also declares the
``X-API-Key`` security scheme in the OpenAPI schema.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from enum import Enum
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security, UploadFile, status
from fastapi.dependencies.models import Dependant
from fastapi.security import APIKeyHeader

from service.errors import PayloadTooLargeError
from service.recognition import RecognitionService, Upload
from service.settings import Settings

logger = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
_api_key = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="An API key.")


class Role(str, Enum):
    """What a key is: one of the configured key lists."""

    METRICS = "metrics"
    CLIENT = "client"
    ADMIN = "admin"


class Access(Enum):
    """What a route asks of its caller, and the roles that satisfy it."""

    METRICS = frozenset({Role.METRICS, Role.ADMIN})
    CLIENT = frozenset({Role.CLIENT, Role.ADMIN})
    ADMIN = frozenset({Role.ADMIN})


# The dependencies are ``async def``, although they never wait: FastAPI runs a plain
# ``def`` dependency in the thread pool, one thread hop each per request.


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_recognition(request: Request) -> RecognitionService:
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


def key_role(settings: Settings, key: str | None) -> Role | None:
    """The role of ``key``, or None when it is missing or not a configured key."""
    if not key:
        return None
    # All three lists are compared, so timing does not tell which list a key is in.
    roles = [
        (Role.ADMIN, _matches(key, settings.admin_keys)),
        (Role.CLIENT, _matches(key, settings.client_keys)),
        (Role.METRICS, _matches(key, settings.metrics_keys)),
    ]
    return next((role for role, found in roles if found), None)


_NEEDS = {
    Access.METRICS: "a metrics or an admin key",
    Access.CLIENT: "a client or an admin key",
    Access.ADMIN: "an admin key",
}


def check_access(settings: Settings, access: Access, key: str | None) -> Role:
    """The caller's role if it may use a route asking ``access``.

    Raises:
        HTTPException: 401 without a valid key, 403 for a key of a role too weak.
    """
    if settings.auth_disabled:
        return Role.ADMIN
    if access is Access.METRICS and settings.metrics_public:
        return Role.METRICS
    role = key_role(settings, key)
    if role is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            f"a valid API key is required in the {API_KEY_HEADER} header",
            headers={"WWW-Authenticate": "APIKey"},
        )
    if role not in access.value:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"this operation needs {_NEEDS[access]}")
    return role


KeyDep = Annotated[str | None, Security(_api_key)]


async def caller_role(settings: SettingsDep, key: KeyDep = None) -> Role:
    """The role of the caller's key; 401 without a valid client or admin key."""
    return check_access(settings, Access.CLIENT, key)


async def require_admin(settings: SettingsDep, key: KeyDep = None) -> Role:
    """401 without a valid key, 403 unless the caller holds an admin key."""
    return check_access(settings, Access.ADMIN, key)


async def require_metrics_reader(settings: SettingsDep, key: KeyDep = None) -> Role:
    """A metrics or admin key, unless ``LRFR_METRICS_PUBLIC`` opens /metrics."""
    return check_access(settings, Access.METRICS, key)


ClientRole = Annotated[Role, Depends(caller_role)]
AdminRole = Annotated[Role, Depends(require_admin)]
MetricsRole = Annotated[Role, Depends(require_metrics_reader)]

#: The dependencies that guard routes, and what each asks of the caller's key.
_ACCESS_OF: dict[Callable[..., Any], Access] = {
    caller_role: Access.CLIENT,
    require_admin: Access.ADMIN,
    require_metrics_reader: Access.METRICS,
}


def required_access(dependant: Dependant) -> Access | None:
    """What a route's key dependencies (anywhere in its dependency tree) ask; None if open.

    When several apply, the strongest wins (admin over client over metrics).
    """
    found: set[Access] = set()
    stack = [dependant]
    while stack:
        current = stack.pop()
        if current.call in _ACCESS_OF:
            found.add(_ACCESS_OF[current.call])
        stack.extend(current.dependencies)
    for access in (Access.ADMIN, Access.CLIENT, Access.METRICS):
        if access in found:
            return access
    return None


async def read_upload(file: UploadFile, *, field: str, settings: Settings) -> Upload:
    """Reads one uploaded file, refusing it (413) past ``max_upload_bytes``.

    The guard already refuses a larger part as it streams; this is the last line.
    """
    limit = settings.max_upload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLargeError(
            f"{field} ({file.filename}): the file is over the upload limit of {limit} bytes "
            "(LRFR_MAX_UPLOAD_BYTES)"
        )
    return Upload(data=data, field=field, filename=file.filename)
