"""Benchmark: LFW View 2 at five resolutions for one model; prints the table and run time.

Not a test. Examples (from the repository root)::

    python benchmarks/eval_lfw.py --model pixel-baseline --data ../shared/data/lfw
    python benchmarks/eval_lfw.py --model random-ir50 --data ../shared/data/lfw --limit 100
    python benchmarks/eval_lfw.py --model path/to/model.onnx --data ../shared/data/lfw

``pixel-baseline`` builds the torch-free thumbnail model; ``random-ir50`` exports a
randomly initialised IR-50 to ONNX (needs torch) to time a real network. With
``--limit`` the run time is also extrapolated to the full 6000 pairs (by images
embedded, which dominate the run time of a network).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from training.eval.baseline import build_pixel_baseline  # noqa: E402
from training.eval.datasets import load_lfw  # noqa: E402
from training.eval.embedding import load_model  # noqa: E402
from training.eval.report import markdown_table  # noqa: E402
from training.eval.runner import EvalSettings, evaluate, parse_resolutions  # noqa: E402
from training.faces import FaceLoader  # noqa: E402


def _prepare_model(spec: str, workdir: Path) -> Path:
    if spec == "pixel-baseline":
        path = workdir / "pixel-baseline.onnx"
        build_pixel_baseline(path)
        return path
    if spec == "random-ir50":
        import torch

        from models.backbones import create_backbone
        from models.export import export_onnx

        torch.manual_seed(0)
        path = workdir / "random-ir50.onnx"
        started = time.perf_counter()
        export_onnx(create_backbone("ir50", embedding_size=512), path, name="random-ir50",
                    version="0", backbone_name="ir50", parity_samples=2)
        print(f"exported random IR-50 in {time.perf_counter() - started:.1f} s")
        return path
    return Path(spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True,
                        help="model.onnx, a checkpoint, 'pixel-baseline' or 'random-ir50'")
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "lfw")
    parser.add_argument("--resolutions", default="112,56,28,14,7")
    parser.add_argument("--limit", type=int, default=None, help="pairs (balanced subset)")
    parser.add_argument("--cross-resolution", action="store_true")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads")
    parser.add_argument("--workers", type=int, default=2, help="image decoding threads")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(_prepare_model(args.model, Path(tmp)), threads=args.threads)
        full = load_lfw(args.data, 2)
        settings = EvalSettings(
            resolutions=parse_resolutions(args.resolutions),
            cross_resolution=args.cross_resolution,
            batch_size=args.batch_size, workers=args.workers, progress=True,
        )
        started = time.perf_counter()
        run = evaluate(model, full, FaceLoader("lfw"), settings, dataset=args.data,
                       limit=args.limit)
        elapsed = time.perf_counter() - started

    results = run.results
    timing = results["timing_s"]
    print(markdown_table(results))
    print(f"pairs {results['pairs']}, distinct images {results['images']}, "
          f"images embedded {results['images_embedded']}")
    print(f"run time {elapsed:.1f} s (decode+crop {timing['load']:.1f} s, "
          f"degrade+embed+score {timing['embed_and_score']:.1f} s)")
    if args.limit and results["pairs"] < full.pairs:
        scale = len(full.images) / results["images"]
        estimate = timing["load"] * scale + timing["embed_and_score"] * scale
        print(f"extrapolated to the full {full.pairs} pairs ({len(full.images)} images): "
              f"~{estimate:.0f} s ({estimate / 60:.1f} min)")


if __name__ == "__main__":
    main()
