"""``lrfr gate --student CKPT --out GATED.pt``: the quality-gated model's checkpoint.

Chooses the Laplacian-quality gate between dlib's released network (sharp crops) and the
student (blurred ones) on LFW ``pairsDevTrain`` and prints the search as a Markdown
table (see ``training.gate``); ``lrfr export`` turns the checkpoint into an artifact
whose metadata carries the gate and each branch's provenance (``gate``).
"""

from __future__ import annotations

from pathlib import Path

import typer


def gate(
    student: Path = typer.Option(..., "--student", help="The dlib-resnet29 student checkpoint."),
    out: Path = typer.Option(..., "--out", "-o", help="The gated checkpoint to write."),
    lfw: Path = typer.Option(Path("../shared/data/lfw"), "--lfw", help="LFW folder."),
    pairs: int = typer.Option(600, help="pairsDevTrain subset size."),
    recipe: str | None = typer.Option(
        None, "--recipe",
        help="The student's training config (e.g. training/configs/lfw_cpu_dlib_student.yaml),"
        " recorded as the blurred branch's source (default: the run's name).",
    ),
) -> None:
    """Choose the quality gate on LFW pairsDevTrain and write the gated checkpoint."""
    from models.checkpoint import CheckpointError
    from training.gate import build_gated

    try:
        search = build_gated(student, out, lfw, pairs, recipe=recipe)
    except (CheckpointError, ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    for side, median in search.medians.items():
        typer.echo(f"r={side:3d}: q median {median:.2f}")
    typer.echo(search.markdown())
    typer.echo(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.command("gate")(gate)
