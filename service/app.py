"""The FastAPI application factory and its lifespan.

Everything stateful (settings, model, batcher, database engine, indexes, metrics) is
created by ``create_app``/the lifespan and lives on ``app.state``; routes reach it
through the dependencies in ``service.api.deps``. Nothing happens at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.routing import Match

from models.embedder import OnnxEmbedder
from service.api import galleries, health, metrics, recognition
from service.api.console import install_console
from service.api.docs import install_docs
from service.api.guard import CloseUnreadBody
from service.api.openapi import install_openapi
from service.backends import create_backend
from service.batching import BatchingEmbedder
from service.db import create_db_engine, create_session_factory
from service.errors import ServiceError
from service.galleries import GalleryService
from service.index_sync import IndexSync, model_key
from service.malloc import keep_buffers_on_heap
from service.metrics import RequestMetricsMiddleware, ServiceMetrics
from service.migrate import upgrade_database
from service.recognition import RecognitionService
from service.settings import BUNDLED_MODEL_PATH, Settings

logger = logging.getLogger(__name__)


async def _flush_periodically(service: GalleryService, seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            # retraining an index that outgrew its training runs here, off the requests
            await run_in_threadpool(service.maintain)
            await run_in_threadpool(service.flush)
        except Exception:  # keep flushing later; the database stays the source of truth
            logger.exception("periodic index maintenance or flush failed")


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Loads the model, migrates the database, loads or rebuilds the indexes."""
    settings: Settings = app.state.settings
    metrics_: ServiceMetrics = app.state.metrics
    keep_buffers_on_heap(settings.malloc_mmap_threshold_mb)  # in every worker process
    if settings.auth_disabled:
        logger.warning(
            "LRFR_DEV_MODE is on and no API keys are set: EVERY CALLER IS AN ADMIN. "
            "Never run this in deployment."
        )
    embedder = await run_in_threadpool(
        lambda: OnnxEmbedder(
            settings.model_path or BUNDLED_MODEL_PATH,  # the settings fill it in
            providers=settings.execution_providers or None,
            threads=settings.ort_threads,
            spin=settings.ort_spin,
        )
    )
    model = embedder.metadata
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_db_engine(settings.resolved_database_url)
    try:
        if settings.auto_migrate:
            await run_in_threadpool(upgrade_database, engine)
        backend = await run_in_threadpool(
            create_backend, settings, model, model_key(model.name, model.version)
        )
        gallery_service = GalleryService(
            IndexSync(
                sessions=create_session_factory(engine),
                backend=backend,
                model=model,
                metrics=metrics_,
            )
        )
        try:
            report = await run_in_threadpool(gallery_service.load_all)
        except BaseException:
            gallery_service.close()
            raise
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
            "serving %s %s%s on %s; %d galleries loaded, %d rebuilt, %d on another model",
            model.name,
            model.version,
            "" if model.gate is None else f" (gated at q {model.gate.threshold:.3f}: "
            f"{model.gate.sharp.name} above, {model.gate.blurred.name} below)",
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
            await run_in_threadpool(gallery_service.close)
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


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


async def _method_not_allowed(request: Request, exc: Exception) -> JSONResponse:
    # Starlette's 405 names the methods of the first route on the path only; "Allow" must
    # name every method the path answers (GET and DELETE of one gallery, say).
    assert isinstance(exc, HTTPException)

    def answers(method: str) -> bool:
        probe = {**request.scope, "method": method}
        return any(route.matches(probe)[0] is Match.FULL for route in request.app.router.routes)

    allowed = [method for method in _METHODS if answers(method)]
    headers = {**(exc.headers or {}), "Allow": ", ".join(allowed)}
    return JSONResponse({"detail": exc.detail}, status_code=405, headers=headers)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Builds the application.

    Args:
        settings: the configuration; read from ``LRFR_*`` environment variables if None.

    Returns:
        The FastAPI app; the model and database are opened by its lifespan. Keys and body
        limits are checked by its routes (``service.api.guard.GuardedRoute``) before any
        body is read.
    """
    settings = settings if settings is not None else Settings()
    app = FastAPI(
        title="lrfr",
        summary="Low-resolution face recognition: quality, 1:1 verification, 1:N identification.",
        version="0.2.0",  # the API's: docs/service.md, "API versions"
        lifespan=lifespan,
        docs_url=None,  # install_docs: the same pages, their scripts served from here
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = ServiceMetrics(gallery_labels=settings.metrics_gallery_labels)
    app.state.recognition = None
    app.state.engine = None
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for router in (health.router, recognition.router, galleries.router, metrics.router):
        app.include_router(router)

    app.add_exception_handler(405, _method_not_allowed)
    install_openapi(app)
    install_docs(app)
    install_console(app)
    # The last added runs first: metrics see every answer, including the guard's.
    app.add_middleware(CloseUnreadBody)
    app.add_middleware(RequestMetricsMiddleware, metrics=app.state.metrics)
    return app
