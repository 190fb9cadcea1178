"""The FastAPI application factory and its lifespan.

Everything stateful (settings, model, batcher, database engine, indexes, metrics) is
created by ``create_app``/the lifespan and lives on ``app.state``; routes reach it
through the dependencies in ``service.api.deps``. Nothing happens at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from models.embedder import OnnxEmbedder
from service.api import galleries, health, metrics, recognition
from service.batching import BatchingEmbedder
from service.db import create_db_engine, create_session_factory
from service.errors import ServiceError
from service.galleries import GalleryService
from service.index import IndexStore
from service.metrics import ServiceMetrics
from service.migrate import upgrade_database
from service.recognition import RecognitionService
from service.settings import Settings

logger = logging.getLogger(__name__)

#: Room for multipart boundaries and form fields on top of the files themselves.
_MULTIPART_OVERHEAD = 64 * 1024
#: Largest body of a request without files (JSON): metadata is capped far below this.
MAX_JSON_BODY = 1024 * 1024


async def _flush_periodically(service: GalleryService, seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await run_in_threadpool(service.flush)
        except Exception:  # keep flushing later; the database stays the source of truth
            logger.exception("periodic index flush failed")


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Loads the model, migrates the database, loads or rebuilds the indexes."""
    settings: Settings = app.state.settings
    metrics_: ServiceMetrics = app.state.metrics
    if settings.auth_disabled:
        logger.warning(
            "LRFR_DEV_MODE is on and no API keys are set: EVERY CALLER IS AN ADMIN. "
            "Never run this in deployment."
        )
    embedder = await run_in_threadpool(
        lambda: OnnxEmbedder(
            settings.model_path,
            providers=settings.execution_providers or None,
            threads=settings.ort_threads,
        )
    )
    model = embedder.metadata
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_db_engine(settings.resolved_database_url)
    try:
        if settings.auto_migrate:
            await run_in_threadpool(upgrade_database, engine)
        store = IndexStore(settings.index_dir)
        gallery_service = GalleryService(
            sessions=create_session_factory(engine),
            store=store,
            model=model,
            metrics=metrics_,
            search_threads=settings.faiss_threads,
        )
        report = await run_in_threadpool(gallery_service.load_all)
        app.state.startup_report = report
        batcher = BatchingEmbedder(
            embedder,
            window_s=settings.batch_window_ms / 1000.0,
            max_batch=settings.max_batch_size,
            on_batch=metrics_.observe_batch,
        )
        await batcher.start()
        app.state.engine = engine
        app.state.recognition = RecognitionService(
            settings=settings, model=model, batcher=batcher, galleries=gallery_service
        )
        flusher = asyncio.create_task(
            _flush_periodically(gallery_service, settings.index_flush_seconds)
        )
        logger.info(
            "serving %s %s on %s; %d galleries loaded, %d rebuilt, %d on another model",
            model.name,
            model.version,
            embedder.providers,
            len(report.loaded),
            len(report.rebuilt),
            len(report.skipped),
        )
        try:
            yield
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await batcher.stop()
            await run_in_threadpool(gallery_service.flush)
            app.state.recognition = None
    finally:
        engine.dispose()


async def _service_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    try:
        return await request_validation_exception_handler(request, exc)
    except ValueError:
        # The errors echo the input, and JSON cannot carry NaN or Infinity: leave inputs out
        # rather than failing with a 500.
        errors = [
            {key: value for key, value in error.items() if key not in ("input", "ctx")}
            for error in exc.errors()
        ]
        return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Builds the application.

    Args:
        settings: the configuration; read from ``LRFR_*`` environment variables if None.

    Returns:
        The FastAPI app; the model and database are opened by its lifespan.
    """
    settings = settings if settings is not None else Settings()
    app = FastAPI(
        title="lrfr",
        summary="Low-resolution face recognition: quality, 1:1 verification, 1:N identification.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = ServiceMetrics()
    app.state.recognition = None
    app.state.engine = None
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for router in (health.router, recognition.router, galleries.router, metrics.router):
        app.include_router(router)

    max_body = settings.max_upload_bytes * settings.max_files_per_request + _MULTIPART_OVERHEAD

    @app.middleware("http")
    async def limit_and_measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        length = request.headers.get("content-length")
        content_type = request.headers.get("content-type", "")
        limit = max_body if content_type.startswith("multipart/") else MAX_JSON_BODY
        if length is not None and length.isdigit() and int(length) > limit:
            response: Response = JSONResponse(
                {"detail": f"request body of {length} bytes is over the limit of {limit}"},
                status_code=413,
            )
        else:
            response = await call_next(request)
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "unmatched")
        app.state.metrics.requests.labels(endpoint, request.method, str(response.status_code)).inc()
        app.state.metrics.latency.labels(endpoint, request.method).observe(
            time.perf_counter() - started
        )
        return response

    return app
