"""``lrfr calibrate MODEL.onnx --lfw DIR``: decision thresholds per quality band, in place.

Degrades the faces of an LFW pairs file (training-side: ``pairsDevTrain.txt`` by
default) to every resolution in 7..112 px, embeds them through the artifact itself
(ONNX Runtime, the service's path) and writes into its metadata the cosine threshold at
FAR 1e-2 / 1e-3 / 1e-4 for every cell of (band of the lower q, band of the higher q),
the TAR there, and the single sharp-face thresholds. The ONNX file is not touched, so
its SHA-256 in the metadata still holds. See docs/evaluation.md, "Decisions".
"""

from __future__ import annotations

from pathlib import Path

import typer


def calibrate(
    model: Path = typer.Argument(..., help="The .onnx artifact (its .json beside it)."),
    lfw: Path = typer.Option(..., "--lfw", help="LFW folder (images/ and the pairs files)."),
    pairs_file: str = typer.Option(
        "pairsDevTrain.txt", "--pairs-file",
        help="Pairs file whose images are measured; keep DevTest for evaluation.",
    ),
    singletons_of: str = typer.Option(
        "peopleDevTrain.txt", "--singletons-of",
        help="LFW people file whose one-image people are extra impostors: people a model "
        "trained on its people with 2+ images never saw ('' to leave them out).",
    ),
    extra_impostors: Path | None = typer.Option(
        None, "--extra-impostors",
        help="Folder of aligned faces of other people, each a different person (e.g. "
        "faces-extra/aaf): impostors the model never trained on; each cell's threshold "
        "is the highest that any impostor source measures.",
    ),
    extra_limit: int = typer.Option(3000, help="How many of those faces (fixed sample)."),
    tar_floor: float = typer.Option(
        0.05, min=0.0, max=1.0,
        help="A cell whose TAR at a FAR is under this answers 'undecidable' at that FAR.",
    ),
    batch_size: int = typer.Option(128, help="Images per forward pass."),
    threads: int | None = typer.Option(None, help="ONNX Runtime intra-op threads."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
) -> None:
    """Recalibrate an artifact's decision thresholds per quality band (in place)."""
    from models.artifact import ArtifactError
    from training.calibration import calibrate_quality_artifact
    from training.eval.datasets import DatasetLayoutError

    if extra_impostors is not None and not extra_impostors.is_dir():
        raise typer.BadParameter(f"not a folder: {extra_impostors}", param_hint="--extra-impostors")
    try:
        metadata = calibrate_quality_artifact(
            model, lfw, pairs_file=pairs_file, singletons_of=singletons_of or None,
            extra_impostors=extra_impostors,
            extra_limit=extra_limit, tar_floor=tar_floor, batch_size=batch_size,
            threads=threads, progress=progress,
        )
    except (ArtifactError, DatasetLayoutError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    typer.echo(quality_table(metadata))


def quality_table(metadata: object) -> str:
    """A markdown table of an artifact's thresholds per quality cell."""
    calibration = metadata.quality_calibration  # type: ignore[attr-defined]
    edges = calibration.edges
    lines = [
        f"quality bands (q edges): {', '.join(f'{e:.2f}' for e in edges)}; "
        f"TAR floor {calibration.tar_floor:.0%}; source: {calibration.source}",
        "",
        "| low band | high band | genuine | impostors | t@1e-2 | t@1e-3 | t@1e-4 "
        "| TAR@1e-2 | TAR@1e-3 | TAR@1e-4 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def num(value: float | None, pct: bool = False) -> str:
        if value is None:
            return "–"
        return f"{100 * value:.1f}" if pct else f"{value:.4f}"

    for cell in calibration.cells:
        fars = ("1e-2", "1e-3", "1e-4")
        lines.append(
            f"| {cell.low} | {cell.high} | {cell.genuine:,} | {cell.impostors:,} | "
            + " | ".join(num(cell.thresholds.get(f)) for f in fars) + " | "
            + " | ".join(num(cell.tar.get(f), pct=True) for f in fars) + " |"
        )
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate)
