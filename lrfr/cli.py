"""``lrfr``: the single command line of the project.

Each sub-command lives in its own module under ``lrfr.commands`` and exposes
``register(app)``; heavy imports (torch, onnxruntime, fastapi) happen inside the
commands, so ``lrfr --help`` stays fast and works with only the base install.
"""

from __future__ import annotations

import importlib
import logging

import typer

COMMAND_MODULES: tuple[str, ...] = (
    "lrfr.commands.eval",
    "lrfr.commands.quality",
    "lrfr.commands.serve",
    "lrfr.commands.train",
    "lrfr.commands.finetune",
    "lrfr.commands.export",
    "lrfr.commands.quantize",
    "lrfr.commands.gate",
    "lrfr.commands.calibrate",
    "lrfr.commands.teacher",
    "lrfr.commands.gallery",
)

app = typer.Typer(
    name="lrfr",
    help="Low-resolution face recognition: train, evaluate, export and serve face embedders.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


for module_name in COMMAND_MODULES:
    importlib.import_module(module_name).register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
