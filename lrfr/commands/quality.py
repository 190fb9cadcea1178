"""``lrfr quality IMAGE...``: the Laplacian score of images as the network sees them."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from PIL import Image, UnidentifiedImageError

from models.embedder import resize_to_input
from models.quality import laplacian_score


def quality(
    images: list[Path] = typer.Argument(..., help="Image files to score.", exists=False),
    size: int = typer.Option(112, help="Side of the network input the image is resized to."),
    native: bool = typer.Option(False, help="Score the image at its own size, not resized."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """Print the Laplacian quality (q = mean |L|, and var L) of each image."""
    failed = False
    if not as_json:
        typer.echo(f"{'laplacian':>10} {'var':>12} {'size':>9}  image")
    for path in images:
        try:
            with Image.open(path) as image:
                image.load()
                width, height = image.size
                pixels = (
                    resize_to_input(image, (size, size))
                    if not native
                    else resize_to_input(image, (height, width))
                )
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            typer.echo(f"error: {path}: {exc}", err=True)
            failed = True
            continue
        score = laplacian_score(pixels)
        if as_json:
            record = {
                "image": str(path),
                "laplacian": score.laplacian,
                "laplacian_var": score.laplacian_var,
                "width": width,
                "height": height,
            }
            typer.echo(json.dumps(record))
        else:
            typer.echo(
                f"{score.laplacian:10.4f} {score.laplacian_var:12.2f} "
                f"{f'{width}x{height}':>9}  {path}"
            )
    if failed:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    app.command("quality")(quality)
