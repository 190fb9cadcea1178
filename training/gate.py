"""The quality gate of a gated model (``models/backbones/gated.py``): choose it, build it.

dlib's released network embeds sharp crops, the student (a ``dlib-resnet29`` training
checkpoint) blurred ones; the gate is the Laplacian quality q below which the student
answers. The gate is chosen on LFW ``pairsDevTrain`` (never on the evaluation pairs):
for a subset of its pairs, at several sides r, both networks embed the degraded crops;
every candidate gate (quantiles of the observed q) combines them, and the gate with the
highest mean best-threshold accuracy over the settings (both degraded at each r, and
112 px against each r) wins. The result is a checkpoint ``lrfr export`` takes; it records
the gate and where each branch came from under ``gate`` (a ``models.artifact.GateInfo``
as a dict), which the export copies into the artifact's metadata. ``lrfr gate`` runs it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.artifact import GateBranch, GateInfo
from models.backbones import DlibResNet, create_backbone
from models.checkpoint import Checkpoint
from models.quality_torch import laplacian_quality_torch
from training.degrade import degrade
from training.eval.datasets import load_lfw
from training.eval.embedding import TorchModuleModel, embed_batched
from training.eval.metrics import accuracy_at, best_threshold
from training.eval.protocols import PairProtocol
from training.eval.runner import load_faces
from training.faces import FaceLoader
from training.teacher import TEACHER_NAME, resolve_pretrained

logger = logging.getLogger(__name__)

SIDES = (112, 56, 40, 28, 20, 14, 10, 7)
#: Training-state keys the gated checkpoint keeps from the student's (its ``head_name``
#: is the gated label; the student's own is ``gate.blurred.head``).
KEPT_KEYS = ("step", "epoch", "method", "training_data", "config")
#: The sharp branch: dlib's network as released.
SHARP_BRANCH = GateBranch(
    name=TEACHER_NAME,
    source="dlib's released weights (face-recognition-models; public domain), unchanged; "
    "fixed framing: the graph cuts dlib's chip box out of the 112 crop instead of dlib's "
    "own alignment",
)


@dataclass(frozen=True)
class GateSearch:
    """The search: every candidate gate with its accuracy per setting, and the winner.

    Attributes:
        gate: the chosen gate (the highest mean accuracy; the first such candidate).
        table: ``(candidate, {setting: accuracy})`` in ascending candidate order.
        medians: the median q of the pairs' images at each side r.
    """

    gate: float
    table: list[tuple[float, dict[str, float]]]
    medians: dict[int, float]

    def markdown(self) -> str:
        """The search as a Markdown table, then the chosen gate."""
        keys = list(self.table[0][1])
        lines = ["| gate q | mean | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
        for gate, acc in self.table:
            lines.append(f"| {gate:.2f} | {100 * np.mean(list(acc.values())):.2f} | "
                         + " | ".join(f"{100 * acc[k]:.1f}" for k in keys) + " |")
        best = dict(self.table)[self.gate]
        lines.append(f"chosen gate q = {self.gate:.3f} "
                     f"(mean {100 * np.mean(list(best.values())):.2f} %)")
        return "\n".join(lines)


def best_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy at the best threshold (the same optimism for every candidate gate)."""
    return accuracy_at(scores, labels, best_threshold(scores, labels))


def gated_accuracies(
    gate: float,
    protocol: PairProtocol,
    qualities: dict[int, np.ndarray],
    sharp: dict[int, np.ndarray],
    blurred: dict[int, np.ndarray],
) -> dict[str, float]:
    """Best-threshold accuracy per setting (``both r``; ``cross r``: 112 px against r)
    when images with q >= ``gate`` take the sharp embedding and the others the blurred."""
    labels = protocol.labels.astype(bool)
    sides = list(qualities)
    chosen = {s: np.where((qualities[s] >= gate)[:, None], sharp[s], blurred[s]) for s in sides}
    out = {}
    for s in sides:
        both = (chosen[s][protocol.left] * chosen[s][protocol.right]).sum(1)
        out[f"both {s}"] = best_accuracy(both, labels)
        if s < 112:
            cross = (chosen[112][protocol.left] * chosen[s][protocol.right]).sum(1)
            out[f"cross {s}"] = best_accuracy(cross, labels)
    return out


def choose_gate(
    protocol: PairProtocol,
    qualities: dict[int, np.ndarray],
    sharp: dict[int, np.ndarray],
    blurred: dict[int, np.ndarray],
) -> GateSearch:
    """Searches the candidate gates: 0 (always sharp), above every q (always blurred) and
    the 5 %, 10 %, ..., 95 % quantiles of the observed q."""
    all_q = np.concatenate(list(qualities.values()))
    always_student = float(all_q.max()) + 1.0
    candidates = sorted({0.0, always_student,
                         *np.quantile(all_q, np.linspace(0.05, 0.95, 19)).tolist()})
    table = [(gate, gated_accuracies(gate, protocol, qualities, sharp, blurred))
             for gate in candidates]
    gate, _ = max(table, key=lambda item: np.mean(list(item[1].values())))
    medians = {s: float(np.median(q)) for s, q in qualities.items()}
    return GateSearch(gate=gate, table=table, medians=medians)


def search_description(
    pairs: int, sides: tuple[int, ...], pairs_file: str = "pairsDevTrain.txt"
) -> str:
    """How :func:`build_gated` chose the gate, for ``GateInfo.chosen_on``."""
    return (f"{pairs} LFW {Path(pairs_file).stem} pairs at r = {', '.join(map(str, sides))}: "
            "the best mean best-threshold accuracy over both-degraded and cross-resolution "
            "settings")


def student_branch(student_state: Checkpoint, recipe: str | None = None) -> GateBranch:
    """The blurred branch's record: the student's network, recipe, step and objective.

    Args:
        student_state: the student's training checkpoint.
        recipe: the training config it was trained with (e.g.
            ``training/configs/lfw_cpu_dlib_student.yaml``); the checkpoint keeps the
            config's contents but not its path, so without it the run's name is given.
    """
    config = student_state.get("config") or {}
    run = config.get("name")
    origin = recipe or (f"training run {run!r}" if run else "a training run (not recorded)")
    weights = (config.get("model") or {}).get("init_weights")
    checkpoint = (config.get("finetune") or {}).get("checkpoint")
    started = (f" (started from the checkpoint {checkpoint})" if checkpoint
               else f" (started from {weights} weights)" if weights else "")
    return GateBranch(
        name=f"{student_state.backbone_name} student of {TEACHER_NAME}",
        source=f"fine-tuned by {origin}{started}, step {student_state.get('step')}, "
        f"epoch {student_state.get('epoch')}",
        head=student_state.get("head_name"),
    )


def gated_checkpoint(
    teacher: torch.nn.Module,
    student: torch.nn.Module,
    gate: float,
    student_state: Checkpoint,
    *,
    chosen_on: str,
    recipe: str | None = None,
) -> Checkpoint:
    """The ``dlib-resnet29-gated`` checkpoint: ``sharp.*`` the teacher, ``blurred.*`` the
    student, the student's training state (:data:`KEPT_KEYS`) kept for the record and
    ``gate`` the :class:`~models.artifact.GateInfo` of the pair, as a dict.

    Args:
        teacher: dlib's released network (the sharp branch).
        student: the fine-tuned network (the blurred branch).
        gate: the Laplacian q threshold.
        student_state: the student's training checkpoint (its provenance).
        chosen_on: the data the gate was chosen on (:func:`search_description`).
        recipe: the student's training config path (:func:`student_branch`).
    """
    info = GateInfo(threshold=gate, sharp=SHARP_BRANCH,
                    blurred=student_branch(student_state, recipe), chosen_on=chosen_on)
    state = {f"sharp.{k}": v for k, v in teacher.state_dict().items()}
    state.update({f"blurred.{k}": v for k, v in student.state_dict().items()})
    return Checkpoint(
        "dlib-resnet29-gated",
        {"embedding_size": 128, "input_size": 112, "gate": gate},
        state,
        {**{key: student_state.get(key) for key in KEPT_KEYS},
         "head_name": info.head_label(), "gate": info.model_dump(mode="json")},
    )


def _embed(net: torch.nn.Module, pixels: np.ndarray) -> np.ndarray:
    """L2-normalised embeddings through the evaluation's own torch path."""
    return embed_batched(TorchModuleModel(net), pixels, progress=False)


def build_gated(
    student_path: str | Path, out: str | Path, lfw: str | Path, pairs: int = 600,
    sides: tuple[int, ...] = SIDES, recipe: str | None = None,
    pairs_file: str = "pairsDevTrain.txt", fixed: tuple[float, str] | None = None,
) -> GateSearch | None:
    """Chooses the gate for the student at ``student_path`` and writes the gated
    checkpoint to ``out`` (needs dlib's released weights, see ``training.teacher``).

    Args:
        recipe: the student's training config path, for the record.
        pairs_file: the pairs to choose on (View 1 layout, in ``lfw`` or a path). A
            student scores best on the people it trained on, so choosing on its own
            training people drifts the gate up (every face to the student): choose on
            people it never saw, e.g. a held-out split's pairs with the held-out student.
        fixed: ``(threshold, where it was chosen)``: no search (a gate chosen for
            another student of the same recipe); returns ``None``.
    """
    student_state = Checkpoint.load(student_path)
    if student_state.backbone_name != "dlib-resnet29":
        raise ValueError(f"{student_path} is not a dlib-resnet29 checkpoint")
    student = student_state.load_backbone_into(
        create_backbone("dlib-resnet29", embedding_size=128)
    ).eval()
    teacher = create_backbone("dlib-resnet29", embedding_size=128)
    assert isinstance(teacher, DlibResNet)
    teacher.load_pretrained(resolve_pretrained("dlib"))
    teacher.eval()
    if fixed is not None:
        gated_checkpoint(teacher, student, fixed[0], student_state, chosen_on=fixed[1],
                         recipe=recipe).save(out)
        return None

    protocol = load_lfw(lfw, view=1, pairs_file=pairs_file).subset(pairs)
    faces = load_faces(protocol.images, FaceLoader("lfw"), progress=False)
    qualities, sharp, blurred = {}, {}, {}
    for side in sides:
        pixels = faces if side >= 112 else np.stack([degrade(f, side) for f in faces])
        # q exactly as the gated graph computes it (float32, on the uint8 crop)
        qualities[side] = laplacian_quality_torch(
            torch.from_numpy(pixels).permute(0, 3, 1, 2).float()
        ).numpy()
        sharp[side], blurred[side] = _embed(teacher, pixels), _embed(student, pixels)
        logger.info("r=%3d: q median %.2f", side, float(np.median(qualities[side])))
    search = choose_gate(protocol, qualities, sharp, blurred)
    gated_checkpoint(teacher, student, search.gate, student_state,
                     chosen_on=search_description(protocol.pairs, sides, pairs_file),
                     recipe=recipe).save(out)
    return search
