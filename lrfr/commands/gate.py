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
    pairs: int = typer.Option(600, help="Size of the subset of the pairs file."),
    pairs_file: str = typer.Option(
        "pairsDevTrain.txt", "--pairs-file",
        help="Pairs to choose on: a file name in --lfw, or an absolute path; people the "
        "student never saw, e.g. a held-out split's pairs-heldout.txt with the held-out student.",
    ),
    threshold: float | None = typer.Option(
        None, "--threshold", help="No search: this gate (chosen for another student of the "
        "same recipe; say where with --chosen-on); --pairs and --pairs-file are then unused.",
    ),
    chosen_on: str | None = typer.Option(
        None, "--chosen-on", help="With --threshold: where it was chosen, for the record."),
    recipe: str | None = typer.Option(
        None, "--recipe",
        help="The student's training config (e.g. training/configs/lfw_cpu_dlib_student.yaml),"
        " recorded as the blurred branch's source (default: the run's name).",
    ),
) -> None:
    """Choose the quality gate on LFW pairs (pairsDevTrain by default) and write the gated
    checkpoint; or, with --threshold, write it with a gate chosen elsewhere."""
    from models.checkpoint import CheckpointError
    from training.gate import build_gated

    if (threshold is None) != (chosen_on is None):
        raise typer.BadParameter("--threshold and --chosen-on go together")
    fixed = None if threshold is None or chosen_on is None else (threshold, chosen_on)
    try:
        search = build_gated(student, out, lfw, pairs, recipe=recipe, pairs_file=pairs_file,
                             fixed=fixed)
    except (CheckpointError, ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    if search is None:
        typer.echo(f"gate q = {threshold} ({chosen_on})\nwrote {out}")
        return
    for side, median in search.medians.items():
        typer.echo(f"r={side:3d}: q median {median:.2f}")
    typer.echo(search.markdown())
    typer.echo(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.command("gate")(gate)
