"""``lrfr teacher-cache``: dlib teacher descriptors of the sharp training images.

Needs the optional ``train-teacher`` extra (dlib-bin, face-recognition-models). The
cache is keyed by image path relative to ``--data`` and reused: a second run only
describes images it lacks. ``distill.cache`` in a training config points at it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import typer

DATA = typer.Option(..., "--data", "-d", help="Dataset root (LFW folder or identity folders).")
OUT = typer.Option(..., "--out", "-o", help="The cache file (.npz); reused when present.")
MIN_IMAGES = typer.Option(1, help="Skip identities with fewer images (as data.min_images).")


def teacher_cache(
    data: Path = DATA,
    out: Path = OUT,
    kind: str = typer.Option(
        "lfw_people",
        help="lfw_people, folder (as data.kind) or unlabelled (as data.unlabelled: aligned "
        "crops listed by --manifest, borders repeated as training sees them).",
    ),
    manifest: str | None = typer.Option(
        "manifest.csv", help="For unlabelled: the manifest relative to --data ('' : every image)."
    ),
    sources: str | None = typer.Option(
        None, help="For unlabelled: comma-separated manifest sources to keep (default all)."
    ),
    people: str = typer.Option("peopleDevTrain.txt", help="LFW people list, relative to --data."),
    face_mode: str | None = typer.Option(
        None, help="lfw (fixed deep-funneled box) or aligned; default lfw for lfw_people."
    ),
    min_images: int = MIN_IMAGES,
    limit: int | None = typer.Option(None, help="Describe only the first N images (speed check)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Compute (or complete) the teacher descriptor cache of a training set."""
    from training.data.sources import FolderSource, LFWPeopleSource, UnlabelledSource
    from training.teacher import DlibTeacher, TeacherCache, build_cache

    mode = face_mode or ("lfw" if kind == "lfw_people" else "aligned")
    describe = None
    if kind == "lfw_people":
        paths = LFWPeopleSource(data, people, min_images=min_images).paths
    elif kind == "folder":
        paths = FolderSource(data, min_images=min_images).paths
    elif kind == "unlabelled":
        try:
            source = UnlabelledSource(
                data, manifest=manifest or None,
                sources=sources.split(",") if sources else None,
            )
        except (OSError, ValueError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=2) from exc
        paths = source.paths
        index = {path: i for i, path in enumerate(paths)}

        def describe(path: Path) -> np.ndarray:  # the crop as training loads it
            return teacher.describe(source.load(index[path]))

        try:
            teacher = DlibTeacher(face_mode=mode)
        except ImportError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=1) from exc
    else:
        typer.echo(
            f"error: --kind must be lfw_people, folder or unlabelled, not {kind!r}", err=True
        )
        raise typer.Exit(code=2)
    paths = paths if limit is None else paths[:limit]
    began = time.perf_counter()
    try:
        before = len(TeacherCache.load(out)) if out.is_file() else 0
        cache = build_cache(paths, data, out, describe=describe, face_mode=mode,
                            progress=progress)
    except (ImportError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    seconds = time.perf_counter() - began
    new = len(cache) - before
    speed = f"; {new / seconds:.1f} img/s" if new and seconds > 0 else ""
    typer.echo(f"{out}: {len(cache)} descriptors ({new} new in {seconds:.1f} s{speed})")


def register(app: typer.Typer) -> None:
    app.command("teacher-cache")(teacher_cache)
