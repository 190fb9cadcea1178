"""How well IVF calibration criteria predict the recall of real probes (a script, not a
test).

On a face-like gallery (``gallery_scale.py``'s: real embeddings topped up with fitted
synthetic faces) the IVF index is trained once per ``nlist``; for each ``nprobe`` it
prints the recall@1 against exact search of real degraded LFW probes, beside three
estimates that need no probes: (self) the nearest other face of 500 gallery faces,
(self@10) their 10 nearest other faces, (noisy) gallery faces moved in a random direction
as far as their nearest other face. The service calibrates on self@10.

Usage (after ``gallery_scale.py`` has cached the real embeddings)::

    python benchmarks/ivf_calibration.py --cache runs/gallery_scale/real-<sha>-....npz \\
        --size 1000000 --nlists 1024,4096
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import faiss
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gallery_scale import REPO_ROOT, FaceDistribution, RealFaces, _unit

from models.artifact import load_metadata
from models.embedder import OnnxEmbedder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--model", type=Path,
                        default=REPO_ROOT / "models" / "bundled" / "lrfr.onnx")
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--nlists", default="1024")
    parser.add_argument("--probes", type=int, default=300)
    parser.add_argument("--per-subject", type=int, default=4)
    args = parser.parse_args()

    if load_metadata(args.model).comparison != "cosine":
        raise SystemExit(f"{args.model} is not a cosine model; the synthetic gallery holds "
                         "one unit vector per face")
    data = np.load(args.cache)
    real = RealFaces(*(data[k] for k in ("vectors", "subjects", "probe_pixels",
                                          "probe_subjects", "probe_widths")))
    rng = np.random.default_rng(1)
    order = rng.permutation(len(real.probe_pixels))[: args.probes]
    queries = OnnxEmbedder(args.model, threads=1).embed_images(
        [Image.fromarray(real.probe_pixels[i]) for i in order]).astype(np.float32)
    synthetic = args.size - len(real.vectors)
    gallery = np.concatenate([real.vectors, FaceDistribution.fit(
        real.vectors, real.subjects, components=16).sample(
        -(-synthetic // args.per_subject), args.per_subject, rng)[:synthetic]])
    gallery = gallery[np.random.default_rng(0).permutation(len(gallery))]
    dim = gallery.shape[1]
    flat = faiss.IndexFlatIP(dim)
    flat.add(gallery)
    _, exact = flat.search(queries, 1)
    calibration = np.random.default_rng(0).choice(len(gallery), 500, replace=False)
    own = gallery[calibration]
    own_sims, own_rows = flat.search(own, 11)
    first_other = np.where(own_rows[:, 0] == calibration, own_sims[:, 1], own_sims[:, 0])
    others = [set(row.tolist()) - {c} for row, c in zip(own_rows, calibration, strict=True)]
    cosine = np.clip(first_other, 0.05, 0.9999)
    direction = np.random.default_rng(2).standard_normal(own.shape).astype(np.float32)
    direction -= (direction * own).sum(axis=1, keepdims=True) * own
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    moved = _unit(own + np.sqrt(1 / cosine**2 - 1)[:, None] * direction)
    moved_truth, _ = flat.search(moved, 1)
    print("| faces | nlist | nprobe | real probes recall@1 | self | self@10 | noisy |")
    print("|---|---|---|---|---|---|---|")
    for nlist in (int(n) for n in args.nlists.split(",")):
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.niter, ivf.cp.max_points_per_centroid, ivf.cp.seed = 10, 64, 1234
        ivf.train(gallery)
        ivf.add(gallery)
        for nprobe in (8, 16, 32, 64, 128, 256):
            ivf.nprobe = nprobe
            _, found = ivf.search(queries, 1)
            real_recall = np.mean(found[:, 0] == exact[:, 0])
            sims, rows = ivf.search(own, 11)
            got = np.where(rows[:, 0] == calibration, sims[:, 1], sims[:, 0])
            self_recall = np.mean(got >= first_other - 1e-6)
            self10 = np.mean([len(o & set(r.tolist())) / max(1, len(o))
                              for o, r in zip(others, rows, strict=True)])
            moved_sims, _ = ivf.search(moved, 1)
            noisy = np.mean(moved_sims[:, 0] >= moved_truth[:, 0] - 1e-6)
            print(f"| {args.size:,} | {nlist} | {nprobe} | {real_recall:.3f} | "
                  f"{self_recall:.3f} | {self10:.3f} | {noisy:.3f} |", flush=True)


if __name__ == "__main__":
    main()
