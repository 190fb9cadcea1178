"""FAISS indexes of gallery embeddings, and their crash-safe files.

One index per gallery: ``IndexIDMap2`` over ``IndexFlatIP`` on L2-normalised vectors
(inner product = cosine), keyed by the database id of each face. The database is the
source of truth; an index file is a cache that records the gallery revision, the number
of vectors and a hash of their ids, so a stale or corrupted file is detected and the
index rebuilt. Files are written to a temporary file, fsynced and renamed atomically,
one writer at a time (an ``flock`` on ``.lock`` in the index folder).
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


class GalleryIndex:
    """The FAISS index of one gallery, with the database revision it reflects.

    Args:
        dim: embedding size.
        revision: the gallery revision the contents match (-1: unknown).
    """

    def __init__(self, dim: int, revision: int = -1) -> None:
        self.dim = dim
        self.revision = revision
        self.index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.lock = ReadWriteLock()

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def state(self) -> IndexState:
        return IndexState(self.revision, self.count, ids_digest(self.ids()))

    def add(self, ids: np.ndarray, vectors: np.ndarray, *, revision: int) -> None:
        """Adds ``vectors`` (N, dim), L2-normalised, under ``ids``; caller holds the write lock."""
        if len(ids):
            vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
            self.index.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))
        self.revision = revision

    def remove(self, ids: np.ndarray | list[int], *, revision: int) -> int:
        """Removes ``ids``; returns how many were there. Caller holds the write lock."""
        removed = 0
        if len(ids):
            # faiss's wrapper takes an id array; its stubs know only IDSelector
            ids64 = np.asarray(ids, dtype=np.int64)
            removed = int(self.index.remove_ids(ids64))  # type: ignore[arg-type]
        self.revision = revision
        return removed

    def search(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (similarities, ids) of one query vector; caller holds the read lock."""
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
        result.index = (
            faiss.IndexIDMap2(index) if not isinstance(index, faiss.IndexIDMap2) else index
        )
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
