"""``lrfr serve``: run the HTTP service (FastAPI + ONNX Runtime + FAISS) with uvicorn.

Configuration comes from ``LRFR_*`` environment variables (``service.settings``); this
command checks them and the model artifact first, so a broken deployment stops with one
clear line instead of a traceback.
"""

from __future__ import annotations

import logging

import typer

logger = logging.getLogger(__name__)


def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0: all)."),
    port: int = typer.Option(8000, help="TCP port."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
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
    # One process: the micro-batcher and the FAISS indexes live in it. Scale with replicas.
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, workers=1)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
