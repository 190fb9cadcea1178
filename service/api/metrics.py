"""Prometheus exposition."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.deps import MetricsRole
from service.api.guard import GuardedRoute
from service.api.responses import errors

router = APIRouter(tags=["metrics"], route_class=GuardedRoute)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
        **errors(401, 403),
    },
)
def metrics(_: MetricsRole, request: Request) -> Response:
    """Request counts, latencies and body sizes per endpoint, embedding batch sizes, gallery
    sizes. Needs a metrics or admin key unless LRFR_METRICS_PUBLIC is set."""
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
