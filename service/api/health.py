"""Liveness and readiness."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from service.schemas import Health, Readiness

logger = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive (no auth, no checks)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(request: Request) -> JSONResponse:
    """Model loaded (its name, version, backbone, head and quality gate), database
    reachable, every index consistent with the database."""
    service = getattr(request.app.state, "recognition", None)
    engine = getattr(request.app.state, "engine", None)
    problems: list[str] = []
    model = service.served_model if service is not None else None
    if model is None:
        problems.append("model not loaded")
    database = False
    if engine is not None:
        try:
            await run_in_threadpool(_ping, engine)
            database = True
        except Exception as exc:  # any driver error means "not reachable"
            problems.append(f"database unreachable: {exc.__class__.__name__}: {exc}")
    else:
        problems.append("database not configured")
    index = False
    if service is not None and database:
        index_problems = await run_in_threadpool(service.galleries.consistency_problems)
        problems.extend(index_problems)
        index = not index_problems
    ready = not problems
    body = Readiness(
        status="ready" if ready else "not ready",
        model=model,
        database=database,
        index=index,
        problems=problems,
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ready else 503)


def _ping(engine: object) -> None:
    with engine.connect() as connection:  # type: ignore[attr-defined]
        connection.execute(text("SELECT 1"))
