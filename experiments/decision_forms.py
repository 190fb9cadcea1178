"""Which form of quality-aware threshold holds the FAR? (docs/evaluation.md, "Decisions")

Embeds the images of LFW ``pairsDevTrain`` (training-side) degraded to the calibration
sides, then compares, in-sample, three decision rules at FAR 1e-3: one sharp threshold,
thresholds per band of the lower q only, and per cell of (lower q, higher q) with coarse
bands. Prints the realised FAR / TAR table. The embeddings are cached in ``--cache``.

    python experiments/decision_forms.py --lfw ../shared/data/lfw --cache runs/forms.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from models.artifact import load_metadata
from training.calibration import (
    CALIBRATION_SIDES,
    CellHistograms,
    DegradedSet,
    band_edges,
    count_pairs,
    embed_degraded,
)
from training.eval.datasets import load_lfw
from training.eval.embedding import OnnxModel
from training.eval.runner import load_faces
from training.faces import FaceLoader

COARSE_SIDES = (7, 10, 14, 20, 28, 40, 56, 112)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lfw", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True,
                        help="a cosine artifact, e.g. the 2.1.0 graph (git show "
                             "b765ca8:models/bundled/lrfr.onnx)")
    parser.add_argument("--cache", type=Path, default=Path("runs/decision_forms.npz"))
    args = parser.parse_args()
    if load_metadata(args.model).comparison != "cosine":
        # the cache and the forms below hold one unit vector per face
        raise SystemExit(f"{args.model} is not a cosine model; pass one, e.g. the 2.1.0 graph "
                         "(git show b765ca8:models/bundled/lrfr.onnx)")
    protocol = load_lfw(args.lfw, 1, pairs_file="pairsDevTrain.txt")
    ids = np.array([p.parent.name for p in protocol.images])
    if args.cache.is_file():
        cached = np.load(args.cache)
        data = DegradedSet(cached["E"], cached["Q"], ids, "pairsDevTrain")
    else:
        faces = load_faces(protocol.images, FaceLoader("lfw"))
        data = embed_degraded(OnnxModel(args.model), faces, identities=ids, name="pairsDevTrain")
        args.cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(args.cache, E=data.embeddings, Q=data.quality)
    sides = list(CALIBRATION_SIDES)
    metadata = load_metadata(args.model)
    gate = metadata.gate.threshold if metadata.gate is not None else None
    edges = np.asarray(band_edges(data.quality, sides, COARSE_SIDES, gate=gate))
    histograms = CellHistograms(edges)
    count_pairs(histograms, data)
    bands = histograms.bands
    cell_t = np.full((bands, bands), np.nan)
    low_t = np.full(bands, np.nan)
    for low in range(bands):
        pooled = histograms.impostor[[low * bands + h for h in range(low, bands)]].sum(0)
        low_t[low] = histograms.threshold(0, 1e-3, counts=pooled) or np.nan
        for high in range(low, bands):
            t = histograms.threshold(low * bands + high, 1e-3)
            cell_t[low, high] = np.nan if t is None else t
    single = metadata.thresholds["1e-3"]

    def band(q: np.ndarray) -> np.ndarray:
        return np.searchsorted(edges, q, side="right")

    rules = {
        "one sharp threshold": lambda lo, hi: np.full(lo.shape, single),
        "bands of the lower q only": lambda lo, hi: low_t[band(lo)],
        "cells (lower q, higher q), coarse bands": lambda lo, hi: cell_t[band(lo), band(hi)],
    }
    emb, qual = data.embeddings, data.quality
    labels = protocol.labels.astype(bool)
    left, right = protocol.left[labels], protocol.right[labels]
    n = len(ids)
    impostor_pairs = ids[:, None] != ids[None, :]

    def realised(a: int, b: int, rule) -> tuple[float, float]:
        sims = emb[a] @ emb[b].T
        valid = np.triu(np.ones((n, n), bool), 1) if a == b else ~np.eye(n, dtype=bool)
        mask = valid & impostor_pairs
        qa = np.broadcast_to(qual[a][:, None], sims.shape)[mask]
        qb = np.broadcast_to(qual[b][None, :], sims.shape)[mask]
        far = float(np.mean(sims[mask] >= rule(np.minimum(qa, qb), np.maximum(qa, qb))))
        genuine = np.einsum("ij,ij->i", emb[a][left], emb[b][right])
        ga, gb = qual[a][left], qual[b][right]
        tar = float(np.mean(genuine >= rule(np.minimum(ga, gb), np.maximum(ga, gb))))
        return far, tar

    print("| setting | " + " | ".join(rules) + " |")
    print("|---|" + "---|" * len(rules))
    sharp = sides.index(max(sides))
    for side in (7, 14, 28):
        i = sides.index(side)
        for name, (a, b) in (("both", (i, i)), ("cross", (sharp, i))):
            cells = [realised(a, b, rule) for rule in rules.values()]
            print(f"| {name} {side} px | "
                  + " | ".join(f"{far:.1e} / {100 * tar:.1f} %" for far, tar in cells) + " |")


if __name__ == "__main__":
    main()
