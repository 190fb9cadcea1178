"""``lrfr export CHECKPOINT --out model.onnx [--calibrate-on LFW_DIR]``.

Writes the model artifact (``model.onnx`` + ``model.json``, with an ONNX Runtime parity
check) from a training checkpoint and, with ``--calibrate-on``, the cosine thresholds
at FAR 1e-2 / 1e-3 / 1e-4 measured on LFW pairs through the exported graph. With
``--quantize int8`` / ``--quantize fp16`` it also writes ``model.int8.onnx`` /
``model.fp16.onnx`` (``lrfr quantize``), carrying the same thresholds.
"""

from __future__ import annotations

from pathlib import Path

import typer


def export(
    checkpoint: Path = typer.Argument(..., help="Training checkpoint (e.g. runs/x/last.pt)."),
    out: Path = typer.Option(..., "--out", "-o", help="The .onnx file to write."),
    calibrate_on: Path | None = typer.Option(
        None, "--calibrate-on", help="LFW folder: calibrate thresholds on its pairs."
    ),
    view: int = typer.Option(
        2, help="LFW pairs for calibration: 2 = pairs.txt, 1 = pairsDevTest.txt (use 1 "
        "for models trained on peopleDevTrain)."
    ),
    pairs_file: str | None = typer.Option(
        None, "--pairs-file",
        help="Calibrate on this pairs file of the LFW folder instead (e.g. pairsDevTrain.txt).",
    ),
    impostors: str = typer.Option(
        "all", help="Impostor scores: 'all' different-person image pairs, or the 'pairs'."
    ),
    name: str | None = typer.Option(None, help="Model name (default: the run's name)."),
    version: str | None = typer.Option(None, help="Model version (default: step-<N>)."),
    training_data: str | None = typer.Option(
        None, help="Training data description (default: from the checkpoint)."
    ),
    quantize: list[str] = typer.Option(
        [], "--quantize",
        help="Also write OUT.int8.onnx (CPU) and/or OUT.fp16.onnx (CUDA); see lrfr quantize.",
    ),
    quantize_data: Path | None = typer.Option(
        None, "--quantize-data",
        help="LFW folder whose peopleDevTrain crops calibrate/check them (default: "
        "--calibrate-on).",
    ),
) -> None:
    """Export a checkpoint's backbone to an ONNX artifact with metadata."""
    from models.checkpoint import Checkpoint, CheckpointError
    from models.export import ExportError, export_checkpoint

    if impostors not in ("all", "pairs"):
        raise typer.BadParameter("use 'all' or 'pairs'", param_hint="--impostors")
    if view not in (1, 2):
        raise typer.BadParameter("LFW view must be 1 or 2", param_hint="--view")
    unknown = [p for p in quantize if p not in ("int8", "fp16")]
    if unknown:
        raise typer.BadParameter(f"use int8 or fp16, got {unknown}", param_hint="--quantize")
    crops_from = quantize_data or calibrate_on
    if quantize and crops_from is None:
        raise typer.BadParameter("needs --quantize-data or --calibrate-on (an LFW folder)",
                                 param_hint="--quantize")
    if not checkpoint.is_file():
        typer.echo(f"error: checkpoint not found: {checkpoint}", err=True)
        raise typer.Exit(code=2)
    try:
        state = Checkpoint.load(checkpoint)
    except CheckpointError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    config = state.get("config") or {}
    step = state.get("step")
    try:
        metadata = export_checkpoint(
            state,
            out,
            name=name or f"lrfr-{config.get('name', checkpoint.parent.name)}",
            version=version or (f"step-{step}" if step is not None else "0"),
            training_data=training_data or state.get("training_data"),
            extra={"step": step, "epoch": state.get("epoch"), "method": state.get("method")},
        )
    except (ExportError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(f"wrote {out} ({metadata.backbone}, {metadata.embedding_size}-d, "
               f"head {metadata.head})")
    if calibrate_on is not None:
        from training.calibration import calibrate_artifact

        calibration, metadata = calibrate_artifact(
            out, calibrate_on, view=view, pairs_file=pairs_file,
            impostors=impostors,  # type: ignore[arg-type]
        )
        typer.echo(f"calibrated on {calibration.source}: {calibration.genuine} genuine, "
                   f"{calibration.impostors} impostor pairs")
        for far, threshold in metadata.thresholds.items():
            tar = calibration.tar.get(far)
            typer.echo(
                f"  FAR {far}: threshold "
                + ("n/a (too few impostors)" if threshold is None
                   else f"{threshold:.4f}, TAR {tar:.4f}")
            )
    for precision in quantize:
        from lrfr.commands.quantize import convert, default_output

        target = default_output(out, precision)
        assert crops_from is not None
        converted, agreement = convert(out, precision, target, crops_from, crops=1152,
                                       check_crops=288, threads=None)
        typer.echo(f"wrote {target} ({converted.precision}): min cosine "
                   f"{agreement.min_cosine:.6f} against {out.name} on {agreement.faces} crops")


def register(app: typer.Typer) -> None:
    app.command("export")(export)
