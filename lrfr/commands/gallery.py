"""``lrfr gallery import|export``: a folder per subject into a gallery of a running
service, and a gallery back out (over HTTP, with ``lrfr.client``; no torch needed).

The API key comes from ``LRFR_API_KEY`` (an admin key for import), never from the
command line, where other users of the machine could read it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast

import typer

if TYPE_CHECKING:
    from lrfr.client import AsyncClient

app = typer.Typer(
    name="gallery",
    help="Import a folder per subject into a gallery of a running service, or export one.",
    no_args_is_help=True,
)

URL = typer.Option(
    "http://127.0.0.1:8000", "--url", envvar="LRFR_URL", help="The service's base URL."
)
GALLERY = typer.Option(..., "--gallery", "-g", help="The gallery's name.")
WORKERS = typer.Option(4, "--workers", min=1, max=64, help="Requests in flight at once.")


Step = Callable[[int], None]
T = TypeVar("T")


def _run_with_bar(
    url: str,
    work: Callable[[AsyncClient, Step, Step], Awaitable[T]],
    *,
    unit: str,
    desc: str,
    enabled: bool,
) -> T:
    """``work(client, step, total)`` run to its end with a client of the service at ``url``
    (the key from LRFR_API_KEY) and a tqdm bar that ``step`` advances and ``total`` sizes."""
    from tqdm import tqdm

    from lrfr.client import AsyncClient

    key = _api_key()
    bar = tqdm(total=0, unit=unit, desc=desc, disable=not enabled)

    def total(count: int) -> None:
        bar.total = count
        bar.refresh()

    def step(count: int) -> None:
        bar.update(count)

    async def run() -> T:
        async with AsyncClient(url, key) as client:
            return await work(client, step, total)

    try:
        return asyncio.run(run())
    finally:
        bar.close()


def _api_key() -> str:
    # one INFO line per request would bury the progress bar
    logging.getLogger("httpx").setLevel(logging.WARNING)
    key = os.environ.get("LRFR_API_KEY", "")
    if not key:
        typer.echo("error: set LRFR_API_KEY to an API key of the service", err=True)
        raise typer.Exit(code=2)
    return key


def import_(
    folder: Path = typer.Argument(
        ..., exists=True, file_okay=False, help="One folder of images per subject."
    ),
    gallery: str = GALLERY,
    url: str = URL,
    workers: int = WORKERS,
    face: str | None = typer.Option(
        None, help="How the service reads the images: auto, aligned or box (default: its own)."
    ),
    per_subject: int | None = typer.Option(
        None, min=1, help="Only the first N images of each subject (natural order)."
    ),
    report: Path | None = typer.Option(
        None, help="Write every file's outcome (enrolled, skipped, refused, failed) as JSON."
    ),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Enroll DIR/<subject>/<image> into a gallery (created when missing), several uploads
    at once; files already enrolled for their subject (same content) are skipped, so the
    import can be run again after an interruption. Refused images are listed with the
    service's reason."""
    from lrfr.client import FaceMode
    from lrfr.client.bulk import ImportReport, import_folder, refused_lines

    if face not in (None, "auto", "aligned", "box"):
        raise typer.BadParameter("face must be auto, aligned or box", param_hint="--face")
    mode = cast("FaceMode | None", face)

    def run(client: AsyncClient, step: Step, total: Step) -> Awaitable[ImportReport]:
        return import_folder(
            client, folder, gallery=gallery, workers=workers, face=mode,
            per_subject=per_subject, progress=step, on_total=total,
        )

    outcome = _run_with_bar(url, run, unit="image", desc=f"import {gallery}", enabled=progress)
    typer.echo(
        f"{gallery}: {outcome.subjects} subjects ({outcome.subjects_created} new), "
        f"{outcome.count('enrolled')} images enrolled, {outcome.count('skipped')} already "
        f"enrolled, {outcome.count('refused')} refused, {outcome.count('failed')} failed"
    )
    if outcome.refused:
        typer.echo("refused:")
        for line in refused_lines(outcome.refused):
            typer.echo(f"  {line}")
    if outcome.failed:
        typer.echo("failed (run the import again to retry them):", err=True)
        for line in refused_lines(outcome.failed):
            typer.echo(f"  {line}", err=True)
    if report is not None:
        report.write_text(json.dumps(outcome.to_json(), indent=1) + "\n")
    if outcome.failed:
        raise typer.Exit(code=1)


def export(
    out: Path = typer.Argument(..., file_okay=False, help="The folder to write."),
    gallery: str = GALLERY,
    url: str = URL,
    images: bool = typer.Option(
        False, help="Also write each stored face as OUT/<subject>/<face id>.png."
    ),
    workers: int = WORKERS,
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Write a gallery's subjects, their metadata and faces to OUT/lrfr-gallery.json and,
    with --images, the stored faces (aligned crops: import them again with --face aligned)."""
    from lrfr.client.bulk import ExportReport, export_gallery

    def run(client: AsyncClient, step: Step, total: Step) -> Awaitable[ExportReport]:
        return export_gallery(
            client, gallery, out, images=images, workers=workers, progress=step, on_total=total
        )

    done = _run_with_bar(url, run, unit="subject", desc=f"export {gallery}", enabled=progress)
    typer.echo(
        f"{gallery}: {done.subjects} subjects, {done.faces} faces"
        + (f", {done.images} images" if images else "")
        + f" -> {out}"
    )
    if done.missing_images:
        typer.echo(
            f"{len(done.missing_images)} faces have no stored image "
            "(enrolled with LRFR_STORE_FACE_IMAGES=0)",
            err=True,
        )


def register(root: typer.Typer) -> None:
    app.command("import")(import_)
    app.command("export")(export)
    root.add_typer(app, name="gallery")
