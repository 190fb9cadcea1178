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

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from service_bench import CLIENT, _free_port, running_service

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
                             data_dir=data, port=_free_port(), extra_env={}) as base, \
                httpx.Client(base_url=base, headers=CLIENT, timeout=60) as http:
            for face in ("aligned", "auto"):
                latencies = []
                for i in range(args.requests):
                    subject = args.orl / f"s{1 + i % 40}"
                    files = {"image1": ("a.pgm", (subject / "1.pgm").read_bytes()),
                             "image2": ("b.pgm", (subject / "2.pgm").read_bytes())}
                    started = time.perf_counter()
                    response = http.post("/v1/verify", files=files, data={"face": face})
                    latencies.append(time.perf_counter() - started)
                    response.raise_for_status()
                ms = np.asarray(latencies[10:]) * 1000  # the first ones warm up
                print(f"| /v1/verify, two ORL photos, face={face} | "
                      f"{np.percentile(ms, 50):.1f} | {np.percentile(ms, 99):.1f} |")


if __name__ == "__main__":
    main()
