"""Identification on large galleries over HTTP: exact FAISS, FAISS IVF, Milvus (a script,
not a test).

Galleries look like faces: embeddings, by the served model, of real aligned crops (LFW
people with several images, and ``faces-extra`` crops), each also degraded and flipped,
topped up to the gallery size with synthetic faces drawn from a distribution fitted to
them (identity centres from a Gaussian mixture fitted to the real people's mean
embeddings, each synthetic subject's faces spread around its centre by the covariance
of real faces around their person's mean; normalised). Queries are real probes: an LFW
image of each gallery person kept out of the gallery, degraded to 28 or 14 px, sent as
an aligned crop.

For each gallery size the rows are written straight into a SQLite database, then for each
configuration ``lrfr serve`` starts on it (the start builds the index from the database:
"build"), answers every probe once (one client, top_k 10), and is restarted (loading
what it persisted: "restart"). Exact FAISS search is one of the configurations, so
recall@1 / recall@10 of the others are measured against it in the same run (subjects, as
``/v1/identify`` answers them). A first server on a tiny gallery gives the fixed cost of a
request (HTTP, decoding, embedding), the same probes. Memory: the server's resident set
size with the gallery loaded, less the tiny server's, per million faces.

The embeddings of the real crops are cached under ``runs/gallery_scale/`` (keyed by the
model's sha256).

Usage::

    python benchmarks/gallery_scale.py --sizes 100000,1000000
    python benchmarks/gallery_scale.py --model reference --sizes 1000000   # service cost
    git worktree add /tmp/before <commit>   # the same run against an earlier service:
    python benchmarks/gallery_scale.py --model reference --sizes 1000000 --backends faiss \
        --baseline-repo /tmp/before
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import httpx
import numpy as np
from PIL import Image
from sqlalchemy import insert, select, update

from models.artifact import load_metadata
from models.embedder import OnnxEmbedder
from service.db import Face, Gallery, Subject, create_db_engine
from service.migrate import upgrade_database
from service.reference_model import build_reference_model
from training.degrade import degrade
from training.faces import crop_lfw_deepfunneled

logger = logging.getLogger("gallery_scale")

REPO_ROOT = Path(__file__).resolve().parents[1]
ADMIN_KEY = "bench-admin-key-0123456789"
CLIENT_KEY = "bench-client-key-0123456789"
ADMIN = {"X-API-Key": ADMIN_KEY}
CLIENT = {"X-API-Key": CLIENT_KEY}
TOP_K = 10


# -- real faces -------------------------------------------------------------------------------


@dataclass
class RealFaces:
    """Embeddings of real crops (gallery side) and the probes (pixels and person)."""

    vectors: np.ndarray  # (n, d) float32, unit
    subjects: np.ndarray  # (n,) str: "lfw:<name>" or "extra:<file>"
    probe_pixels: np.ndarray  # (p, 112, 112, 3) uint8, degraded
    probe_subjects: np.ndarray  # (p,) str
    probe_widths: np.ndarray  # (p,) int


def _lfw_people(lfw: Path, people: int, rng: np.random.Generator) -> list[list[Path]]:
    folders = sorted(p for p in (lfw / "images").iterdir() if p.is_dir())
    several = [sorted(f.glob("*.jpg")) for f in folders]
    several = [images for images in several if len(images) >= 2]
    chosen = rng.choice(len(several), size=min(people, len(several)), replace=False)
    return [several[i] for i in sorted(chosen)]


def _copies(crop: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """The crop, and a flipped copy degraded to a random width (augmented, low-res)."""
    flipped = np.ascontiguousarray(crop[:, ::-1])
    return [crop, degrade(flipped, int(rng.choice([56, 28, 14])))]


def embed_real(args: argparse.Namespace, model: Path, cache: Path) -> RealFaces:
    if cache.is_file():
        data = np.load(cache, allow_pickle=False)
        logger.info("real embeddings from %s", cache)
        return RealFaces(*(data[k] for k in ("vectors", "subjects", "probe_pixels",
                                              "probe_subjects", "probe_widths")))
    rng = np.random.default_rng(args.seed)
    embedder = OnnxEmbedder(model, threads=args.threads)
    crops: list[np.ndarray] = []
    subjects: list[str] = []
    probe_pixels, probe_subjects, probe_widths = [], [], []
    for number, images in enumerate(_lfw_people(args.lfw, args.lfw_people, rng)):
        name = f"lfw:{images[0].parent.name}"
        probe = crop_lfw_deepfunneled(Image.open(images[0]))
        width = (28, 14)[number % 2]
        probe_pixels.append(degrade(probe, width))
        probe_subjects.append(name)
        probe_widths.append(width)
        for path in images[1 : 1 + args.lfw_images]:
            for copy in _copies(crop_lfw_deepfunneled(Image.open(path)), rng):
                crops.append(copy)
                subjects.append(name)
    extra = sorted((args.extra / "aaf").glob("*.jpg"))[: args.extra_faces // 2]
    extra += sorted((args.extra / "utkface").glob("*.jpg"))[: args.extra_faces - len(extra)]
    for path in extra:
        crop = np.asarray(Image.open(path).convert("RGB").resize((112, 112)))
        for copy in _copies(crop, rng):
            crops.append(copy)
            subjects.append(f"extra:{path.parent.name}/{path.stem}")
    logger.info("embedding %d real crops (%d probes)", len(crops), len(probe_pixels))
    vectors = np.concatenate([
        embedder.embed_images([Image.fromarray(c) for c in crops[i : i + 64]])
        for i in range(0, len(crops), 64)
    ]).astype(np.float32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    faces = RealFaces(vectors, np.asarray(subjects), np.stack(probe_pixels),
                      np.asarray(probe_subjects), np.asarray(probe_widths))
    np.savez(cache, vectors=faces.vectors, subjects=faces.subjects,
             probe_pixels=faces.probe_pixels, probe_subjects=faces.probe_subjects,
             probe_widths=faces.probe_widths)
    return faces


# -- synthetic faces ------------------------------------------------------------------------


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@dataclass
class FaceDistribution:
    """Identity centres ~ a Gaussian mixture fitted to real people's mean embeddings;
    faces ~ centre + the pooled within-person covariance of real faces; normalised."""

    weights: np.ndarray
    means: np.ndarray
    centre_factors: np.ndarray  # (k, d, d) Cholesky factors
    within_factor: np.ndarray  # (d, d)

    @classmethod
    def fit(cls, vectors: np.ndarray, subjects: np.ndarray, components: int) -> FaceDistribution:
        names, inverse = np.unique(subjects, return_inverse=True)
        dim = vectors.shape[1]
        sums = np.zeros((len(names), dim))
        np.add.at(sums, inverse, vectors)
        counts = np.bincount(inverse, minlength=len(names))
        centres = _unit(sums / counts[:, None])
        several = counts[inverse] >= 2
        residuals = vectors[several] - centres[inverse[several]]
        within = np.cov(residuals.T) + 1e-6 * np.eye(dim)
        kmeans = faiss.Kmeans(dim, components, niter=25, seed=1)
        kmeans.train(centres.astype(np.float32))
        _, assignment = kmeans.index.search(centres.astype(np.float32), 1)
        weights, means, factors = [], [], []
        for component in range(components):
            members = centres[assignment[:, 0] == component]
            if len(members) < 3:
                continue
            weights.append(len(members))
            means.append(members.mean(axis=0))
            factors.append(np.linalg.cholesky(np.cov(members.T) + 1e-6 * np.eye(dim)))
        return cls(np.asarray(weights) / np.sum(weights), np.stack(means), np.stack(factors),
                   np.linalg.cholesky(within))

    def sample(self, subjects: int, per_subject: int, rng: np.random.Generator) -> np.ndarray:
        """(subjects * per_subject, d) unit vectors, each subject's faces consecutive."""
        dim = self.means.shape[1]
        component = rng.choice(len(self.weights), size=subjects, p=self.weights)
        out = np.empty((subjects * per_subject, dim), np.float32)
        chunk = 50_000
        for start in range(0, subjects, chunk):
            part = component[start : start + chunk]
            z = rng.standard_normal((len(part), dim))
            centres = self.means[part] + np.einsum("nij,nj->ni", self.centre_factors[part], z)
            centres = _unit(centres)
            noise = rng.standard_normal((len(part), per_subject, dim)) @ self.within_factor.T
            faces = _unit((centres[:, None, :] + noise).reshape(-1, dim))
            out[start * per_subject : (start + len(part)) * per_subject] = faces
        return out


def nearest_other_cosine(vectors: np.ndarray, sample: int, rng: np.random.Generator) -> float:
    chosen = vectors[rng.choice(len(vectors), size=min(sample, len(vectors)), replace=False)]
    sims = chosen @ chosen.T
    np.fill_diagonal(sims, -2)
    return float(np.mean(sims.max(axis=1)))


# -- the database ------------------------------------------------------------------------------


def write_gallery(database_url: str, *, name: str, model: str, version: str,
                  vectors: np.ndarray, subjects: np.ndarray) -> float:
    """Writes a gallery with its subjects and faces straight into the database."""
    started = time.perf_counter()
    engine = create_db_engine(database_url)
    upgrade_database(engine)
    names, inverse = np.unique(subjects, return_inverse=True)
    with engine.begin() as connection:
        connection.execute(insert(Gallery).values(
            name=name, model_name=model, model_version=version,
            embedding_size=vectors.shape[1], revision=1))
        gallery_id = connection.execute(select(Gallery.id).where(Gallery.name == name)).scalar_one()
        chunk = 20_000
        for start in range(0, len(names), chunk):
            connection.execute(insert(Subject), [
                {"gallery_id": gallery_id, "external_id": str(n)[:128], "attributes": {}}
                for n in names[start : start + chunk]
            ])
        first = connection.execute(select(Subject.id).where(Subject.gallery_id == gallery_id)
                                   .order_by(Subject.id).limit(1)).scalar_one()
        for start in range(0, len(vectors), chunk):
            rows = range(start, min(len(vectors), start + chunk))
            connection.execute(insert(Face), [
                {"subject_id": first + int(inverse[i]), "gallery_id": gallery_id,
                 "model_version": version, "embedding": vectors[i].tobytes(),
                 "laplacian": 3.0, "laplacian_var": 0.0, "width": 112, "height": 112}
                for i in rows
            ])
        connection.execute(update(Gallery).where(Gallery.id == gallery_id)
                           .values(revision=Gallery.revision + 1))
    engine.dispose()
    return time.perf_counter() - started


# -- the service -------------------------------------------------------------------------------


def _rss_mb(pid: int) -> float:
    """The server's private resident memory (RssAnon): the database file's memory map
    (SQLite reads through one) is page cache the kernel shares and reclaims, left out."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextlib.contextmanager
def serve(*, model: Path, database_url: str, data_dir: Path, env: dict[str, str],
          port: int, timeout: float = 3600,
          repo: Path = REPO_ROOT) -> Iterator[tuple[str, subprocess.Popen, float]]:
    """``lrfr serve`` until the block ends; yields (base URL, process, seconds to ready).

    ``repo``: the checkout whose service runs (another one: a baseline to compare with).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    full = {k: v for k, v in os.environ.items() if not k.startswith("LRFR_")}
    full.update(LRFR_MODEL_PATH=str(model), LRFR_DATABASE_URL=database_url,
                LRFR_DATA_DIR=str(data_dir), LRFR_ADMIN_KEYS=ADMIN_KEY,
                LRFR_CLIENT_KEYS=CLIENT_KEY, LRFR_MIN_ENROLL_QUALITY="off", **env)
    log = open(data_dir / "server.log", "a")  # noqa: SIM115 - closed below
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "lrfr.cli", "serve", "--port", str(port), "--log-level",
         "info"], env=full, cwd=repo, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the service exited; see {log.name}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            if time.perf_counter() - started > timeout:
                raise RuntimeError("the service did not start")
            time.sleep(0.2)
        yield base, process, time.perf_counter() - started
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=600)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Answers:
    latencies: np.ndarray
    top: list[list[str]] = field(default_factory=list)
    #: seconds the server spent searching vectors per request (lrfr_vector_search_seconds)
    search_s: float = float("nan")


def _search_seconds(http: httpx.Client) -> float:
    text = http.get("/metrics", headers=ADMIN).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("lrfr_vector_search_seconds_sum"))


def ask(base: str, gallery: str, probes: list[bytes], warmup: int = 5) -> Answers:
    latencies, top = [], []
    searched = 0.0
    with httpx.Client(base_url=base, headers=CLIENT, timeout=600) as http:
        for number, probe in enumerate([*probes[:warmup], *probes]):
            started = time.perf_counter()
            response = http.post("/v1/identify", files={"image": ("p.png", probe)},
                                 data={"gallery": gallery, "top_k": str(TOP_K),
                                       "face": "aligned"})
            elapsed = time.perf_counter() - started
            response.raise_for_status()
            if number >= warmup:
                latencies.append(elapsed)
                top.append([m["subject"] for m in response.json()["matches"]])
            elif number == warmup - 1:
                searched = _search_seconds(http)
        searched = _search_seconds(http) - searched
    return Answers(np.asarray(latencies), top, searched / len(probes))


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the indexes alone ----------------------------------------------------------------------------


def _timed_search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    """Median seconds of one single-query search, and the ids found (queries one by one)."""
    times, found = [], []
    for query in queries:
        started = time.perf_counter()
        _, ids = index.search(query[None, :], k)
        times.append(time.perf_counter() - started)
        found.append(ids[0])
    return float(np.median(times)), np.stack(found)


def _recalls(found: np.ndarray, exact: np.ndarray) -> tuple[float, float]:
    at1 = float(np.mean(found[:, 0] == exact[:, 0]))
    at10 = float(np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact,
                                                                       strict=True)]))
    return at1, at10


def index_table(vectors: np.ndarray, queries: np.ndarray, sizes: list[int],
                recall: float, hnsw_max: int, nlist_factors: list[int]) -> None:
    """Flat, IVF (as the service builds it) and HNSW on the first ``n`` gallery vectors:
    single-query latency on one thread, recall of the nearest faces against flat, build
    time and bytes per vector."""
    from service.index import AnnPolicy, GalleryIndex

    faiss.omp_set_num_threads(1)
    print("\n| faces | index | query ms (1 thread) | recall@1 | recall@10 | build s | "
          "bytes per face |")
    print("|---|---|---|---|---|---|---|")
    dim = vectors.shape[1]
    for n in sizes:
        base = np.ascontiguousarray(vectors[:n])
        flat = faiss.IndexFlatIP(dim)
        flat.add(base)
        flat_s, exact = _timed_search(flat, queries, TOP_K)
        print(f"| {n:,} | flat (exact) | {flat_s * 1000:.2f} | 1 | 1 | - | {dim * 4 + 8} |")
        for factor in nlist_factors:
            policy = AnnPolicy(min_faces=1, recall=recall)
            policy = AnnPolicy(min_faces=1, recall=recall, nlist=policy.nlist_for(n) * factor)
            faiss.omp_set_num_threads(2)
            started = time.perf_counter()
            ivf = GalleryIndex.build(dim, np.arange(n), base, revision=0, policy=policy)
            ivf_build = time.perf_counter() - started
            faiss.omp_set_num_threads(1)
            ivf_s, found = _timed_search(ivf.index, queries, TOP_K)
            at1, at10 = _recalls(found, exact)
            size = len(faiss.serialize_index(ivf.index)) / n
            nlist, nprobe = ivf.index.nlist, ivf.index.nprobe  # type: ignore[attr-defined]
            print(f"| {n:,} | IVF, nlist {nlist}, nprobe {nprobe} (calibrated) | "
                  f"{ivf_s * 1000:.2f} | {at1:.3f} | {at10:.3f} | {ivf_build:.1f} | "
                  f"{size:.0f} |")
            sys.stdout.flush()
            del ivf
        if n > hnsw_max:
            continue
        faiss.omp_set_num_threads(2)
        hnsw = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        started = time.perf_counter()
        hnsw.add(base)
        hnsw_build = time.perf_counter() - started
        faiss.omp_set_num_threads(1)
        size = len(faiss.serialize_index(hnsw)) / n
        for ef in (16, 32, 64, 128, 256):
            hnsw.hnsw.efSearch = ef
            hnsw_s, found = _timed_search(hnsw, queries, TOP_K)
            at1, at10 = _recalls(found, exact)
            print(f"| {n:,} | HNSW, M 32, efSearch {ef} | {hnsw_s * 1000:.2f} | {at1:.3f} | "
                  f"{at10:.3f} | {hnsw_build:.1f} | {size:.0f} |")
            if at1 >= recall:
                break
        del hnsw
        sys.stdout.flush()


# -- main ----------------------------------------------------------------------------------------


def configurations(args: argparse.Namespace) -> dict[str, dict[str, str]]:
    configs = {
        "FAISS exact (flat)": {"LRFR_ANN_MIN_FACES": str(10**9)},
        "FAISS IVF": {"LRFR_ANN_MIN_FACES": str(args.ann_min_faces),
                      "LRFR_ANN_RECALL": str(args.ann_recall)},
    }
    if "milvus" in args.backends:
        configs[f"Milvus (milvus-lite, {args.milvus_index})"] = {
            "LRFR_VECTOR_BACKEND": "milvus", "LRFR_MILVUS_INDEX_TYPE": args.milvus_index,
            "LRFR_MILVUS_INDEX_PARAMS": args.milvus_index_params,
            "LRFR_MILVUS_SEARCH_PARAMS": args.milvus_search_params,
        }
    return configs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data = REPO_ROOT.parent / "shared" / "data"
    parser.add_argument("--lfw", type=Path, default=data / "lfw")
    parser.add_argument("--extra", type=Path, default=data / "faces-extra")
    parser.add_argument("--model", default="bundled",
                        help="'bundled', 'reference' (the non-learned model: service cost), "
                        "or an .onnx path")
    parser.add_argument("--sizes", default="100000,1000000",
                        help="gallery sizes served over HTTP (empty: none)")
    parser.add_argument("--backends", default="faiss,milvus")
    parser.add_argument("--milvus-max-size", type=int, default=10**9,
                        help="skip Milvus above this gallery size")
    parser.add_argument("--lfw-people", type=int, default=1000)
    parser.add_argument("--lfw-images", type=int, default=4, help="gallery images per person")
    parser.add_argument("--extra-faces", type=int, default=1500)
    parser.add_argument("--per-subject", type=int, default=4, help="synthetic faces per subject")
    parser.add_argument("--probes", type=int, default=300)
    parser.add_argument("--ann-min-faces", type=int, default=50_000)
    parser.add_argument("--ann-recall", type=float, default=0.99)
    parser.add_argument("--index-sizes", default="",
                        help="also compare flat, IVF and HNSW alone at these sizes")
    parser.add_argument("--hnsw-max-size", type=int, default=10**9)
    parser.add_argument("--nlist-factors", default="1",
                        help="IVF variants in the index table: multiples of the service's nlist")
    parser.add_argument("--milvus-index", default="AUTOINDEX")
    parser.add_argument("--milvus-index-params", default="{}")
    parser.add_argument("--milvus-search-params", default="{}")
    parser.add_argument("--baseline-repo", type=Path, default=None,
                        help="another checkout (a git worktree of an earlier commit): its "
                        "service also answers the tiny and approximate configurations, rows "
                        "marked '(baseline)', to compare the cost of a request in one run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="default: a temporary folder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    with contextlib.ExitStack() as stack:
        # absolute: a baseline service runs in another checkout's folder
        work = (args.work or Path(stack.enter_context(tempfile.TemporaryDirectory()))).resolve()
        work.mkdir(parents=True, exist_ok=True)
        if args.model == "bundled":
            model = REPO_ROOT / "models" / "bundled" / "lrfr.onnx"
        elif args.model == "reference":
            model = work / "reference" / "reference.onnx"
            model.parent.mkdir(parents=True, exist_ok=True)
            build_reference_model(model)
        else:
            model = Path(args.model)
        meta = load_metadata(model)
        if meta.comparison != "cosine":
            # the synthetic faces are drawn as single unit vectors, not pair-space blocks
            raise SystemExit(f"{model} compares in the {meta.comparison}; the synthetic "
                             "gallery models one unit vector per face: pass a cosine model "
                             "(e.g. the 2.1.0 graph: git show b765ca8:models/bundled/lrfr.onnx)")
        sha = hashlib.sha256(model.read_bytes()).hexdigest()[:12]
        cache = REPO_ROOT / "runs" / "gallery_scale" / (
            f"real-{sha}-{args.lfw_people}-{args.lfw_images}-{args.extra_faces}-{args.seed}.npz")
        real = embed_real(args, model, cache)
        rng = np.random.default_rng(args.seed + 1)
        probe_order = rng.permutation(len(real.probe_pixels))[: args.probes]
        probes = [_png(real.probe_pixels[i]) for i in probe_order]
        distribution = FaceDistribution.fit(real.vectors, real.subjects, components=16)
        check = distribution.sample(2500, 2, rng)
        print(f"\nmodel {meta.name} {meta.version} ({meta.embedding_size}-d); "
              f"{len(real.vectors)} real gallery embeddings of "
              f"{len(np.unique(real.subjects))} people/crops, {len(probes)} probes")
        real_nn = nearest_other_cosine(real.vectors, 5000, rng)
        synthetic_nn = nearest_other_cosine(check, 5000, rng)
        print(f"mean cosine to the nearest other of 5,000 vectors: real {real_nn:.3f}, "
              f"synthetic {synthetic_nn:.3f}")

        if args.index_sizes:
            sizes = [int(n) for n in args.index_sizes.split(",")]
            embedder = OnnxEmbedder(model, threads=args.threads)
            queries = embedder.embed_images(
                [Image.fromarray(real.probe_pixels[i]) for i in probe_order]
            ).astype(np.float32)
            synthetic = max(0, max(sizes) - len(real.vectors))
            everything = np.concatenate([real.vectors, distribution.sample(
                -(-synthetic // args.per_subject), args.per_subject, rng)[:synthetic]])
            # real faces spread through the gallery, not all at its start
            everything = everything[np.random.default_rng(args.seed).permutation(len(everything))]
            index_table(everything, queries, sizes, args.ann_recall, args.hnsw_max_size,
                        [int(f) for f in args.nlist_factors.split(",")])
            del everything
        if not args.sizes:
            return
        # the fixed cost of a request: the same probes against a one-person gallery
        tiny_db = f"sqlite:///{work / 'tiny.sqlite3'}"
        first = real.subjects == real.subjects[0]
        write_gallery(tiny_db, name="tiny", model=meta.name, version=meta.version,
                      vectors=real.vectors[first], subjects=real.subjects[first])
        rows: list = []
        if args.baseline_repo is not None:
            with serve(model=model, database_url=tiny_db, data_dir=work / "tiny-baseline",
                       env={}, port=free_port(), repo=args.baseline_repo) as (base, _, start_s):
                rows.append(("tiny (1 person) (baseline)", 1, "-", ask(base, "tiny", probes),
                             None, start_s, None, None))
        with serve(model=model, database_url=tiny_db, data_dir=work / "tiny",
                   env={}, port=free_port()) as (base, process, base_start_s):
            fixed = ask(base, "tiny", probes)
            base_rss = _rss_mb(process.pid)
        rows.append(("tiny (1 person)", 1, "-", fixed, None, base_start_s, None, None))
        logger.info("tiny gallery: start %.1f s, %.0f MB resident", base_start_s, base_rss)

        for size in (int(n) for n in args.sizes.split(",")):
            synthetic = max(0, size - len(real.vectors))
            subjects_needed = -(-synthetic // args.per_subject)
            vectors = np.concatenate([
                real.vectors,
                distribution.sample(subjects_needed, args.per_subject, rng)[:synthetic],
            ])
            subjects = np.concatenate([
                real.subjects,
                np.asarray([f"syn:{i // args.per_subject}" for i in range(synthetic)]),
            ])
            database = f"sqlite:///{work / f'gallery-{size}.sqlite3'}"
            write_s = write_gallery(database, name="g", model=meta.name, version=meta.version,
                                    vectors=vectors, subjects=subjects)
            del vectors
            logger.info("%d faces written in %.0f s", size, write_s)
            exact: Answers | None = None
            for name, env in configurations(args).items():
                if "Milvus" in name and size > args.milvus_max_size:
                    continue
                folder = work / f"{size}-{len(rows)}"
                port = free_port()
                # first start: builds the index from the database; the second loads what
                # the first persisted and answers the probes (a server in its steady state)
                with serve(model=model, database_url=database, data_dir=folder, env=env,
                           port=port) as (base, _, build_s):
                    pass
                if args.baseline_repo is not None and "exact" not in name:
                    # the baseline loads the index the first start persisted (same format)
                    with serve(model=model, database_url=database, data_dir=folder, env=env,
                               port=port, repo=args.baseline_repo) as (base, process, start_s):
                        answers = ask(base, "g", probes)
                        rss = _rss_mb(process.pid)
                    rows.append((f"{name} (baseline)", size, write_s, answers, exact,
                                 float("nan"), start_s, (rss - base_rss) / size * 1e6 / 1024))
                    print_table(rows)
                with serve(model=model, database_url=database, data_dir=folder, env=env,
                           port=port) as (base, process, restart_s):
                    answers = ask(base, "g", probes)
                    rss = _rss_mb(process.pid)
                if exact is None:
                    exact = answers
                rows.append((name, size, write_s, answers, exact, build_s, restart_s,
                             (rss - base_rss) / size * 1e6 / 1024))
                print_table(rows)
        print_table(rows, final=True)
        print(json.dumps({"model": meta.name, "version": meta.version, "args": {
            k: str(v) for k, v in vars(args).items()}}))


def print_table(rows: list, final: bool = False) -> None:
    print("\n| gallery | faces | p50 ms | p99 ms | of which search, mean ms | recall@1 vs exact | "
          "recall@10 vs exact | start with build s | restart s | private GB per 1M faces |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, size, _, answers, exact, build_s, restart_s, gb in rows:
        p50, p99 = np.percentile(answers.latencies, [50, 99]) * 1000
        if exact is None:
            print(f"| {name} | {size:,} | {p50:.1f} | {p99:.1f} | {answers.search_s * 1000:.2f} "
                  f"| | | {build_s:.0f} | | |")
            continue
        at1 = np.mean([a[:1] == e[:1] for a, e in zip(answers.top, exact.top, strict=True)])
        at10 = np.mean([len(set(a) & set(e)) / max(1, len(e))
                        for a, e in zip(answers.top, exact.top, strict=True)])
        build = "-" if np.isnan(build_s) else f"{build_s:.0f}"
        print(f"| {name} | {size:,} | {p50:.1f} | {p99:.1f} | {answers.search_s * 1000:.2f} | "
              f"{at1:.3f} | {at10:.3f} | {build} | {restart_s:.0f} | {gb:.2f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
