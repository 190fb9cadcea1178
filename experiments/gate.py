"""Builds the quality-gated model (models/backbones/gated.py) from a trained student.

dlib's released network embeds sharp crops, the student (a ``dlib-resnet29`` training
checkpoint) blurred ones; the gate is the Laplacian quality q below which the student
answers. The gate is chosen on LFW ``pairsDevTrain`` (never on the evaluation pairs):
for a subset of its pairs, at several sides r, both networks embed the degraded crops;
every candidate gate (quantiles of the observed q) combines them, and the gate with the
highest mean best-threshold accuracy over the settings (both degraded at each r, and
112 px against each r) wins. The table of that search is printed. The result is a
checkpoint ``lrfr export`` takes.

    python experiments/gate.py --student runs/lfw-cpu-dlib-student/last.pt \\
        --out runs/card/gated.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from models.backbones import create_backbone
from models.checkpoint import Checkpoint
from models.quality_torch import laplacian_quality_torch
from training.degrade import degrade
from training.eval.datasets import load_lfw
from training.eval.embedding import TorchModuleModel, embed_batched
from training.eval.metrics import accuracy_at, best_threshold
from training.eval.runner import load_faces
from training.faces import FaceLoader
from training.teacher import resolve_pretrained

SIDES = (112, 56, 40, 28, 20, 14, 10, 7)


def best_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy at the best threshold (the same optimism for every candidate gate)."""
    return accuracy_at(scores, labels, best_threshold(scores, labels))


def embed(net: torch.nn.Module, pixels: np.ndarray) -> np.ndarray:
    """L2-normalised embeddings through the evaluation's own torch path."""
    return embed_batched(TorchModuleModel(net), pixels, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--lfw", type=Path, default=Path("../shared/data/lfw"))
    parser.add_argument("--pairs", type=int, default=600, help="pairsDevTrain subset size")
    args = parser.parse_args()

    student_state = Checkpoint.load(args.student)
    if student_state.backbone_name != "dlib-resnet29":
        raise SystemExit(f"{args.student} is not a dlib-resnet29 checkpoint")
    student = student_state.load_backbone_into(
        create_backbone("dlib-resnet29", embedding_size=128)
    )
    teacher = create_backbone("dlib-resnet29", embedding_size=128)
    teacher.load_pretrained(resolve_pretrained("dlib"))
    student.eval()
    teacher.eval()

    protocol = load_lfw(args.lfw, view=1, pairs_file="pairsDevTrain.txt").subset(args.pairs)
    faces = load_faces(protocol.images, FaceLoader("lfw"), progress=False)
    qualities, sharp, blurred = {}, {}, {}
    for side in SIDES:
        pixels = faces if side >= 112 else np.stack([degrade(f, side) for f in faces])
        # q exactly as the gated graph computes it (float32, on the uint8 crop)
        qualities[side] = laplacian_quality_torch(
            torch.from_numpy(pixels).permute(0, 3, 1, 2).float()
        ).numpy()
        sharp[side], blurred[side] = embed(teacher, pixels), embed(student, pixels)
        print(f"r={side:3d}: q median {np.median(qualities[side]):.2f}", flush=True)

    labels = protocol.labels.astype(bool)

    def accuracy(gate: float) -> dict[str, float]:
        chosen = {s: np.where((qualities[s] >= gate)[:, None], sharp[s], blurred[s])
                  for s in SIDES}
        out = {}
        for s in SIDES:
            both = (chosen[s][protocol.left] * chosen[s][protocol.right]).sum(1)
            out[f"both {s}"] = best_accuracy(both, labels)
            if s < 112:
                cross = (chosen[112][protocol.left] * chosen[s][protocol.right]).sum(1)
                out[f"cross {s}"] = best_accuracy(cross, labels)
        return out

    all_q = np.concatenate(list(qualities.values()))
    always_student = float(all_q.max()) + 1.0
    candidates = sorted({0.0, always_student,
                         *np.quantile(all_q, np.linspace(0.05, 0.95, 19)).tolist()})
    results = [(gate, accuracy(gate)) for gate in candidates]
    keys = list(results[0][1])
    print("| gate q | mean | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 2) + "|")
    for gate, acc in results:
        print(f"| {gate:.2f} | {100 * np.mean(list(acc.values())):.2f} | "
              + " | ".join(f"{100 * acc[k]:.1f}" for k in keys) + " |")
    gate, acc = max(results, key=lambda item: np.mean(list(item[1].values())))
    print(f"chosen gate q = {gate:.3f} (mean {100 * np.mean(list(acc.values())):.2f} %)")

    state = {f"sharp.{k}": v for k, v in teacher.state_dict().items()}
    state.update({f"blurred.{k}": v for k, v in student.state_dict().items()})
    Checkpoint(
        "dlib-resnet29-gated",
        {"embedding_size": 128, "input_size": 112, "gate": gate},
        state,
        {key: student_state.get(key)
         for key in ("head_name", "step", "epoch", "training_data", "config")},
    ).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
