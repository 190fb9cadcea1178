"""``lrfr finetune --config FILE``: Octuplet or DeriveNet fine-tuning from a checkpoint.

The config's ``finetune`` section names the checkpoint to start from and the method
(METHODS §6); everything else (data, optimiser, engine) is as for ``lrfr train``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from lrfr.commands.train import CONFIG, OUT, RESUME, SET, _report, load_run_config


def finetune(
    config: Path = CONFIG,
    overrides: list[str] = SET,
    out: Path | None = OUT,
    resume: str | None = RESUME,
    checkpoint: Path | None = typer.Option(
        None, help="Start from this checkpoint (overrides finetune.checkpoint)."
    ),
) -> None:
    """Fine-tune a trained model for low resolution (Octuplet loss or DeriveNet)."""
    items = list(overrides or [])
    if checkpoint is not None:
        items.append(f"finetune.checkpoint={checkpoint}")
    cfg = load_run_config(config, items, out, resume)
    if cfg.finetune is None:
        typer.echo("error: this config has no 'finetune' section; use 'lrfr train'", err=True)
        raise typer.Exit(code=2)
    if not cfg.finetune.checkpoint or not Path(cfg.finetune.checkpoint).is_file():
        typer.echo(f"error: checkpoint to fine-tune not found: {cfg.finetune.checkpoint!r}",
                   err=True)
        raise typer.Exit(code=2)
    from training.engine import finetune as run

    _report(run(cfg), "fine-tuning")


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune)
