"""Inference speed and accuracy of a model artifact's variants, in one run (a script, not
a test): today's fp32 graph, its branch-only rewrite and its int8 copy (and, with
``--fp16``, the fp16 copy on this machine's CPU, for reference only; with
``--pair-space``, a pair-space artifact of the same weights, ``lrfr quantize --to
pair-space``, whose sharp faces run both networks).

* **faces/s**: batches of 32 LFW View 1 ``pairsDevTest`` crops (people never trained on),
  each degraded to one resolution of a cycle through 112, 80, 56, 40, 28, 20, 14, 10 and
  7 px (the qualities a low-resolution service sees; the share above the gate is printed),
  embedded through ``models.embedder.OnnxEmbedder`` (the service's code path,
  normalisation included); **1-face latency**: the same crops one at a time. The
  variants take turns, round after round, and each number is the median over rounds,
  so a machine shared with other work slows them alike.
* **accuracy**: LFW View 1 ``pairsDevTest`` (1,000 pairs), 10-fold best-threshold
  accuracy, both faces at r and cross-resolution (112 vs r): ``lrfr eval lfw --view 1
  --cross-resolution`` (``training.eval.runner.evaluate``).
* **agreement**: least and mean cosine of each variant's embedding with fp32's on the mix
  (for a pair-space artifact, of the block each face's gate picks).

The branch-only and int8 copies are built here from ``--model`` (``lrfr quantize``'s
code) unless given. Prints one markdown table (copy it into docs/benchmarks.md).

Usage::

    python benchmarks/inference_bench.py --model runs/models-2.1.0/lrfr.onnx \\
        --lfw ../shared/data/lfw [--pair-space models/bundled/lrfr.onnx]
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from models.artifact import load_metadata  # noqa: E402
from models.comparison import PAIR_SPACE_BLOCKS, sharp_rows  # noqa: E402
from models.embedder import OnnxEmbedder  # noqa: E402
from models.quality import laplacian_score  # noqa: E402
from models.quantize import agreement  # noqa: E402

logger = logging.getLogger("inference_bench")

MIX = (112, 80, 56, 40, 28, 20, 14, 10, 7)
ACCURACY_AT = (112, 28, 14, 7)


@dataclass
class Variant:
    name: str
    path: Path
    embedder: OnnxEmbedder
    throughput: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    both: dict[int, float] = field(default_factory=dict)
    cross: dict[int, float] = field(default_factory=dict)


def mixed_crops(lfw: Path) -> np.ndarray:
    """Every DevTest image's crop, degraded in turn to each resolution of ``MIX``."""
    from training.degrade import degrade
    from training.eval.datasets import load_lfw
    from training.faces import FaceLoader

    loader = FaceLoader("lfw")
    images = load_lfw(lfw, view=1).images
    return np.stack([degrade(loader.load(p), MIX[i % len(MIX)]) for i, p in enumerate(images)])


def time_round(variant: Variant, crops: np.ndarray, *, batches: int, singles: int,
               offset: int) -> None:
    """One round: ``batches`` batches of 32 and ``singles`` single faces, from ``offset``."""
    start = (offset * 32) % (len(crops) - 32 * batches)
    chunk = crops[start:start + 32 * batches]
    began = time.perf_counter()
    for i in range(batches):
        variant.embedder.embed_pixels(chunk[32 * i:32 * (i + 1)])
    variant.throughput.append(len(chunk) / (time.perf_counter() - began))
    for face in chunk[:singles]:
        began = time.perf_counter()
        variant.embedder.embed_pixels(face[None])
        variant.latency.append(time.perf_counter() - began)


def measure_accuracy(variant: Variant, lfw: Path, threads: int) -> None:
    from training.eval.datasets import load_lfw
    from training.eval.embedding import load_model
    from training.eval.runner import EvalSettings, evaluate
    from training.faces import FaceLoader

    run = evaluate(load_model(variant.path, threads=threads), load_lfw(lfw, view=1),
                   FaceLoader("lfw"), EvalSettings(resolutions=ACCURACY_AT,
                                                   cross_resolution=True, progress=False))
    results = run.results
    variant.both = {r: 100 * results["resolutions"][str(r)]["accuracy"] for r in ACCURACY_AT}
    variant.cross = {r: 100 * results["cross_resolution"][str(r)]["accuracy"]
                     for r in ACCURACY_AT if str(r) in results["cross_resolution"]}


def build_variants(args: argparse.Namespace, workdir: Path) -> list[tuple[str, Path]]:
    from models.quantize import convert_fp16, quantize_int8, write_branch_only
    from training.crops import lfw_crops

    check = lfw_crops(args.lfw, count=288)
    branch_only = args.branch_only
    if branch_only is None:
        branch_only = workdir / "lrfr.fp32.onnx"
        write_branch_only(args.model, branch_only, check, threads=args.threads)
    int8 = args.int8
    if int8 is None:
        int8 = workdir / "lrfr.int8.onnx"
        quantize_int8(args.model, int8, lfw_crops(args.lfw, count=1152), threads=args.threads)
    variants = [("fp32, both branches (today)", args.model),
                ("fp32, branch-only", branch_only),
                ("int8, branch-only" if args.int8 else "int8 (percentile ranges), branch-only",
                 int8)]
    if args.fp16:
        fp16 = workdir / "lrfr.fp16.onnx"
        convert_fp16(args.model, fp16, check, threads=args.threads)
        variants.append(("fp16, branch-only (CPU; meant for CUDA)", fp16))
    if args.pair_space:
        variants.append((f"{load_metadata(args.pair_space).precision}, pair-space",
                         args.pair_space))
    return variants


def served_embeddings(embedder: OnnxEmbedder, crops: np.ndarray) -> np.ndarray:
    """The embedding the gate picks for each face: a pair-space vector's sharp block for a
    sharp face, its blurred block for the others; any other model's own embedding."""
    vectors = embedder.embed_pixels(crops)
    if embedder.metadata.comparison != "pair-space":
        return vectors
    blocks = vectors.reshape(len(vectors), PAIR_SPACE_BLOCKS, -1)
    return np.where(sharp_rows(vectors)[:, None], blocks[:, 0], blocks[:, 1])


def _signed(value: float, reference: float) -> str:
    difference = round(value - reference, 1) + 0.0  # no "-0.0"
    return f"{value:.1f} ({difference:+.1f})"


def print_table(variants: list[Variant], crops: np.ndarray) -> None:
    reference = variants[0]
    ref_embeddings = reference.embedder.embed_pixels(crops)
    base = float(np.median(reference.throughput))
    heads = [f"{r} px" for r in ACCURACY_AT] + [f"112 vs {r} px" for r in ACCURACY_AT if r != 112]
    print("\n| model | faces/s (batch 32) | vs today | 1 face p50 ms | 1 face p99 ms | "
          "cosine to fp32 (min / mean) | " + " | ".join(heads) + " |")
    print("|---|---|---|---|---|---|" + "---|" * len(heads))
    for variant in variants:
        fps = float(np.median(variant.throughput))
        p50, p99 = np.percentile(variant.latency, [50, 99]) * 1000
        check = agreement(ref_embeddings.astype(np.float64),
                          served_embeddings(variant.embedder, crops).astype(np.float64))
        cells = []
        for r in ACCURACY_AT:
            value = variant.both[r]
            cells.append(f"{value:.1f}" if variant is reference
                         else _signed(value, reference.both[r]))
        for r in ACCURACY_AT:
            if r in variant.cross:
                value = variant.cross[r]
                cells.append(f"{value:.1f}" if variant is reference
                             else _signed(value, reference.cross[r]))
        print(f"| {variant.name} | {fps:.0f} | {fps / base:.2f}x | {p50:.1f} | {p99:.1f} | "
              f"{check.min_cosine:.5f} / {check.mean_cosine:.6f} | " + " | ".join(cells) + " |")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lfw", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "lfw")
    parser.add_argument("--model", type=Path, required=True,
                        help="today's fp32 artifact, compared by cosine (e.g. the 2.1.0 graph, "
                             "git show b765ca8:models/bundled/lrfr.onnx)")
    parser.add_argument("--branch-only", type=Path, default=None,
                        help="its branch-only copy (default: built here)")
    parser.add_argument("--int8", type=Path, default=None,
                        help="its int8 copy (default: built here as `lrfr quantize --to int8` "
                             "does: 1,152 DevTrain crops, percentile ranges)")
    parser.add_argument("--fp16", action="store_true", help="also the fp16 copy, on the CPU")
    parser.add_argument("--pair-space", type=Path, default=None,
                        help="also this pair-space artifact (lrfr quantize --to pair-space)")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batches", type=int, default=4, help="batches of 32 per round")
    parser.add_argument("--singles", type=int, default=24, help="single faces per round")
    parser.add_argument("--skip-accuracy", action="store_true")
    return parser.parse_args()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args()
    comparison = load_metadata(args.model).comparison
    if comparison != "cosine":
        raise SystemExit(f"{args.model} is a {comparison} artifact: "
                         "pass the cosine graph it was made from as --model (e.g. 2.1.0's, git "
                         "show b765ca8:models/bundled/lrfr.onnx) and it as --pair-space")
    with tempfile.TemporaryDirectory(prefix="lrfr-inference-") as scratch:
        built = build_variants(args, Path(scratch))
        variants = [Variant(name, path, OnnxEmbedder(path, threads=args.threads,
                                                     providers=["CPUExecutionProvider"]))
                    for name, path in built]
        crops = mixed_crops(args.lfw)
        gate = load_metadata(args.model).gate
        if gate is not None:
            sharp = np.mean([laplacian_score(c).laplacian >= gate.threshold for c in crops])
            logger.info("mix: %d crops, %.0f %% at or above the gate (q >= %.2f)",
                        len(crops), 100 * sharp, gate.threshold)
        for variant in variants:  # warm-up
            variant.embedder.embed_pixels(crops[:32])
        for round_ in range(args.rounds):
            for variant in variants:
                time_round(variant, crops, batches=args.batches, singles=args.singles,
                           offset=round_ * args.batches)
            logger.info("round %d: %s", round_ + 1, ", ".join(
                f"{v.name} {v.throughput[-1]:.0f}/s" for v in variants))
        for variant in variants:
            if args.skip_accuracy:
                variant.both = dict.fromkeys(ACCURACY_AT, float("nan"))
                variant.cross = dict.fromkeys(ACCURACY_AT[1:], float("nan"))
            else:
                measure_accuracy(variant, args.lfw, args.threads)
                logger.info("%s: accuracy %s, cross %s", variant.name, variant.both,
                            variant.cross)
        logger.info("machine: %s, ONNX Runtime threads %d", platform.processor()
                    or platform.machine(), args.threads)
        print_table(variants, crops)


if __name__ == "__main__":
    main()
