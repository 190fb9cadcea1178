"""Where gallery vectors are searched: the backend interface, and FAISS behind it.

``LRFR_VECTOR_BACKEND`` picks one backend for the whole service: ``faiss`` (default,
embedded: one index per gallery in this process, files under ``<data>/index``) or
``milvus`` (``service.milvus``: one collection per gallery and model version on a Milvus
server or an embedded milvus-lite file). Either way the database is the source of truth:
``service.index_sync`` rebuilds or resyncs a backend's vectors of a gallery from it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

import faiss
import numpy as np

from models.comparison import Comparison
from service.index import AnnPolicy, GalleryIndex, IndexState, IndexStore, ReadWriteLock

if TYPE_CHECKING:
    pass

Batches = Iterable[tuple[np.ndarray, np.ndarray]]


class GalleryVectors(Protocol):
    """The vectors of one gallery in a backend, and the gallery revision they reflect."""

    revision: int
    lock: ReadWriteLock

    @property
    def count(self) -> int: ...

    @property
    def exact(self) -> bool:
        """Whether a search scans every vector (False: an approximate index)."""
        ...

    def ids(self) -> np.ndarray: ...

    def state(self) -> IndexState: ...

    def add(self, ids: np.ndarray, vectors: np.ndarray, *, revision: int) -> None: ...

    def remove(self, ids: np.ndarray | list[int], *, revision: int) -> int: ...

    def search(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``k`` (similarities, ids), best first."""
        ...


class VectorBackend(Protocol):
    """Creates, persists, rebuilds and drops the vectors of galleries for one model."""

    #: ``faiss`` or ``milvus``
    name: str
    #: other processes write the same vectors (a search that finds its copy behind the
    #: database first asks the backend for the current one before rebuilding)
    shared: bool

    def empty(self, gallery_id: int, *, revision: int) -> GalleryVectors: ...

    def build(self, gallery_id: int, batches: Batches, *, revision: int) -> GalleryVectors:
        """The vectors of a gallery made equal to ``batches`` (ids, vectors) from the
        database, at ``revision``."""
        ...

    def load(self, gallery_id: int) -> GalleryVectors:
        """What the backend holds for a gallery.

        Raises:
            FileNotFoundError: nothing.
            service.index.IndexFileError: something unusable.
        """
        ...

    def save(self, gallery_id: int, vectors: GalleryVectors) -> None:
        """Makes a gallery's vectors durable (with the revision they reflect)."""
        ...

    def delete(self, gallery_id: int) -> None: ...

    def before_search(self) -> None:
        """Called on the searching thread before a search (per-thread settings)."""
        ...

    def retrain(
        self,
        vectors: GalleryVectors,
        write_lock: threading.Lock,
        publish: Callable[[GalleryVectors], bool],
    ) -> str | None:
        """Rebuilds an index that has outgrown its training, if it has, off the write lock,
        and publishes the new one while holding it; returns why it did (None: not needed)."""
        ...

    def close(self) -> None: ...


class FaissBackend:
    """FAISS indexes in this process, one file per gallery (``service.index``).

    Args:
        store: the index files.
        model_key: the served model (``name@version``); a file of another is refused.
        dim: embedding size.
        policy: when a gallery is searched approximately, and how.
        search_threads: OpenMP threads of a search (None: OpenMP's default).
        comparison: the served model's (``models.comparison``): approximate indexes are
            calibrated with the query vectors probes search with.
    """

    name = "faiss"
    shared = False

    def __init__(
        self,
        *,
        store: IndexStore,
        model_key: str,
        dim: int,
        policy: AnnPolicy | None = None,
        search_threads: int | None = None,
        comparison: Comparison = "cosine",
    ) -> None:
        self.store = store
        self.policy = policy or AnnPolicy()
        self.comparison: Comparison = comparison
        self._key = model_key
        self._dim = dim
        self._search_threads = search_threads

    def empty(self, gallery_id: int, *, revision: int) -> GalleryIndex:
        return GalleryIndex(self._dim, revision=revision)

    def build(self, gallery_id: int, batches: Batches, *, revision: int) -> GalleryIndex:
        id_parts, vector_parts = [np.zeros(0, np.int64)], [np.zeros((0, self._dim), np.float32)]
        for ids, vectors in batches:
            id_parts.append(np.asarray(ids, dtype=np.int64))
            vector_parts.append(np.asarray(vectors, dtype=np.float32).reshape(-1, self._dim))
        return GalleryIndex.build(
            self._dim,
            np.concatenate(id_parts),
            np.concatenate(vector_parts),
            revision=revision,
            policy=self.policy,
            comparison=self.comparison,
        )

    def load(self, gallery_id: int) -> GalleryIndex:
        return self.store.load(gallery_id, self._key)

    def save(self, gallery_id: int, vectors: GalleryVectors) -> None:
        assert isinstance(vectors, GalleryIndex)
        self.store.save(gallery_id, self._key, vectors)

    def delete(self, gallery_id: int) -> None:
        self.store.delete(gallery_id)

    def before_search(self) -> None:
        if self._search_threads:
            # OpenMP keeps the thread count per calling thread: set it in this worker.
            faiss.omp_set_num_threads(self._search_threads)

    def retrain(
        self,
        vectors: GalleryVectors,
        write_lock: threading.Lock,
        publish: Callable[[GalleryVectors], bool],
    ) -> str | None:
        assert isinstance(vectors, GalleryIndex)
        reason = vectors.needs_rebuild(self.policy)
        if reason is None:
            return None
        with write_lock:
            with vectors.lock.read():
                ids, rows = vectors.contents()
            revision = vectors.revision
            vectors.start_journal()  # the writes made while the new index is built
        try:
            fresh = GalleryIndex.build(
                self._dim, ids, rows, revision=revision, policy=self.policy,
                comparison=self.comparison,
            )
        except BaseException:
            with write_lock:
                vectors.stop_journal()
            raise
        with write_lock:
            fresh.replay(vectors.stop_journal(), vectors.revision)
            # False: replaced meanwhile by a rebuild from the database
            return reason if publish(fresh) else None

    def close(self) -> None:
        return None
