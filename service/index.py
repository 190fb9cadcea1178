"""FAISS indexes of gallery embeddings, and their crash-safe files.

One index per gallery over the model's stored vectors (inner product: the cosine, or for
a pair-space model the rule's similarity with a probe's query vector, ``models.comparison``),
keyed by the database id of each face. Below ``AnnPolicy.min_faces`` it is exact
(``IndexIDMap2(IndexFlatIP)``); from there on it is an inverted file
(``IndexIVFFlat``) trained on the gallery's own vectors, its ``nprobe`` calibrated at
training time for a recall@1 target against the exact scan, and retrained once the
gallery has grown by ``retrain_growth`` (``needs_rebuild``). Removed ids leave both kinds
at once, so a deleted face is never returned.

The database is the source of truth; an index file is a cache that records the gallery
revision, the number of vectors and a hash of their ids, so a stale or corrupted file is
detected and the index rebuilt. Files are written to a temporary file, fsynced and
renamed atomically, one writer at a time (an ``flock`` on ``.lock`` in the index folder).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from models.comparison import Comparison
from models.comparison import queries as query_vectors

logger = logging.getLogger(__name__)

MAGIC = b"LRFRIDX1"
_HEADER_LEN = struct.Struct("<I")


class IndexFileError(ValueError):
    """An index file is unreadable, corrupted or does not belong to the gallery."""


def ids_digest(ids: np.ndarray | list[int]) -> str:
    """Order-independent SHA-256 of a set of int64 ids."""
    array = np.sort(np.asarray(ids, dtype=np.int64))
    return hashlib.sha256(array.tobytes()).hexdigest()


class ReadWriteLock:
    """Many readers or one writer (FAISS searches may run together, writes may not)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._readers:
                self._cond.wait()
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


@dataclass(frozen=True)
class IndexState:
    """What an index claims to hold, compared with the database."""

    revision: int
    count: int
    ids_sha256: str


@dataclass(frozen=True)
class AnnPolicy:
    """When a gallery's index is approximate, and how (``LRFR_ANN_*`` settings).

    Attributes:
        min_faces: galleries with fewer faces are searched exactly (flat scan).
        nlist: inverted lists of the IVF index; 0: about ``sqrt(faces)`` (a power of two).
        nprobe: lists visited per query; 0: the smallest that reaches ``recall`` on
            calibration queries when the index is trained.
        recall: the share of the exact scan's 10 nearest other faces of a gallery face that
            the calibrated ``nprobe`` finds (a stand-in for probes' recall@1).
        retrain_growth: retrain once the gallery has this many times the faces it was
            trained on (or has shrunk below ``1 / retrain_growth`` of them).
        calibration_queries: gallery vectors used as queries to calibrate ``nprobe``.
    """

    min_faces: int = 100_000
    nlist: int = 0
    nprobe: int = 0
    recall: float = 0.99
    retrain_growth: float = 2.0
    calibration_queries: int = 500

    def nlist_for(self, count: int) -> int:
        if self.nlist:
            return self.nlist
        return int(min(65_536, max(16, 2 ** round(np.log2(max(1.0, np.sqrt(count)))))))


#: nearest other faces of a calibration query that the IVF index must find
_CALIBRATION_NEIGHBOURS = 10


def _unit_rows(vectors: np.ndarray, dim: int) -> np.ndarray:
    return np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, dim)


def _calibrate_nprobe(
    ivf: faiss.IndexIVFFlat, ids: np.ndarray, vectors: np.ndarray, policy: AnnPolicy,
    comparison: Comparison = "cosine",
) -> tuple[int, float]:
    """The smallest ``nprobe`` (a power of two, then refined in eighths of it) at which the
    IVF index finds, on average, ``policy.recall`` of the exact search's 10 nearest other
    faces of gallery faces used as queries; returns it with the recall measured. The
    queries are the faces' query vectors under the model's ``comparison``
    (``models.comparison``), as a probe searches.

    Why the 10 nearest and not the nearest: a probe (another photo, degraded) lies farther
    from its match than a gallery face from its nearest neighbour, and its match spreads
    over more lists. On LFW probes degraded to 28 and 14 px against a 1M face-like gallery,
    this recall stayed at or just below the probes' recall@1; recall@1 of the nearest
    other face over-estimated it (docs/benchmarks.md, "Large galleries").
    """
    rng = np.random.default_rng(0)
    n = min(policy.calibration_queries, len(ids))
    k = min(_CALIBRATION_NEIGHBOURS + 1, len(ids))
    if n == 0 or k < 2:
        return 1, 1.0
    chosen = rng.choice(len(ids), size=n, replace=False)
    queries = np.ascontiguousarray(query_vectors(vectors[chosen], comparison))
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    _, exact_rows = exact.search(queries, k)
    del exact
    truth = [set(ids[row[row >= 0]].tolist()) - {ids[own]} for row, own in
             zip(exact_rows, chosen, strict=True)]

    def recall_at(nprobe: int) -> float:
        ivf.nprobe = nprobe
        _, found = ivf.search(queries, k)
        return float(np.mean([
            len(expected & set(row.tolist())) / max(1, len(expected))
            for expected, row in zip(truth, found, strict=True)
        ]))

    # doubling finds the first power of two that reaches the target ...
    nprobe, recall = 1, recall_at(1)
    while recall < policy.recall and nprobe < ivf.nlist:
        nprobe = min(ivf.nlist, nprobe * 2)
        recall = recall_at(nprobe)
    # ... then eighths of it between the last miss and it: at 1M faces 48 lists reached
    # the target where the power of two visited 64 (a 0.3 ms shorter scan)
    step = nprobe // 8
    if recall >= policy.recall and step:
        for smaller in range(nprobe // 2 + step, nprobe, step):
            found_recall = recall_at(smaller)
            if found_recall >= policy.recall:
                return smaller, found_recall
    return nprobe, recall


class GalleryIndex:
    """The FAISS index of one gallery, with the database revision it reflects.

    Args:
        dim: embedding size.
        revision: the gallery revision the contents match (-1: unknown).
    """

    def __init__(self, dim: int, revision: int = -1) -> None:
        self.dim = dim
        self.revision = revision
        self.index: faiss.Index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        #: the number of vectors an IVF index was trained on (0: exact index)
        self.trained_on = 0
        self.lock = ReadWriteLock()
        self._journal: list[tuple[np.ndarray, np.ndarray | None]] | None = None

    @classmethod
    def build(
        cls,
        dim: int,
        ids: np.ndarray,
        vectors: np.ndarray,
        *,
        revision: int,
        policy: AnnPolicy | None = None,
        comparison: Comparison = "cosine",
    ) -> GalleryIndex:
        """A new index of ``vectors`` under ``ids``: exact below ``policy.min_faces``, else
        an IVF index trained on them with ``nprobe`` calibrated (or set by the policy) for
        the query vectors of the model's ``comparison``."""
        policy = policy or AnnPolicy()
        ids = np.asarray(ids, dtype=np.int64)
        vectors = _unit_rows(vectors, dim)
        result = cls(dim, revision=revision)
        if len(ids) < policy.min_faces:
            result.add(ids, vectors, revision=revision)
            return result
        nlist = policy.nlist_for(len(ids))
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        # 10 k-means iterations on <= 64 points per list: the lists need not be optimal, only
        # balanced enough; nprobe is calibrated on what they are
        ivf.cp.niter = 10
        ivf.cp.max_points_per_centroid = 64
        ivf.cp.seed = 1234
        ivf.train(vectors)
        ivf.add_with_ids(vectors, ids)
        if policy.nprobe:
            ivf.nprobe = min(policy.nprobe, nlist)
        else:
            ivf.nprobe, recall = _calibrate_nprobe(ivf, ids, vectors, policy, comparison)
            logger.info(
                "IVF index of %d vectors: nlist %d, nprobe %d (recall %.3f of the 10 nearest "
                "other faces on calibration)",
                len(ids), nlist, ivf.nprobe, recall,
            )
        result.index = ivf
        result.trained_on = len(ids)
        return result

    @property
    def kind(self) -> str:
        """``flat`` (exact) or ``ivf`` (approximate)."""
        return "ivf" if isinstance(self.index, faiss.IndexIVF) else "flat"

    @property
    def exact(self) -> bool:
        return self.kind == "flat"

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    def ids(self) -> np.ndarray:
        if isinstance(self.index, faiss.IndexIVF):
            return self._ivf_contents(vectors=False)[0]
        assert isinstance(self.index, faiss.IndexIDMap2)
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def contents(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of every entry; caller holds the read lock."""
        if isinstance(self.index, faiss.IndexIVF):
            ids, vectors = self._ivf_contents(vectors=True)
            assert vectors is not None
            return ids, vectors
        assert isinstance(self.index, faiss.IndexIDMap2)
        if not self.count:
            return self.ids(), np.zeros((0, self.dim), np.float32)
        # positions in the flat index follow the id map
        return self.ids(), self.index.index.reconstruct_n(0, self.count)

    def _ivf_contents(self, *, vectors: bool) -> tuple[np.ndarray, np.ndarray | None]:
        ivf = self.index
        assert isinstance(ivf, faiss.IndexIVF)
        lists = ivf.invlists
        assert lists is not None
        id_parts, vector_parts = [np.zeros(0, dtype=np.int64)], [np.zeros((0, self.dim), "f4")]
        for list_no in range(ivf.nlist):
            size = lists.list_size(list_no)
            if not size:
                continue
            id_parts.append(faiss.rev_swig_ptr(lists.get_ids(list_no), size).copy())
            if vectors:
                codes = faiss.rev_swig_ptr(lists.get_codes(list_no), size * ivf.code_size)
                vector_parts.append(codes.view(np.float32).reshape(size, self.dim).copy())
        ids = np.concatenate(id_parts).astype(np.int64)
        return ids, np.concatenate(vector_parts) if vectors else None

    def state(self) -> IndexState:
        return IndexState(self.revision, self.count, ids_digest(self.ids()))

    def needs_rebuild(self, policy: AnnPolicy) -> str | None:
        """Why the index should be rebuilt under ``policy`` (None: it need not)."""
        if self.exact:
            if self.count >= policy.min_faces:
                return f"{self.count} faces reached the exact-search limit {policy.min_faces}"
            return None
        if self.count < policy.min_faces / policy.retrain_growth:
            return f"{self.count} faces: exact search is cheap again"
        if self.count >= self.trained_on * policy.retrain_growth:
            return f"{self.count} faces, trained on {self.trained_on}"
        if self.count * policy.retrain_growth <= self.trained_on:
            return f"{self.count} faces, trained on {self.trained_on}"
        return None

    def start_journal(self) -> None:
        """Records the changes from now on, for ``replay`` on a rebuilt copy."""
        self._journal = []

    def stop_journal(self) -> list[tuple[np.ndarray, np.ndarray | None]]:
        journal, self._journal = self._journal or [], None
        return journal

    def replay(self, journal: list[tuple[np.ndarray, np.ndarray | None]], revision: int) -> None:
        """Applies recorded changes (adds with vectors, removals without); caller holds
        the write lock."""
        for ids, vectors in journal:
            if vectors is None:
                self.remove(ids, revision=revision)
            else:
                self.add(ids, vectors, revision=revision)
        self.revision = revision

    def add(self, ids: np.ndarray, vectors: np.ndarray, *, revision: int) -> None:
        """Adds ``vectors`` (N, dim), L2-normalised, under ``ids``; caller holds the write lock."""
        if len(ids):
            vectors = _unit_rows(vectors, self.dim)
            ids64 = np.asarray(ids, dtype=np.int64)
            self.index.add_with_ids(vectors, ids64)
            if self._journal is not None:
                self._journal.append((ids64, vectors))
        self.revision = revision

    def remove(self, ids: np.ndarray | list[int], *, revision: int) -> int:
        """Removes ``ids``; returns how many were there. Caller holds the write lock."""
        removed = 0
        if len(ids):
            # faiss's wrapper takes an id array; its stubs know only IDSelector
            ids64 = np.asarray(ids, dtype=np.int64)
            removed = int(self.index.remove_ids(ids64))  # type: ignore[arg-type]
            if self._journal is not None:
                self._journal.append((ids64, None))
        self.revision = revision
        return removed

    def search(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (similarities, ids) of one query vector; caller holds the read lock.

        An IVF index answers fewer than ``k`` when the lists it visits hold fewer.
        """
        k = min(k, self.count)
        if k <= 0:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, self.dim)
        sims, ids = self.index.search(query, k)
        keep = ids[0] >= 0
        return sims[0][keep], ids[0][keep]

    # -- files ---------------------------------------------------------------------------

    def to_bytes(self, *, gallery_id: int, model_version: str) -> bytes:
        payload = faiss.serialize_index(self.index).tobytes()
        state = self.state()
        header = json.dumps(
            {
                "gallery_id": gallery_id,
                "model_version": model_version,
                "dim": self.dim,
                "revision": state.revision,
                "count": state.count,
                "ids_sha256": state.ids_sha256,
                "kind": self.kind,
                "trained_on": self.trained_on,
                "payload_sha256": hashlib.sha256(payload).hexdigest(),
            }
        ).encode()
        return MAGIC + _HEADER_LEN.pack(len(header)) + header + payload

    @classmethod
    def from_bytes(cls, data: bytes, *, gallery_id: int, model_version: str) -> GalleryIndex:
        """Parses an index file, checking its checksum and that it belongs to the gallery.

        Raises:
            IndexFileError: wrong magic, truncated, checksum mismatch, another gallery or
                model version, or contents that disagree with the header.
        """
        if not data.startswith(MAGIC) or len(data) < len(MAGIC) + _HEADER_LEN.size:
            raise IndexFileError("not an lrfr index file")
        offset = len(MAGIC)
        (header_len,) = _HEADER_LEN.unpack_from(data, offset)
        offset += _HEADER_LEN.size
        try:
            header = json.loads(data[offset : offset + header_len])
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise IndexFileError(f"unreadable header: {exc}") from exc
        payload = data[offset + header_len :]
        if hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
            raise IndexFileError("checksum mismatch (the file is corrupted or truncated)")
        if header.get("gallery_id") != gallery_id or header.get("model_version") != model_version:
            raise IndexFileError(
                f"file belongs to gallery {header.get('gallery_id')} / model "
                f"{header.get('model_version')}"
            )
        try:
            index = faiss.deserialize_index(np.frombuffer(payload, dtype=np.uint8))
        except RuntimeError as exc:
            raise IndexFileError(f"FAISS cannot read the payload: {exc}") from exc
        result = cls(int(header["dim"]), revision=int(header["revision"]))
        if index.d != result.dim:
            raise IndexFileError(f"payload has dim {index.d}, header says {result.dim}")
        if isinstance(index, faiss.IndexIVFFlat):
            result.index = index
            result.trained_on = int(header.get("trained_on", index.ntotal))
        elif isinstance(index, faiss.IndexIDMap2):
            result.index = index
        else:
            raise IndexFileError(f"unexpected FAISS index type {type(index).__name__}")
        state = result.state()
        if state.count != header["count"] or state.ids_sha256 != header["ids_sha256"]:
            raise IndexFileError("payload disagrees with the header (count or ids)")
        return result


class IndexStore:
    """Index files of the galleries, in one folder.

    Args:
        directory: where the ``gallery-<id>.faiss`` files live (created if missing).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_path = self.directory / ".lock"
        self._thread_lock = threading.Lock()

    def path(self, gallery_id: int) -> Path:
        return self.directory / f"gallery-{gallery_id}.faiss"

    @contextlib.contextmanager
    def _writer(self) -> Iterator[None]:
        """One writer at a time: across threads (a lock) and processes (``flock``)."""
        with self._thread_lock, open(self._lock_path, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def save(self, gallery_id: int, model_version: str, index: GalleryIndex) -> Path:
        """Writes ``index`` atomically (temp file, fsync, rename, fsync of the folder)."""
        with index.lock.read():
            data = index.to_bytes(gallery_id=gallery_id, model_version=model_version)
        target = self.path(gallery_id)
        temp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with self._writer():
            try:
                with open(temp, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temp, target)
            finally:
                temp.unlink(missing_ok=True)
            directory_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(directory_fd)
            finally:
                os.close(directory_fd)
        logger.debug("saved index of gallery %s (%d vectors)", gallery_id, index.count)
        return target

    def load(self, gallery_id: int, model_version: str) -> GalleryIndex:
        """Reads the index file of a gallery.

        Raises:
            FileNotFoundError: no file.
            IndexFileError: the file is corrupted or belongs elsewhere.
        """
        data = self.path(gallery_id).read_bytes()
        return GalleryIndex.from_bytes(data, gallery_id=gallery_id, model_version=model_version)

    def delete(self, gallery_id: int) -> None:
        with self._writer():
            self.path(gallery_id).unlink(missing_ok=True)
