"""``lrfr eval``: the deck's comparison tables for any model (ONNX artifact or checkpoint).

``lrfr eval lfw|survface|scface|tinyface|folder --model M --data DIR --out DIR`` writes
``results.json``, ``results.csv``, ``table.md``, ``accuracy_vs_resolution.png`` and
``roc.png`` into ``--out`` (``lrfr eval lfw --identification`` adds LFW DevTest
closed- and open-set identification to the same files);
``lrfr eval compare RESULTS.json... --out table.md`` joins results into one table.
See ``docs/evaluation.md``.

Each protocol is an :class:`EvalProtocol` in a registry (:func:`register_protocol`): its
loader, defaults and own options; the options all protocols share are declared once.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

logger = logging.getLogger(__name__)

eval_app = typer.Typer(
    name="eval",
    help="Evaluate a model: LFW, QMUL-SurvFace, SCface, TinyFace or a folder of identities.",
    no_args_is_help=True,
)

INTERPOLATIONS = ("bicubic", "area", "bilinear", "lanczos", "nearest")
FACE_MODES = ("lfw", "aligned", "landmarks", "detect", "box")

MODEL = typer.Option(
    ..., "--model", "-m",
    help="model.onnx (+ .json beside it), a checkpoint, or dlib (train-teacher extra).",
)
DATA = typer.Option(..., "--data", "-d", help="Dataset folder (see docs/evaluation.md).")
OUT = typer.Option(..., "--out", "-o", help="Folder for the results files.")
LIMIT = typer.Option(None, help="Evaluate a fixed subset: N pairs, or N probe identities.")
DOWN = typer.Option("bicubic", help=f"Kernel for the reduction to r: {', '.join(INTERPOLATIONS)}.")
UP = typer.Option("bicubic", help="Kernel for the enlargement back to 112.")
BATCH = typer.Option(128, help="Images per forward pass.")
WORKERS = typer.Option(2, help="Threads decoding images.")
DEVICE = typer.Option("cpu", help="torch device for checkpoints (cpu, cuda).")
THREADS = typer.Option(None, help="ONNX Runtime intra-op threads (default: all cores).")
LANDMARKS = typer.Option(
    None, help="5-point landmarks file (NAME x1 y1 ... x5 y5 per line): align by similarity."
)
PROGRESS = typer.Option(True, "--progress/--no-progress", help="Show progress bars.")
FLIP = typer.Option(False, "--flip", help="Test-time flip averaging: each embedding is the "
                    "normalised sum of the face's and its mirror image's.")
BRANCH = typer.Option(None, "--branch", help="'blurred': evaluate only the student of a gated "
                      "ONNX artifact, on every face whatever its quality (the gate shut).")
CAMERA = typer.Option(False, "--camera", help="Camera effects on every degraded face (blur, "
                      "sensor noise, gamma, JPEG: training.degrade.CameraEffects' defaults), "
                      "seeded per image and side: repeatable.")


def _settings(resolutions: str, down: str, up: str, batch_size: int, workers: int,
              progress: bool, cross: bool = False, flip: bool = False,
              camera: bool = False) -> Any:
    from training.degrade import CameraEffects
    from training.eval.runner import EvalSettings, parse_resolutions

    for name, value in (("--down", down), ("--up", up)):
        if value not in INTERPOLATIONS:
            raise typer.BadParameter(f"{name} must be one of {', '.join(INTERPOLATIONS)}")
    try:
        parsed = parse_resolutions(resolutions)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--resolutions") from exc
    return EvalSettings(
        resolutions=parsed, cross_resolution=cross, down=down, up=up,  # type: ignore[arg-type]
        batch_size=batch_size, workers=workers, progress=progress, flip=flip,
        camera=CameraEffects() if camera else None,
    )


def _face_loader(mode: str, landmarks: Path | None, root: Path) -> Any:
    from training.faces import FaceLoader, load_landmarks

    if landmarks is not None:
        return FaceLoader("landmarks", load_landmarks(landmarks), root)
    if mode not in FACE_MODES:
        raise typer.BadParameter(f"--faces must be one of {', '.join(FACE_MODES)}")
    return FaceLoader(mode)  # type: ignore[arg-type]


def _run(
    load_protocol: Callable[[], Any],
    *,
    load_identification: Callable[[], Any] = lambda: None,
    model: Path,
    data: Path,
    out: Path,
    settings: Any,
    faces: Any,
    limit: int | None,
    device: str,
    threads: int | None,
    branch: str | None = None,
) -> None:
    from training.eval.datasets import DatasetLayoutError
    from training.eval.embedding import comparison_of, load_model
    from training.eval.report import markdown_table, write_report
    from training.eval.runner import evaluate

    try:
        protocol = load_protocol()
        identification = load_identification()
    except (DatasetLayoutError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    try:
        if branch not in (None, "blurred"):
            raise ValueError(f"--branch must be 'blurred', got {branch!r}")
        embedder = load_model(model, device=device, threads=threads,
                              branch="blurred" if branch else None)
    except (OSError, ValueError) as exc:
        typer.echo(f"error: cannot load model {model}: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    if settings.flip and comparison_of(embedder) != "cosine":
        typer.echo(f"error: --flip needs one unit vector per face; {model}'s comparison is "
                   f"{comparison_of(embedder)!r} (three blocks a face)", err=True)
        raise typer.Exit(code=2)
    run = evaluate(embedder, protocol, faces, settings, dataset=data, limit=limit,
                   identification=identification)
    paths = write_report(run, out)
    typer.echo(markdown_table(run.results))
    typer.echo(f"run time {run.results['timing_s']['total']:.1f} s; wrote "
               + ", ".join(str(p) for p in paths.values()))


# --------------------------------------------------------------------------- protocols


@dataclass(frozen=True)
class EvalProtocol:
    """One ``lrfr eval PROTOCOL``: how its data loads, its defaults and its own options.

    Attributes:
        name: the sub-command.
        help: its one-line description.
        load: ``load(data, own)`` -> the protocol, ``own`` holding its own options' values.
        resolutions: the default ``--resolutions`` and its help.
        faces: the default ``--faces`` and its help.
        options: its own options (``inspect.Parameter`` with a typer default), after --out.
        resolution_options: its own options placed after --resolutions.
        face_root: the folder the landmarks' names are relative to, from ``--data``.
        check: validates its own options before anything is loaded.
        identification: ``identification(data, own)`` -> an identification protocol to
            score beside the main one on the same embeddings, or None.
    """

    name: str
    help: str
    load: Callable[[Path, dict[str, Any]], Any]
    resolutions: tuple[str, str] = ("native", "native, or sides r to degrade probes to.")
    faces: tuple[str, str] = ("aligned", "aligned (the released crops).")
    options: tuple[inspect.Parameter, ...] = ()
    resolution_options: tuple[inspect.Parameter, ...] = ()
    face_root: Callable[[Path], Path] = lambda data: data
    check: Callable[[dict[str, Any]], None] = lambda own: None
    identification: Callable[[Path, dict[str, Any]], Any] = lambda data, own: None


PROTOCOLS: dict[str, EvalProtocol] = {}


def register_protocol(protocol: EvalProtocol) -> EvalProtocol:
    """Adds ``protocol`` to the registry and as an ``lrfr eval`` sub-command."""
    if protocol.name in PROTOCOLS:
        raise ValueError(f"eval protocol {protocol.name!r} is already registered")
    PROTOCOLS[protocol.name] = protocol
    eval_app.command(protocol.name)(_command(protocol))
    return protocol


def _option(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )


#: The options every protocol shares, declared once: (name, type, typer default).
_LEADING = (("model", Path, MODEL), ("data", Path, DATA), ("out", Path, OUT))
_TRAILING = (
    ("landmarks", Path | None, LANDMARKS), ("limit", int | None, LIMIT), ("down", str, DOWN),
    ("up", str, UP), ("batch_size", int, BATCH), ("workers", int, WORKERS),
    ("device", str, DEVICE), ("threads", int | None, THREADS), ("progress", bool, PROGRESS),
    ("flip", bool, FLIP), ("camera", bool, CAMERA), ("branch", str | None, BRANCH),
)


def _command(protocol: EvalProtocol) -> Callable[..., None]:
    """A typer command for ``protocol``: the shared options plus its own."""

    def command(**values: Any) -> None:
        own = {option.name: values.pop(option.name)
               for option in (*protocol.options, *protocol.resolution_options)}
        protocol.check(own)
        v = values
        _run(
            lambda: protocol.load(v["data"], own),
            load_identification=lambda: protocol.identification(v["data"], own),
            model=v["model"], data=v["data"], out=v["out"], limit=v["limit"],
            device=v["device"], threads=v["threads"], branch=v["branch"],
            settings=_settings(v["resolutions"], v["down"], v["up"], v["batch_size"],
                               v["workers"], v["progress"], own.get("cross_resolution", False),
                               v["flip"], v["camera"]),
            faces=_face_loader(v["faces"], v["landmarks"], protocol.face_root(v["data"])),
        )

    parameters = [
        *(_option(*option) for option in _LEADING),
        *protocol.options,
        _option("resolutions", str, typer.Option(protocol.resolutions[0],
                                                 help=protocol.resolutions[1])),
        *protocol.resolution_options,
        _option("faces", str, typer.Option(protocol.faces[0], help=protocol.faces[1])),
        *(_option(*option) for option in _TRAILING),
    ]
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    command.__doc__ = protocol.help
    command.__name__ = protocol.name
    return command


def _load_lfw(data: Path, own: dict[str, Any]) -> Any:
    from training.eval.datasets import load_lfw

    # --cross-resolution is a setting, not the data's
    return load_lfw(data, own["view"], pairs_file=own["pairs_file"])


def _load_lfw_identification(data: Path, own: dict[str, Any]) -> Any:
    from training.eval.datasets import load_lfw_identification

    if not own["identification"]:
        return None
    return load_lfw_identification(data, people_file=own["people_file"])


def _lfw_images(data: Path) -> Path:
    from training.eval.datasets import lfw_image_folder

    return lfw_image_folder(data)


def _check_view(own: dict[str, Any]) -> None:
    if own["view"] not in (1, 2):
        raise typer.BadParameter("--view must be 1 or 2")


def _loader(name: str) -> Callable[[Path, dict[str, Any]], Any]:
    """``training.eval.datasets.<name>(data)``, imported when the command runs."""

    def load(data: Path, own: dict[str, Any]) -> Any:
        from training.eval import datasets

        return getattr(datasets, name)(data, **own)

    return load


register_protocol(EvalProtocol(
    name="lfw",
    help="LFW verification, View 2 (10-fold) or View 1, at several resolutions.",
    load=_load_lfw,
    resolutions=("112,56,28,14,7", "Comma-separated sides r."),
    faces=("lfw", "lfw (fixed deep-funneled crop), aligned, detect (the service's path: "
           "CenterFace + 5-point alignment on the raw photo) or box (the detector's box "
           "degraded to r px, mapped onto the template as the service maps face=box)."),
    options=(
        _option("view", int, typer.Option(
            2, help="2: pairs.txt (10 folds); 1: pairsDevTest.txt.")),
        _option("pairs_file", str | None, typer.Option(
            None, help="Pairs in the View 1 layout instead of --view: a file of the LFW "
                       "folder or a path (e.g. runs/holdout/pairs-heldout.txt from "
                       "python -m training.eval.holdout).")),
    ),
    resolution_options=(
        _option("cross_resolution", bool, typer.Option(
            False, "--cross-resolution",
            help="Also score 112 px vs r px pairs (and a 112 px gallery vs r px probes).")),
        _option("identification", bool, typer.Option(
            False, "--identification",
            help="Also identification on the peopleDevTest people: rank-1/rank-5 and "
                 "FNIR at FPIR 1e-2/1e-3 (docs/evaluation.md).")),
        _option("people_file", str, typer.Option(
            "peopleDevTest.txt", help="--identification on the people of this list (a file "
                                      "of the LFW folder or a path, e.g. "
                                      "runs/holdout/people-heldout.txt).")),
    ),
    face_root=_lfw_images,
    check=_check_view,
    identification=_load_lfw_identification,
))
register_protocol(EvalProtocol(
    name="survface",
    help="QMUL-SurvFace verification: TAR@FAR 0.3/0.1/0.01/0.001, AUC, 10-fold accuracy.",
    load=_loader("load_survface"),
    resolutions=("native", "native, or sides r to degrade to."),
))
register_protocol(EvalProtocol(
    name="scface",
    help="SCface identification: rank-1 per distance d1 (4.20 m), d2 (2.60 m), d3 (1.00 m).",
    load=_loader("load_scface"),
    faces=("aligned", "aligned (face crops) or landmarks."),
))
register_protocol(EvalProtocol(
    name="tinyface",
    help="TinyFace identification: CMC at ranks 1, 5, 20 with the distractor gallery.",
    load=_loader("load_tinyface"),
))
register_protocol(EvalProtocol(
    name="folder",
    help="Any folder of identities: rank-1/rank-5 and open-set FNIR at FPIR 1e-2.",
    load=_loader("load_identity_folder"),
    resolutions=("112,56,28,14,7", "Sides r to degrade probes to."),
    faces=("aligned", "aligned, lfw (deep-funneled crop), landmarks, detect or box."),
    options=(_option("gallery_per_person", int, typer.Option(
        1, "--gallery-per-person", "-k", help="First k images per person form the gallery.")),),
))


@eval_app.command("compare")
def compare(
    results: list[Path] = typer.Argument(..., help="results.json files, one column each."),
    out: Path = typer.Option(..., "--out", "-o", help="Markdown file to write."),
    labels: str | None = typer.Option(
        None, help="Comma-separated column names (default: model name and version)."
    ),
) -> None:
    """The deck's big table: one column per model, rows = dataset/resolution."""
    from training.eval.report import compare_table

    loaded = []
    for path in results:
        try:
            loaded.append(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            typer.echo(f"error: {path}: {exc}", err=True)
            raise typer.Exit(code=2) from exc
    names = [s.strip() for s in labels.split(",")] if labels else None
    if names is not None and len(names) != len(loaded):
        message = f"{len(names)} labels for {len(loaded)} results"
        raise typer.BadParameter(message, param_hint="--labels")
    table = compare_table(loaded, names)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table, encoding="utf-8")
    typer.echo(table)


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")
