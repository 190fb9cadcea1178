"""What face finding costs: /v1/verify latency with face=aligned vs face=auto (a script).

Starts ``lrfr serve`` with the bundled model and sends 60 ORL pairs (92x112 grey photos)
one at a time with each ``face`` mode; prints p50 / p99 in ms over the last 50.

    python benchmarks/face_latency.py --orl ../shared/data/orl
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from service_bench import CLIENT_KEY, free_port, running_service

from lrfr.client import Client, Retry

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orl", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=REPO / "models/bundled/lrfr.onnx")
    parser.add_argument("--requests", type=int, default=60)
    args = parser.parse_args()
    print("| request | p50 (ms) | p99 (ms) |\n|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        with running_service(model=args.model, database_url=f"sqlite:///{data}/db.sqlite3",
                             data_dir=data, port=free_port(), extra_env={}) as base, \
                Client(base, CLIENT_KEY, retry=Retry(attempts=1)) as client:
            for face in ("aligned", "auto"):
                latencies = []
                for i in range(args.requests):
                    subject = args.orl / f"s{1 + i % 40}"
                    first = ("a.pgm", (subject / "1.pgm").read_bytes())
                    second = ("b.pgm", (subject / "2.pgm").read_bytes())
                    started = time.perf_counter()
                    client.verify(first, second, face=face)
                    latencies.append(time.perf_counter() - started)
                ms = np.asarray(latencies[10:]) * 1000  # the first ones warm up
                print(f"| /v1/verify, two ORL photos, face={face} | "
                      f"{np.percentile(ms, 50):.1f} | {np.percentile(ms, 99):.1f} |")


if __name__ == "__main__":
    main()
