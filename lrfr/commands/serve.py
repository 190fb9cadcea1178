"""``lrfr serve``: run the HTTP service (FastAPI + ONNX Runtime + FAISS) with uvicorn.

Configuration comes from ``LRFR_*`` environment variables (``service.settings``); this
command checks them and the model artifact first, so a broken deployment stops with one
clear line instead of a traceback. ``--workers N`` (or ``LRFR_WORKERS``) runs N processes
on the port; each keeps its own gallery indexes, which follow the database's gallery
revisions, so what one worker writes the others search (see docs/service.md).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from service.settings import Settings

logger = logging.getLogger(__name__)


def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0: all)."),
    port: int = typer.Option(8000, help="TCP port."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
    workers: int = typer.Option(
        1, min=1, envvar="LRFR_WORKERS",
        help="Processes serving the port, each with its own model session, micro-batcher and "
        "gallery indexes; the indexes follow the shared database's revisions.",
    ),
) -> None:
    """Serve quality, verify, identify and gallery management over HTTP (see docs/service.md)."""
    import uvicorn
    from pydantic import ValidationError

    from models.artifact import ArtifactError, load_metadata
    from service.app import create_app
    from service.settings import BUNDLED_MODEL_PATH, Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(error["msg"].removeprefix("Value error, ") for error in exc.errors())
        typer.echo(f"error: invalid settings: {problems}", err=True)
        raise typer.Exit(code=2) from exc
    try:
        # the lifespan loads it again; this fails fast (the settings fill in the bundled path)
        load_metadata(settings.model_path or BUNDLED_MODEL_PATH)
    except ArtifactError as exc:
        typer.echo(f"error: cannot serve model {settings.model_path}: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    if workers == 1:
        uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)
        return
    _prepare_workers(settings, workers)
    # each worker builds its app from the same LRFR_* environment
    uvicorn.run("service.app:create_app", factory=True, host=host, port=port,
                log_level=log_level, workers=workers)


def _prepare_workers(settings: Settings, workers: int) -> None:
    """Migrates the database once, here, so N workers do not race on the schema (they then
    skip it), and splits the cores between the workers' ONNX Runtime sessions unless
    ``LRFR_ORT_THREADS`` says otherwise."""
    from service.db import create_db_engine
    from service.migrate import upgrade_database

    if settings.auto_migrate:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_db_engine(settings.resolved_database_url)
        try:
            upgrade_database(engine)
        finally:
            engine.dispose()
    os.environ["LRFR_AUTO_MIGRATE"] = "false"
    if settings.ort_threads is None:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["LRFR_ORT_THREADS"] = str(threads)
    logger.info("starting %d workers (ONNX Runtime threads each: %s)", workers,
                os.environ.get("LRFR_ORT_THREADS"))


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
