"""Keeps each gallery's vectors in a backend (FAISS or Milvus) in step with the database.

Every write to a gallery bumps its ``revision`` in the database, in the transaction of
the change; the vectors remember the revision they reflect. A committed change is applied
to them when they are exactly one revision behind; otherwise (a crash, another process,
a missed change) they are rebuilt from the database. Searches run on vectors at the
database's revision, catching up first. The database transactions themselves are
``service.galleries``'s; this module never writes to the database.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from models.artifact import ModelMetadata
from service import crud
from service.db import Gallery
from service.errors import ModelMismatchError, NotFoundError
from service.index import IndexFileError, ids_digest
from service.metrics import ServiceMetrics
from service.vectors import GalleryVectors, VectorBackend

logger = logging.getLogger(__name__)


def model_key(name: str, version: str) -> str:
    """The identity of a model that galleries and their vectors are tied to."""
    return f"{name}@{version}"


@dataclass
class StartupReport:
    """What happened to each gallery's vectors at startup."""

    loaded: list[str] = field(default_factory=list)
    rebuilt: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Hits:
    """What a search of one gallery's vectors found."""

    similarities: np.ndarray
    ids: np.ndarray
    #: every vector that could be returned was (more cannot be had by asking for more)
    exhausted: bool


class IndexSync:
    """The vectors of every gallery of the served model, in step with the database.

    Args:
        sessions: the session factory of the database (the source of truth).
        backend: where the vectors live.
        model: metadata of the served model; galleries of other models are left alone.
        metrics: Prometheus metrics to update (gallery sizes, index rebuilds).
    """

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        backend: VectorBackend,
        model: ModelMetadata,
        metrics: ServiceMetrics,
    ) -> None:
        self.sessions = sessions
        self.backend = backend
        self.model = model
        self._key = model_key(model.name, model.version)
        self._metrics = metrics
        self._indexes: dict[int, GalleryVectors] = {}
        self._names: dict[int, str] = {}
        self._locks: dict[int, threading.Lock] = {}
        self._registry = threading.Lock()
        self._dirty: set[int] = set()

    def lock(self, gallery_id: int) -> threading.Lock:
        """The lock that serialises the writes to one gallery in this process."""
        with self._registry:
            return self._locks.setdefault(gallery_id, threading.Lock())

    def compatible(self, gallery: Gallery | crud.GalleryRef) -> bool:
        return model_key(gallery.model_name, gallery.model_version) == self._key

    def _publish(self, gallery_id: int, name: str, index: GalleryVectors) -> None:
        with self._registry:
            self._indexes[gallery_id] = index
            self._names[gallery_id] = name
            self._dirty.add(gallery_id)
        self._metrics.gallery_faces.labels(gallery=name).set(index.count)

    def _checked_batches(
        self, session: Session, gallery: Gallery
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for ids, vectors in crud.iter_embeddings(session, gallery_id=gallery.id):
            if vectors.shape[1] != self.model.embedding_size:
                raise ModelMismatchError(
                    f"gallery '{gallery.name}' holds {vectors.shape[1]}-d embeddings, the "
                    f"model makes {self.model.embedding_size}-d ones"
                )
            yield ids, vectors

    def rebuild(self, session: Session, gallery: Gallery) -> GalleryVectors:
        """The vectors of ``gallery`` rebuilt from the database (revision read first)."""
        index = self.backend.build(
            gallery.id, self._checked_batches(session, gallery), revision=gallery.revision
        )
        self._metrics.index_rebuilds.inc()
        self._publish(gallery.id, gallery.name, index)
        logger.info(
            "rebuilt the %s vectors of gallery '%s' (%d, %s search)",
            self.backend.name,
            gallery.name,
            index.count,
            "exact" if index.exact else "approximate",
        )
        return index

    def _resync(self, gallery_id: int) -> GalleryVectors:
        """The vectors of a gallery, caught up with the database if they are behind."""
        with self.lock(gallery_id), self.sessions() as session:
            gallery = session.get(Gallery, gallery_id)
            if gallery is None:
                raise NotFoundError("the gallery was deleted")
            index = self._indexes.get(gallery_id)
            if index is not None and index.revision == gallery.revision:
                return index
            if self.backend.shared:
                # another process may have applied the change already
                try:
                    current = self.backend.load(gallery_id)
                except (FileNotFoundError, IndexFileError):
                    pass
                else:
                    if current.revision == gallery.revision:
                        self._publish(gallery_id, gallery.name, current)
                        return current
            return self.rebuild(session, gallery)

    def created(self, gallery_id: int, name: str) -> None:
        """A new, empty gallery (committed)."""
        self._publish(gallery_id, name, self.backend.empty(gallery_id, revision=0))

    def apply(
        self,
        gallery_id: int,
        name: str,
        revision: int,
        *,
        add: tuple[np.ndarray, np.ndarray] | None = None,
        remove: np.ndarray | None = None,
    ) -> None:
        """Applies a committed change; rebuilds if it missed another one. The caller holds
        ``lock(gallery_id)``."""
        index = self._indexes.get(gallery_id)
        if index is not None and index.revision == revision - 1:
            with index.lock.write():
                if add is not None:
                    index.add(add[0], add[1], revision=revision)
                if remove is not None:
                    index.remove(remove, revision=revision)
            self._publish(gallery_id, name, index)
            return
        with self.sessions() as session:
            gallery = session.get(Gallery, gallery_id)
            if gallery is not None:
                self.rebuild(session, gallery)

    def rebuild_now(self, gallery_id: int) -> None:
        """Rebuilds a gallery's vectors from the database (after a re-embedding)."""
        with self.sessions() as session:
            gallery = session.get(Gallery, gallery_id)
            if gallery is not None:
                self.rebuild(session, gallery)

    def dropped(self, gallery_id: int, name: str) -> None:
        """A deleted gallery (committed): its vectors go. The caller holds its lock."""
        with self._registry:
            self._indexes.pop(gallery_id, None)
            self._names.pop(gallery_id, None)
            self._dirty.discard(gallery_id)
        self.backend.delete(gallery_id)
        self._metrics.gallery_faces.remove_label(name)

    def search(self, gallery_id: int, revision: int, vector: np.ndarray, k: int) -> Hits:
        """Up to ``k`` nearest vectors of a gallery at (at least) database ``revision``."""
        index = self._indexes.get(gallery_id)
        if index is None or index.revision != revision:
            index = self._resync(gallery_id)
        self.backend.before_search()
        started = time.perf_counter()
        with index.lock.read():
            sims, ids = index.search(vector, k)
        self._metrics.search_seconds.labels(
            backend=self.backend.name, kind="exact" if index.exact else "approximate"
        ).observe(time.perf_counter() - started)
        # fewer than k: the gallery (or the lists an approximate index visits) holds no more
        return Hits(sims, ids, exhausted=len(ids) < k)

    # -- startup, readiness, persistence, maintenance ---------------------------------------

    def load_all(self) -> StartupReport:
        """Loads every compatible gallery's vectors, rebuilding missing or stale ones."""
        report = StartupReport()
        with self.sessions() as session:
            for gallery in crud.list_galleries(session):
                if not self.compatible(gallery):
                    reason = f"embedded with {gallery.model_name} {gallery.model_version}"
                    report.skipped[gallery.name] = reason
                    logger.warning(
                        "gallery '%s' is %s, the service runs %s %s: not served until re-embedded",
                        gallery.name,
                        reason,
                        self.model.name,
                        self.model.version,
                    )
                    continue
                problem = self._load_one(session, gallery)
                if problem is None:
                    report.loaded.append(gallery.name)
                    continue
                logger.warning("index of gallery '%s' %s: rebuilding it", gallery.name, problem)
                report.rebuilt[gallery.name] = problem
                self.rebuild(session, gallery)
        self.flush()
        return report

    def _load_one(self, session: Session, gallery: Gallery) -> str | None:
        """Loads one gallery's vectors; returns why they cannot be used, or None."""
        try:
            index = self.backend.load(gallery.id)
        except FileNotFoundError:
            return "is missing"
        except (IndexFileError, OSError) as exc:
            return f"is corrupted ({exc})"
        if index.revision != gallery.revision:
            return f"is stale (revision {index.revision}, database {gallery.revision})"
        db_ids = crud.face_ids(session, gallery_id=gallery.id)
        if index.count != len(db_ids) or index.state().ids_sha256 != ids_digest(db_ids):
            return f"disagrees with the database ({index.count} vectors, {len(db_ids)} faces)"
        self._publish(gallery.id, gallery.name, index)
        with self._registry:
            self._dirty.discard(gallery.id)
        return None

    def consistency_problems(self) -> list[str]:
        """Why the vectors and the database disagree (empty: consistent). Catches up first."""
        problems: list[str] = []
        with self.sessions() as session:
            galleries = [g for g in crud.list_galleries(session) if self.compatible(g)]
            counts = {g.id: crud.count_faces(session, gallery_id=g.id) for g in galleries}
        for gallery in galleries:
            try:
                index = self._resync(gallery.id)
            except NotFoundError:
                continue  # deleted meanwhile
            except ModelMismatchError as exc:
                problems.append(str(exc))
                continue
            if index.count != counts[gallery.id] and index.revision == gallery.revision:
                problems.append(
                    f"gallery '{gallery.name}': index has {index.count} vectors, the database "
                    f"{counts[gallery.id]} faces"
                )
        return problems

    def flush(self) -> int:
        """Persists the vectors changed since the last flush; returns how many galleries."""
        with self._registry:
            dirty, self._dirty = self._dirty, set()
            pending = [(gid, self._indexes.get(gid)) for gid in dirty]
        saved = 0
        for gallery_id, index in pending:
            if index is None:
                continue
            try:
                self.backend.save(gallery_id, index)
                saved += 1
            except Exception:  # the database is the source of truth: retry at the next flush
                logger.exception("cannot persist the index of gallery %s", gallery_id)
                with self._registry:
                    self._dirty.add(gallery_id)
        return saved

    def maintain(self) -> dict[str, str]:
        """Retrains the indexes that have outgrown their training (or crossed the exact
        search limit); returns gallery name -> why, for those retrained."""
        with self._registry:
            current = [(gid, self._names[gid], index) for gid, index in self._indexes.items()]
        retrained: dict[str, str] = {}
        for gallery_id, name, index in current:

            def publish(fresh: GalleryVectors, gallery_id: int = gallery_id,
                        name: str = name, index: GalleryVectors = index) -> bool:
                if self._indexes.get(gallery_id) is not index:
                    return False
                self._publish(gallery_id, name, fresh)
                return True

            reason = self.backend.retrain(index, self.lock(gallery_id), publish)
            if reason is not None:
                retrained[name] = reason
                logger.info("retrained the index of gallery '%s': %s", name, reason)
        return retrained

    def close(self) -> None:
        self.backend.close()
