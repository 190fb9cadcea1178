"""Benchmark of the lrfr service, end to end over HTTP (a script, not a test).

Starts ``lrfr serve`` as a separate process (the command the container runs), enrolls
the 40 ORL subjects (5 images each), then measures:

* ``/v1/verify`` and ``/v1/identify`` latency (p50, p99) and throughput with 1, 8 and 32
  concurrent clients (ORL probes, gallery of 40 subjects / 200 faces);
* ``/v1/identify`` latency on galleries of synthetic vectors (default 100k and 1M), the
  rows written straight into the database, so the first query also times the index
  rebuild that a process does when its index is behind the database.

Prints markdown tables (copy them into docs/benchmarks.md). The client runs on the same
machine as the server, so on a small machine they compete for the CPU.

Usage::

    python benchmarks/service_bench.py --orl ../shared/data/orl
    python benchmarks/service_bench.py --model path/to/model.onnx --gallery-sizes 100000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from sqlalchemy import insert, select, update

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # for tests.support, the tests' way of running the service

from lrfr.client import ApiError, AsyncClient, Client, Retry  # noqa: E402
from models.artifact import load_metadata  # noqa: E402
from service.db import Face, Gallery, Subject, create_db_engine  # noqa: E402
from tests.support.service import free_port, serve  # noqa: E402

logger = logging.getLogger("service_bench")

ADMIN_KEY = "bench-admin-key-0123456789"
CLIENT_KEY = "bench-client-key-0123456789"


@dataclass
class LoadResult:
    """Latencies (seconds) of the requests of one load level and its wall time."""

    name: str
    concurrency: int
    latencies: np.ndarray
    wall_s: float
    errors: int

    def row(self) -> str:
        p50, p99 = np.percentile(self.latencies, [50, 99]) * 1000
        throughput = len(self.latencies) / self.wall_s
        return (
            f"| {self.name} | {self.concurrency} | {len(self.latencies)} | {p50:.1f} | "
            f"{p99:.1f} | {throughput:.1f} | {self.errors} |"
        )


@contextlib.contextmanager
def running_service(
    *, model: Path, database_url: str, data_dir: Path, port: int, extra_env: dict[str, str]
) -> Iterator[str]:
    """Runs ``lrfr serve`` until the block ends; yields its base URL once ready."""
    settings = dict(
        LRFR_MODEL_PATH=str(model),
        LRFR_DATABASE_URL=database_url,
        LRFR_DATA_DIR=str(data_dir),
        LRFR_ADMIN_KEYS=ADMIN_KEY,
        LRFR_CLIENT_KEYS=CLIENT_KEY,
        LRFR_MAX_TOP_K="100",
        **extra_env,
    )
    log = data_dir.parent / "server.log"
    with serve(settings, log, timeout=120, port=port, stop_timeout=60) as base:
        yield base


#: Timed requests are sent once: a retried 429/503 would hide the error in the latency.
ONCE = Retry(attempts=1)


def enroll_orl(base: str, orl: Path, gallery: str = "orl") -> None:
    with Client(base, ADMIN_KEY) as client:
        client.create_gallery(gallery)
        for subject in range(1, 41):
            client.create_subject(gallery, f"s{subject}")
            client.enroll(
                gallery, f"s{subject}", [orl / f"s{subject}" / f"{i}.pgm" for i in range(1, 6)]
            )


async def run_load(
    name: str,
    concurrency: int,
    total: int,
    call: Callable[[AsyncClient, int], Awaitable[object]],
    base: str,
) -> LoadResult:
    """``total`` requests from ``concurrency`` clients, each sending its next request as
    soon as the previous one is answered. Every client has its own connection (a shared
    pool serves coroutines unfairly and adds seconds to the tail that the server never
    sees) and makes one untimed warm-up request first."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(total))
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            AsyncClient(
                api_key=CLIENT_KEY,
                retry=ONCE,
                http=await stack.enter_async_context(
                    httpx.AsyncClient(base_url=base, timeout=600)
                ),
            )
            for _ in range(concurrency)
        ]
        await asyncio.gather(*(call(client, 0) for client in clients))

        async def worker(client: AsyncClient) -> None:
            nonlocal errors
            for number in counter:
                started = time.perf_counter()
                try:
                    await call(client, number)
                except ApiError:
                    errors += 1
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for client in clients))
        wall = time.perf_counter() - started
    return LoadResult(name, concurrency, np.asarray(latencies), wall, errors)


def insert_synthetic(
    database_url: str, *, gallery: str, size: int, dim: int, per_subject: int = 10
) -> float:
    """Writes ``size`` random unit vectors as faces of ``gallery``; returns the seconds."""
    started = time.perf_counter()
    engine = create_db_engine(database_url)
    rng = np.random.default_rng(size)
    chunk = 20_000
    with engine.begin() as connection:
        gallery_id = connection.execute(
            select(Gallery.id).where(Gallery.name == gallery)
        ).scalar_one()
        subjects = size // per_subject
        for start in range(0, subjects, chunk):
            connection.execute(
                insert(Subject),
                [
                    {"gallery_id": gallery_id, "external_id": f"syn{i}", "attributes": {}}
                    for i in range(start, min(subjects, start + chunk))
                ],
            )
        first_subject = connection.execute(
            select(Subject.id).where(Subject.gallery_id == gallery_id).order_by(Subject.id).limit(1)
        ).scalar_one()
        for start in range(0, size, chunk):
            count = min(size, start + chunk) - start
            vectors = rng.normal(size=(count, dim)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            connection.execute(
                insert(Face),
                [
                    {
                        "subject_id": first_subject + (start + i) // per_subject,
                        "gallery_id": gallery_id,
                        "model_version": "synthetic",
                        "embedding": vectors[i].tobytes(),
                        "laplacian": 0.0,
                        "laplacian_var": 0.0,
                        "width": 112,
                        "height": 112,
                    }
                    for i in range(count)
                ],
            )
        connection.execute(
            update(Gallery).where(Gallery.id == gallery_id).values(revision=Gallery.revision + 1)
        )
    engine.dispose()
    return time.perf_counter() - started


async def bench_synthetic(
    base: str, database_url: str, orl: Path, size: int, dim: int, requests: int
) -> tuple[str, float, LoadResult]:
    name = f"synthetic-{size}"
    with Client(base, ADMIN_KEY) as client:
        client.create_gallery(name)
    insert_s = insert_synthetic(database_url, gallery=name, size=size, dim=dim)
    probe = ("p.pgm", (orl / "s1" / "6.pgm").read_bytes())

    async def identify(client: AsyncClient, _: int) -> object:
        return await client.identify(probe, gallery=name, top_k=5)

    async with AsyncClient(base, CLIENT_KEY, timeout=1200, retry=ONCE) as client:
        started = time.perf_counter()
        await identify(client, 0)  # rebuilds the index from the database
        rebuild_s = time.perf_counter() - started
    result = await run_load(f"identify, {size:,} vectors", 1, requests, identify, base)
    with Client(base, ADMIN_KEY, timeout=600) as client:
        client.delete_gallery(name)  # frees its memory
    logger.info("%s: insert %.1f s, first query (rebuild) %.1f s", name, insert_s, rebuild_s)
    return name, rebuild_s, result


async def main_async(args: argparse.Namespace, base: str, dim: int) -> None:
    orl: Path = args.orl
    probes = [
        (f"s{s}-{i}.pgm", (orl / f"s{s}" / f"{i}.pgm").read_bytes())
        for s in range(1, 41)
        for i in range(6, 11)
    ]

    async def verify(client: AsyncClient, n: int) -> object:
        return await client.verify(probes[n % len(probes)], probes[(n * 7 + 3) % len(probes)])

    async def identify(client: AsyncClient, n: int) -> object:
        return await client.identify(probes[n % len(probes)], gallery="orl", top_k=5)

    results: list[LoadResult] = []
    for concurrency in args.concurrency:
        results.append(await run_load("verify", concurrency, args.requests, verify, base))
        results.append(
            await run_load("identify (ORL, 200 faces)", concurrency, args.requests, identify, base)
        )
    synthetic = [
        await bench_synthetic(base, args.database_url, orl, size, dim, args.synthetic_requests)
        for size in args.gallery_sizes
    ]
    print("\n| endpoint | clients | requests | p50 ms | p99 ms | req/s | errors |")
    print("|---|---|---|---|---|---|---|")
    for result in results:
        print(result.row())
    if synthetic:
        print("\n| gallery | first query (index rebuild) s | p50 ms | p99 ms | req/s |")
        print("|---|---|---|---|---|")
        for name, rebuild_s, result in synthetic:
            p50, p99 = np.percentile(result.latencies, [50, 99]) * 1000
            print(
                f"| {name} | {rebuild_s:.1f} | {p50:.1f} | {p99:.1f} | "
                f"{len(result.latencies) / result.wall_s:.1f} |"
            )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orl", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "orl")
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="ONNX artifact (default: the non-learned reference model)",
    )
    parser.add_argument("--database-url", default=None, help="default: SQLite in the work folder")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=400, help="per endpoint and level")
    parser.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32]
    )
    parser.add_argument(
        "--gallery-sizes",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[100_000, 1_000_000],
    )
    parser.add_argument("--synthetic-requests", type=int, default=100)
    parser.add_argument("--batch-window-ms", type=float, default=2.0)
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="LRFR_X=VALUE",
        help="extra service settings, repeatable",
    )
    return parser.parse_args()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    args = parse_args()
    if not (args.orl / "s1" / "1.pgm").is_file():
        raise SystemExit(f"ORL not found at {args.orl} (pass --orl)")
    with tempfile.TemporaryDirectory(prefix="lrfr-bench-") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        model = args.model
        if model is None:
            from service.reference_model import build_reference_model

            model = workdir / "model" / "reference.onnx"
            build_reference_model(model)
        dim = load_metadata(model).embedding_size
        data_dir = workdir / "data"
        args.database_url = args.database_url or f"sqlite:///{data_dir / 'lrfr.sqlite3'}"
        logger.info(
            "machine: %s, %d CPUs; model %s (%d-d); database %s",
            platform.processor() or platform.machine(),
            os.cpu_count(),
            model,
            dim,
            args.database_url.split("@")[-1],
        )
        with running_service(
            model=model,
            database_url=args.database_url,
            data_dir=data_dir,
            port=free_port(),
            extra_env={
                "LRFR_BATCH_WINDOW_MS": str(args.batch_window_ms),
                **dict(item.split("=", 1) for item in args.env),
            },
        ) as base:
            started = time.perf_counter()
            enroll_orl(base, args.orl)
            logger.info(
                "enrolled 40 ORL subjects (200 faces) in %.1f s", time.perf_counter() - started
            )
            asyncio.run(main_async(args, base, dim))


if __name__ == "__main__":
    main()
