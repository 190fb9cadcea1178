"""``lrfr quantize MODEL.onnx --to int8|fp16|fp32|pair-space --data LFW_DIR``.

Writes a converted copy of an fp32 artifact beside it (``MODEL.int8.onnx`` ...), with its
metadata, after checking it against the source on real LFW crops of every resolution:

* ``int8``: static QDQ quantization for the CPU provider, activation ranges calibrated on
  ``peopleDevTrain`` crops at 112-7 px (``--crops`` of them; ``--calibration``, by
  default the 99.999th percentile of each activation);
* ``fp16``: for the CUDA provider (checked on the CPU provider);
* ``fp32``: no conversion; only the branch-only rewrite of a gated graph;
* ``pair-space``: a gated artifact of any precision (convert first) rewritten to compare
  a sharp face with a blurred one by the students' cosine (``models.comparison``), under
  a new ``--version`` and without thresholds: run ``lrfr calibrate`` on it next.

A gated graph that still runs both branches is made branch-only in every case. Measure
the accuracy with ``lrfr eval lfw --view 1 --cross-resolution`` before serving it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

PRECISIONS = ("int8", "fp16", "fp32")
#: What ``--to`` takes: a precision, or the pair-space form of a gated artifact.
TARGETS = (*PRECISIONS, "pair-space")
#: How int8 activation ranges are read from the calibration crops (models.quantize).
CALIBRATIONS = ("percentile", "minmax", "entropy")
DEFAULT_CALIBRATION = "percentile"


def default_output(model: Path, precision: str) -> Path:
    """``lrfr.onnx`` -> ``lrfr.int8.onnx`` (``lrfr.fp32.onnx`` for the branch-only copy)."""
    return model.with_name(f"{model.stem}.{precision}.onnx")


def convert(model: Path, precision: str, out: Path, data: Path, *, crops: int,
            check_crops: int, threads: int | None,
            calibration: str = DEFAULT_CALIBRATION,
            version: str | None = None) -> tuple[Any, Any]:
    """Converts ``model`` to ``precision`` at ``out``; returns (metadata, agreement).

    Raises:
        ValueError: not an fp32 artifact, an unknown precision or calibration method, or
            (fp32, pair-space) not gated.
        FileNotFoundError: the LFW folder lacks ``peopleDevTrain.txt`` or images.
    """
    from models.quantize import convert_fp16, quantize_int8, write_branch_only, write_pair_space
    from training.crops import lfw_crops

    if precision not in TARGETS:
        raise ValueError(f"--to must be one of {', '.join(TARGETS)}, got {precision!r}")
    if version is not None and precision != "pair-space":
        raise ValueError("--version goes with --to pair-space (a precision keeps the version)")
    if calibration not in CALIBRATIONS:
        raise ValueError(f"--calibration must be one of {', '.join(CALIBRATIONS)}, "
                         f"got {calibration!r}")
    if precision == "int8":
        return quantize_int8(model, out, lfw_crops(data, count=crops),
                             calibrate_method=calibration, threads=threads)  # type: ignore[arg-type]
    check = lfw_crops(data, count=check_crops)
    if precision == "fp16":
        return convert_fp16(model, out, check, threads=threads)
    if precision == "pair-space":
        return write_pair_space(model, out, check, version=version, threads=threads)
    return write_branch_only(model, out, check, threads=threads)


def quantize(
    model: Path = typer.Argument(..., help="An fp32 model artifact (.onnx, its .json beside it)."),
    to: str = typer.Option("int8", "--to", help="int8 (CPU), fp16 (CUDA), fp32 (the "
                           "branch-only rewrite of a gated graph only) or pair-space (a gated "
                           "artifact compared in the pair's space; recalibrate it next)."),
    data: Path = typer.Option(..., "--data", "-d", help="LFW folder: peopleDevTrain crops "
                              "calibrate int8 and check every conversion."),
    out: Path | None = typer.Option(None, "--out", "-o",
                                    help="Default: MODEL.<precision>.onnx beside MODEL."),
    crops: int = typer.Option(1152, help="int8 calibration crops (cycling 112-7 px)."),
    calibration: str = typer.Option(
        DEFAULT_CALIBRATION, help="int8 activation ranges: percentile (99.999 % of each "
        "activation's values), minmax or entropy; see docs/benchmarks.md."),
    check_crops: int = typer.Option(288, help="Crops the fp16/fp32 copies are checked on."),
    threads: int | None = typer.Option(None, help="ONNX Runtime threads."),
    version: str | None = typer.Option(
        None, help="pair-space only: the new artifact's version (default: the source's "
        "+pair-space); galleries are tied to it."),
) -> None:
    """Convert a model artifact to int8 or fp16 (and gated graphs to branch-only or to the
    pair's space)."""
    from models.artifact import ArtifactError

    target = out or default_output(model, to)
    try:
        metadata, agreement = convert(model, to, target, data, crops=crops,
                                      check_crops=check_crops, threads=threads,
                                      calibration=calibration, version=version)
    except (ArtifactError, ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    form = (f"pair-space, {metadata.precision}, version {metadata.version}"
            if metadata.comparison == "pair-space" else metadata.precision)
    typer.echo(f"wrote {target} ({form}); against {model.name} on "
               f"{agreement.faces} LFW crops: min cosine {agreement.min_cosine:.6f}, mean "
               f"{agreement.mean_cosine:.6f}, max |diff| {agreement.max_abs_diff:.2e}")
    if metadata.comparison == "pair-space":
        typer.echo(f"no thresholds yet: lrfr calibrate {target} --lfw LFW_DIR")


def register(app: typer.Typer) -> None:
    app.command("quantize")(quantize)
