"""How far LFW View 1 DevTest accuracy moves when embeddings move as little as a converted
model's do (a script, not a test).

For a converted artifact (e.g. the int8 copy) beside its fp32 source: both embed every
DevTest crop at 112, 28, 14 and 7 px; the accuracy shift of the converted model (10-fold
best-threshold accuracy, both faces at r and 112 vs r) is printed beside the shifts that
*random* perturbations of exactly the same size per face give the fp32 embeddings (20
draws: mean, standard deviation, range). A shift inside that band is what any
conversion that close to fp32 would show on 1,000 pairs.

Usage::

    python benchmarks/accuracy_noise.py --fp32 runs/models-2.1.0/lrfr.onnx \\
        --other runs/models-2.1.0/lrfr.int8.onnx --lfw ../shared/data/lfw

(cosine models only: the 2.1.0 graph is ``git show b765ca8:models/bundled/lrfr.onnx``.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from models.artifact import load_metadata  # noqa: E402
from models.embedder import OnnxEmbedder  # noqa: E402

RESOLUTIONS = (112, 28, 14, 7)


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def main() -> None:
    from training.degrade import degrade
    from training.eval.datasets import load_lfw
    from training.eval.metrics import kfold_accuracy
    from training.faces import FaceLoader

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fp32", type=Path, required=True)
    parser.add_argument("--other", type=Path, required=True)
    parser.add_argument("--lfw", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "lfw")
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    for path in (args.fp32, args.other):
        comparison = load_metadata(path).comparison
        if comparison != "cosine":  # the random moves below are of one unit vector per face
            raise SystemExit(f"{path} is not a cosine model (its comparison is {comparison!r})")

    protocol = load_lfw(args.lfw, view=1)
    loader = FaceLoader("lfw")
    crops = np.stack([loader.load(path) for path in protocol.images])
    models = {name: OnnxEmbedder(path, threads=args.threads, providers=["CPUExecutionProvider"])
              for name, path in (("fp32", args.fp32), ("other", args.other))}
    embeddings: dict[tuple[str, int], np.ndarray] = {}
    for side in RESOLUTIONS:
        degraded = np.stack([degrade(crop, side) for crop in crops])
        for name, model in models.items():
            parts = [model.embed_pixels(degraded[i:i + 64]) for i in range(0, len(degraded), 64)]
            embeddings[(name, side)] = unit(np.concatenate(parts).astype(np.float64))

    def accuracy(left: np.ndarray, right: np.ndarray) -> float:
        scores = (left[protocol.left] * right[protocol.right]).sum(axis=1)
        folds = kfold_accuracy(scores, protocol.labels, protocol.folds)
        return 100 * float(folds.accuracies.mean())

    rng = np.random.default_rng(0)

    def perturbed(side: int) -> np.ndarray:
        """fp32 embeddings moved, face by face, as far as the other model's are, at random."""
        fp32 = embeddings[("fp32", side)]
        size = np.linalg.norm(embeddings[("other", side)] - fp32, axis=1, keepdims=True)
        direction = unit(rng.standard_normal(fp32.shape))
        return unit(fp32 + size * direction)

    print(f"\n{args.other.name} against {args.fp32.name}, LFW View 1 DevTest (1,000 pairs)")
    print("\n| setting | fp32 % | converted, shift | random same-size moves: mean shift | sd | "
          "range |")
    print("|---|---|---|---|---|---|")
    for side in RESOLUTIONS:
        for cross in (False, True):
            if cross and side == 112:
                continue
            first = 112 if cross else side
            base = accuracy(embeddings[("fp32", first)], embeddings[("fp32", side)])
            shift = accuracy(embeddings[("other", first)], embeddings[("other", side)]) - base
            shift = round(shift, 1) + 0.0  # no "-0.0"
            draws = []
            for _ in range(args.draws):
                right = perturbed(side)
                left = perturbed(first) if cross else right
                draws.append(accuracy(left, right) - base)
            label = f"112 vs {side} px" if cross else f"{side} px"
            print(f"| {label} | {base:.1f} | {shift:+.1f} | {np.mean(draws):+.2f} | "
                  f"{np.std(draws):.2f} | {min(draws):+.1f} .. {max(draws):+.1f} |")


if __name__ == "__main__":
    main()
