"""``lrfr train --config FILE``: train a face embedder with a margin head.

One config file (YAML, see ``training/configs/`` and ``docs/training.md``) describes
the whole run; ``--set KEY=VALUE`` overrides single values. Multi-GPU and multi-node:
launch the same command under ``torchrun`` (``python -m torch.distributed.run``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

logger = logging.getLogger(__name__)

CONFIG = typer.Option(..., "--config", "-c", help="Experiment YAML (may name a 'base').")
SET = typer.Option(
    None, "--set", "-s", help="Override a value, e.g. --set engine.batch_size=64 (repeatable)."
)
OUT = typer.Option(None, "--out", "-o", help="Run folder (overrides engine.out_dir).")
RESUME = typer.Option(
    None, help="auto (continue out_dir/last.pt if present), none, or a checkpoint path."
)


def load_run_config(config: Path, overrides: list[str] | None, out: Path | None,
                    resume: str | None):
    """The typed config with the command-line overrides merged; exits 2 on errors."""
    from training.config import ConfigError, load_config, merge_overrides

    items = list(overrides or [])
    if out is not None:
        items.append(f"engine.out_dir={out}")
    if resume is not None:
        items.append(f"engine.resume={resume}")
    try:
        return load_config(config, merge_overrides(items))
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc


def _report(result, kind: str) -> None:
    typer.echo(
        f"{kind} stopped at step {result.step} (epoch {result.epoch}); "
        f"{result.images_per_second:.1f} img/s; checkpoint {result.checkpoint}"
        + ("" if result.finished else " (time limit reached: run again to continue)")
    )
    if result.validation:
        step, values = result.validation[-1]
        typer.echo(f"validation at step {step}: "
                   + ", ".join(f"{k}={v:.4f}" for k, v in values.items()))


def train(
    config: Path = CONFIG,
    overrides: list[str] = SET,
    out: Path | None = OUT,
    resume: str | None = RESUME,
) -> None:
    """Train a backbone + margin head as the config describes (resumes by default)."""
    cfg = load_run_config(config, overrides, out, resume)
    if cfg.finetune is not None:
        typer.echo("error: this config has a 'finetune' section; use 'lrfr finetune'", err=True)
        raise typer.Exit(code=2)
    from training.engine import train as run

    _report(run(cfg), "training")


def slim_checkpoint(
    checkpoint: Path = typer.Argument(..., help="A training checkpoint (RUN/last.pt)."),
    out: Path = typer.Argument(..., help="Where to write the slim copy (.pt)."),
) -> None:
    """Write the fp16 copy of a checkpoint that a later session resumes from
    (``lrfr train --config ... --resume OUT``): weights and the run's position, without
    the optimiser's momentum and RNG states; small enough to commit."""
    from models.checkpoint import Checkpoint, CheckpointError

    try:
        state = Checkpoint.load(checkpoint)
    except (OSError, CheckpointError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    state.slim().save(out)
    mib = out.stat().st_size / 2**20, checkpoint.stat().st_size / 2**20
    typer.echo(f"{out}: step {state.get('step')} (epoch {state.get('epoch')}), "
               f"{mib[0]:.1f} MiB (from {mib[1]:.1f})")


def branch_checkpoint(
    model: Path = typer.Argument(..., help="A quality-gated artifact (.onnx, its .json beside)."),
    out: Path = typer.Argument(..., help="Where to write the checkpoint (.pt)."),
    branch: str = typer.Option("blurred", help="sharp or blurred."),
) -> None:
    """Write one branch of a gated artifact (e.g. the bundled model's student) as a
    training checkpoint, read back from the graph, for ``lrfr finetune --checkpoint OUT``."""
    from models.artifact import ArtifactError
    from models.onnx_weights import OnnxWeightsError, checkpoint_of_branch

    if branch not in ("sharp", "blurred"):
        raise typer.BadParameter("must be sharp or blurred", param_hint="--branch")
    try:
        checkpoint = checkpoint_of_branch(model, branch)
    except (OSError, ArtifactError, OnnxWeightsError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    checkpoint.save(out)
    typer.echo(f"{out}: {checkpoint.get('source')}, {len(checkpoint.backbone_state)} tensors")


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("slim-checkpoint")(slim_checkpoint)
    app.command("branch-checkpoint")(branch_checkpoint)
