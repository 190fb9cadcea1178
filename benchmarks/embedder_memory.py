"""Resident memory of ``OnnxEmbedder`` per model (a script, not a test).

Each model is loaded in a fresh Python process (so one's memory does not count for the
next): the process's resident set (``VmRSS``) before loading, after loading, and after
one batch of 32 faces, measured ``--runs`` times; the table gives the medians and the
growth over the bare interpreter with numpy and onnxruntime imported.

Usage::

    python benchmarks/embedder_memory.py runs/models-2.1.0/lrfr.onnx models/bundled/lrfr.onnx
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import json, sys
import numpy as np, onnxruntime  # noqa: F401  (imported before the baseline)
sys.path.insert(0, sys.argv[2])
from models.embedder import OnnxEmbedder

def rss():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmRSS")) / 1024

bare = rss()
embedder = OnnxEmbedder(sys.argv[1], threads=2, providers=["CPUExecutionProvider"])
loaded = rss()
embedder.embed_pixels(np.zeros((32, 112, 112, 3), np.uint8))
print(json.dumps({"bare": bare, "loaded": loaded, "batch": rss()}))
"""


def measure(model: Path) -> dict[str, float]:
    result = subprocess.run([sys.executable, "-c", _CHILD, str(model), str(REPO_ROOT)],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print("| model | loaded, MB over bare | after a batch of 32, MB over bare |")
    print("|---|---|---|")
    for model in args.models:
        runs = [measure(model) for _ in range(args.runs)]
        loaded = np.median([r["loaded"] - r["bare"] for r in runs])
        batch = np.median([r["batch"] - r["bare"] for r in runs])
        print(f"| {model} | {loaded:.0f} | {batch:.0f} |")


if __name__ == "__main__":
    main()
