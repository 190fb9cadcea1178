"""Galleries, subjects and faces: the database rows and the FAISS indexes kept in step.

Writes to one gallery are serialised in this process (a lock per gallery) and in the
database (the gallery row's ``revision`` is bumped in the same transaction as the
change). An index knows the revision it reflects; a search on an index that is behind
the database (a crash, another process) rebuilds it from the database first.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import faiss
import numpy as np
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from models.artifact import ModelMetadata
from service import crud
from service.db import Face, Gallery, Subject
from service.errors import ConflictError, ModelMismatchError, NotFoundError
from service.index import GalleryIndex, IndexFileError, IndexStore, ids_digest
from service.metrics import ServiceMetrics
from service.schemas import (
    FaceOut,
    GalleryOut,
    GalleryPage,
    ModelInfo,
    Quality,
    SubjectDetail,
    SubjectOut,
    SubjectPage,
)

logger = logging.getLogger(__name__)


def model_key(name: str, version: str) -> str:
    """The identity of a model that galleries and index files are tied to."""
    return f"{name}@{version}"


def face_out(face: Face) -> FaceOut:
    return FaceOut(
        id=face.id,
        quality=Quality(
            laplacian=face.laplacian,
            laplacian_var=face.laplacian_var,
            width=face.width,
            height=face.height,
        ),
        created_at=face.created_at,
        sha256=face.upload_sha256,
    )


def _subject_out(subject: Subject, face_count: int) -> SubjectOut:
    return SubjectOut(
        id=subject.external_id,
        name=subject.name,
        metadata=subject.attributes or {},
        face_count=face_count,
        created_at=subject.created_at,
    )



@dataclass(frozen=True)
class Candidate:
    """A subject found by a search: its best face, that face's similarity and quality."""

    subject: str
    similarity: float
    face: int
    face_quality: float

@dataclass
class StartupReport:
    """What happened to each gallery's index at startup."""

    loaded: list[str] = field(default_factory=list)
    rebuilt: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


class GalleryService:
    """Keeps galleries in the database and their vectors in FAISS indexes.

    Args:
        sessions: the session factory of the database (the source of truth).
        store: where index files are persisted.
        model: metadata of the served model; galleries of other models are refused.
        metrics: Prometheus metrics to update (gallery sizes, index rebuilds).
        search_threads: OpenMP threads of a FAISS search (None: OpenMP's default).
    """

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        store: IndexStore,
        model: ModelMetadata,
        metrics: ServiceMetrics,
        search_threads: int | None = None,
    ) -> None:
        self._sessions = sessions
        self._store = store
        self._model = model
        self._key = model_key(model.name, model.version)
        self._metrics = metrics
        self._search_threads = search_threads
        self._indexes: dict[int, GalleryIndex] = {}
        self._names: dict[int, str] = {}
        self._locks: dict[int, threading.Lock] = {}
        self._registry = threading.Lock()
        self._dirty: set[int] = set()

    # -- helpers ---------------------------------------------------------------------------

    def _lock(self, gallery_id: int) -> threading.Lock:
        with self._registry:
            return self._locks.setdefault(gallery_id, threading.Lock())

    def _compatible(self, gallery: Gallery) -> bool:
        return model_key(gallery.model_name, gallery.model_version) == self._key

    def _require_compatible(self, gallery: Gallery) -> None:
        if not self._compatible(gallery):
            raise ModelMismatchError(
                f"gallery '{gallery.name}' was embedded with model {gallery.model_name} "
                f"{gallery.model_version}, the service runs {self._model.name} "
                f"{self._model.version}; embeddings of different models cannot be mixed. "
                f"Re-embed it (POST /v1/galleries/{gallery.name}/reembed) or serve its model."
            )

    @staticmethod
    def _require_gallery(session: Session, name: str, *, for_update: bool = False) -> Gallery:
        gallery = crud.get_gallery(session, name=name, for_update=for_update)
        if gallery is None:
            raise NotFoundError(f"gallery '{name}' not found")
        return gallery

    @staticmethod
    def _require_subject(session: Session, gallery: Gallery, external_id: str) -> Subject:
        subject = crud.get_subject(session, gallery_id=gallery.id, external_id=external_id)
        if subject is None:
            raise NotFoundError(f"subject '{external_id}' not found in gallery '{gallery.name}'")
        return subject

    def _gallery_out(self, session: Session, gallery: Gallery) -> GalleryOut:
        return GalleryOut(
            name=gallery.name,
            model=ModelInfo(name=gallery.model_name, version=gallery.model_version),
            embedding_size=gallery.embedding_size,
            subjects=crud.count_subjects(session, gallery_id=gallery.id),
            faces=crud.count_faces(session, gallery_id=gallery.id),
            compatible=self._compatible(gallery),
            created_at=gallery.created_at,
        )

    def _publish(self, gallery_id: int, name: str, index: GalleryIndex) -> None:
        with self._registry:
            self._indexes[gallery_id] = index
            self._names[gallery_id] = name
            self._dirty.add(gallery_id)
        self._metrics.gallery_faces.labels(gallery=name).set(index.count)

    def _rebuild(self, session: Session, gallery: Gallery) -> GalleryIndex:
        """A fresh index of ``gallery`` from the database (revision read first)."""
        index = GalleryIndex(self._model.embedding_size, revision=gallery.revision)
        for ids, vectors in crud.iter_embeddings(session, gallery_id=gallery.id):
            if vectors.shape[1] != self._model.embedding_size:
                raise ModelMismatchError(
                    f"gallery '{gallery.name}' holds {vectors.shape[1]}-d embeddings, the "
                    f"model makes {self._model.embedding_size}-d ones"
                )
            index.add(ids, vectors, revision=gallery.revision)
        self._metrics.index_rebuilds.inc()
        self._publish(gallery.id, gallery.name, index)
        logger.info("rebuilt the index of gallery '%s' (%d vectors)", gallery.name, index.count)
        return index

    def _resync(self, gallery_id: int) -> GalleryIndex:
        """The index of a gallery, rebuilt if it is behind the database."""
        with self._lock(gallery_id), self._sessions() as session:
            gallery = session.get(Gallery, gallery_id)
            if gallery is None:
                raise NotFoundError("the gallery was deleted")
            index = self._indexes.get(gallery_id)
            if index is None or index.revision != gallery.revision:
                index = self._rebuild(session, gallery)
            return index

    def _apply(
        self,
        gallery_id: int,
        name: str,
        revision: int,
        *,
        add: tuple[np.ndarray, np.ndarray] | None = None,
        remove: np.ndarray | None = None,
    ) -> None:
        """Applies a committed change to the index; rebuilds if it missed another one."""
        index = self._indexes.get(gallery_id)
        if index is not None and index.revision == revision - 1:
            with index.lock.write():
                if add is not None:
                    index.add(add[0], add[1], revision=revision)
                if remove is not None:
                    index.remove(remove, revision=revision)
            self._publish(gallery_id, name, index)
            return
        with self._sessions() as session:
            gallery = session.get(Gallery, gallery_id)
            if gallery is not None:
                self._rebuild(session, gallery)

    # -- startup, readiness, persistence ---------------------------------------------------

    def load_all(self) -> StartupReport:
        """Loads every compatible gallery's index file, rebuilding missing or stale ones."""
        report = StartupReport()
        with self._sessions() as session:
            for gallery in crud.list_galleries(session):
                if not self._compatible(gallery):
                    reason = f"embedded with {gallery.model_name} {gallery.model_version}"
                    report.skipped[gallery.name] = reason
                    logger.warning(
                        "gallery '%s' is %s, the service runs %s %s: not served until re-embedded",
                        gallery.name,
                        reason,
                        self._model.name,
                        self._model.version,
                    )
                    continue
                problem = self._load_one(session, gallery)
                if problem is None:
                    report.loaded.append(gallery.name)
                    continue
                logger.warning("index of gallery '%s' %s: rebuilding it", gallery.name, problem)
                report.rebuilt[gallery.name] = problem
                self._rebuild(session, gallery)
        self.flush()
        return report

    def _load_one(self, session: Session, gallery: Gallery) -> str | None:
        """Loads one index file; returns why it cannot be used, or None when it was."""
        try:
            index = self._store.load(gallery.id, self._key)
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
        """Why the indexes and the database disagree (empty: consistent). Catches up first."""
        problems: list[str] = []
        with self._sessions() as session:
            galleries = [g for g in crud.list_galleries(session) if self._compatible(g)]
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
        """Persists the indexes changed since the last flush; returns how many."""
        with self._registry:
            dirty, self._dirty = self._dirty, set()
            pending = [(gid, self._indexes.get(gid)) for gid in dirty]
        saved = 0
        for gallery_id, index in pending:
            if index is None:
                continue
            try:
                self._store.save(gallery_id, self._key, index)
                saved += 1
            except OSError:
                logger.exception("cannot persist the index of gallery %s", gallery_id)
                with self._registry:
                    self._dirty.add(gallery_id)
        return saved

    # -- galleries ---------------------------------------------------------------------------

    def create_gallery(self, *, name: str) -> GalleryOut:
        try:
            with self._sessions.begin() as session:
                if crud.get_gallery(session, name=name) is not None:
                    raise ConflictError(f"gallery '{name}' already exists")
                gallery = crud.create_gallery(
                    session,
                    name=name,
                    model_name=self._model.name,
                    model_version=self._model.version,
                    embedding_size=self._model.embedding_size,
                )
                out = self._gallery_out(session, gallery)
                gallery_id = gallery.id
        except IntegrityError as exc:
            raise ConflictError(f"gallery '{name}' already exists") from exc
        self._publish(gallery_id, name, GalleryIndex(self._model.embedding_size, revision=0))
        return out

    def list_galleries(self, *, offset: int = 0, limit: int = 100) -> GalleryPage:
        with self._sessions() as session:
            rows = crud.list_galleries(session, offset=offset, limit=limit)
            return GalleryPage(
                items=[self._gallery_out(session, g) for g in rows],
                total=crud.count_galleries(session),
                offset=offset,
                limit=limit,
            )

    def get_gallery(self, *, name: str) -> GalleryOut:
        with self._sessions() as session:
            return self._gallery_out(session, self._require_gallery(session, name))

    def delete_gallery(self, *, name: str) -> None:
        with self._sessions() as session:
            gallery_id = self._require_gallery(session, name).id
        with self._lock(gallery_id):
            with self._sessions.begin() as session:
                self._require_gallery(session, name, for_update=True)
                crud.delete_gallery(session, gallery_id=gallery_id)
            with self._registry:
                self._indexes.pop(gallery_id, None)
                self._names.pop(gallery_id, None)
                self._dirty.discard(gallery_id)
            self._store.delete(gallery_id)
        self._metrics.gallery_faces.remove_label(name)
        logger.info("deleted gallery '%s'", name)

    # -- subjects ----------------------------------------------------------------------------

    def create_subject(
        self, *, gallery: str, external_id: str, name: str | None, attributes: dict
    ) -> SubjectOut:
        try:
            with self._sessions.begin() as session:
                row = self._require_gallery(session, gallery)
                if crud.get_subject(session, gallery_id=row.id, external_id=external_id):
                    raise ConflictError(
                        f"subject '{external_id}' already exists in gallery '{gallery}'"
                    )
                subject = crud.create_subject(
                    session,
                    gallery_id=row.id,
                    external_id=external_id,
                    name=name,
                    attributes=attributes,
                )
                return _subject_out(subject, 0)
        except IntegrityError as exc:
            raise ConflictError(
                f"subject '{external_id}' already exists in gallery '{gallery}'"
            ) from exc

    def list_subjects(self, *, gallery: str, offset: int, limit: int) -> SubjectPage:
        with self._sessions() as session:
            row = self._require_gallery(session, gallery)
            subjects = crud.list_subjects(session, gallery_id=row.id, offset=offset, limit=limit)
            counts = crud.face_counts(session, subject_ids=[s.id for s in subjects])
            return SubjectPage(
                items=[_subject_out(s, counts.get(s.id, 0)) for s in subjects],
                total=crud.count_subjects(session, gallery_id=row.id),
                offset=offset,
                limit=limit,
            )

    def get_subject(self, *, gallery: str, subject: str) -> SubjectDetail:
        with self._sessions() as session:
            row = self._require_subject(session, self._require_gallery(session, gallery), subject)
            faces = crud.list_faces(session, subject_id=row.id)
            summary = _subject_out(row, len(faces))
            return SubjectDetail(**summary.model_dump(), faces=[face_out(f) for f in faces])

    def delete_subject(self, *, gallery: str, subject: str) -> int:
        """Deletes a subject with its faces and vectors; returns how many faces went."""
        with self._sessions() as session:
            gallery_id = self._require_gallery(session, gallery).id
        with self._lock(gallery_id):
            with self._sessions.begin() as session:
                row = self._require_gallery(session, gallery, for_update=True)
                subject_row = self._require_subject(session, row, subject)
                removed = crud.delete_subject(session, subject_id=subject_row.id)
                revision = crud.bump_revision(session, gallery_id=gallery_id)
            if self._compatible(row):
                self._apply(gallery_id, gallery, revision, remove=removed)
        return len(removed)

    # -- faces -------------------------------------------------------------------------------

    def check_enrollable(self, *, gallery: str, subject: str) -> None:
        """Fails early (404, 409) before the images of an enrollment are embedded."""
        with self._sessions() as session:
            row = self._require_gallery(session, gallery)
            self._require_compatible(row)
            self._require_subject(session, row, subject)

    def add_faces(
        self, *, gallery: str, subject: str, faces: Sequence[crud.NewFace]
    ) -> list[FaceOut]:
        """Stores faces and adds their vectors to the index, atomically for the request."""
        with self._sessions() as session:
            gallery_id = self._require_gallery(session, gallery).id
        with self._lock(gallery_id):
            with self._sessions.begin() as session:
                row = self._require_gallery(session, gallery, for_update=True)
                if row.id != gallery_id:
                    raise ConflictError(f"gallery '{gallery}' was replaced meanwhile; retry")
                self._require_compatible(row)
                subject_row = self._require_subject(session, row, subject)
                rows = crud.add_faces(
                    session,
                    gallery_id=gallery_id,
                    subject_id=subject_row.id,
                    model_version=self._model.version,
                    faces=faces,
                )
                revision = crud.bump_revision(session, gallery_id=gallery_id)
                out = [face_out(face) for face in rows]
            ids = np.asarray([face.id for face in out], dtype=np.int64)
            vectors = np.stack([face.embedding for face in faces])
            self._apply(gallery_id, gallery, revision, add=(ids, vectors))
        return out

    def face_image(self, *, gallery: str, subject: str, face_id: int) -> bytes:
        """The stored PNG of a face (the aligned crop the network saw)."""
        with self._sessions() as session:
            row = self._require_subject(session, self._require_gallery(session, gallery), subject)
            found, image = crud.face_image(session, subject_id=row.id, face_id=face_id)
        if not found:
            raise NotFoundError(f"face {face_id} not found for subject '{subject}'")
        if image is None:
            raise NotFoundError(
                f"face {face_id} has no stored image (enrolled with LRFR_STORE_FACE_IMAGES=0)"
            )
        return image

    def delete_face(self, *, gallery: str, subject: str, face_id: int) -> None:
        with self._sessions() as session:
            gallery_id = self._require_gallery(session, gallery).id
        with self._lock(gallery_id):
            with self._sessions.begin() as session:
                row = self._require_gallery(session, gallery, for_update=True)
                subject_row = self._require_subject(session, row, subject)
                if crud.get_face(session, subject_id=subject_row.id, face_id=face_id) is None:
                    raise NotFoundError(f"face {face_id} not found for subject '{subject}'")
                crud.delete_face(session, face_id=face_id)
                revision = crud.bump_revision(session, gallery_id=gallery_id)
            if self._compatible(row):
                self._apply(
                    gallery_id, gallery, revision, remove=np.asarray([face_id], dtype=np.int64)
                )

    # -- search ------------------------------------------------------------------------------

    def search(self, *, gallery: str, vector: np.ndarray, top_k: int) -> list[Candidate]:
        """The ``top_k`` most similar subjects (best face of each), best first."""
        with self._sessions() as session:
            row = self._require_gallery(session, gallery)
            self._require_compatible(row)
            gallery_id, revision = row.id, row.revision
        index = self._indexes.get(gallery_id)
        if index is None or index.revision != revision:
            index = self._resync(gallery_id)
        if self._search_threads:
            # OpenMP keeps the thread count per calling thread: set it in this worker.
            faiss.omp_set_num_threads(self._search_threads)
        k = top_k * 4
        while True:
            with index.lock.read():
                total = index.count
                sims, ids = index.search(vector, min(k, total))
            with self._sessions() as session:
                owners = crud.subjects_of_faces(session, face_ids=ids.tolist())
            best: dict[str, Candidate] = {}
            for similarity, face_id in zip(sims.tolist(), ids.tolist(), strict=True):
                found = owners.get(int(face_id))
                if found is None or found[0] in best:
                    continue  # deleted meanwhile, or a worse face of a subject already in
                owner, quality = found
                best[owner] = Candidate(
                    subject=owner, similarity=float(similarity), face=int(face_id),
                    face_quality=quality,
                )
            if len(best) >= top_k or k >= total:
                return list(best.values())[:top_k]
            k *= 4

    # -- re-embedding ------------------------------------------------------------------------

    def faces_to_reembed(self, *, gallery: str) -> list[tuple[int, bytes]]:
        """The stored images of a gallery's faces; refuses when one was not stored."""
        with self._sessions() as session:
            row = self._require_gallery(session, gallery)
            faces = crud.faces_for_reembedding(session, gallery_id=row.id)
        missing = [face_id for face_id, image in faces if image is None]
        if missing:
            raise ConflictError(
                f"gallery '{gallery}' has {len(missing)} faces without a stored image "
                "(LRFR_STORE_FACE_IMAGES was off); re-enroll them from the source images "
                "into a new gallery"
            )
        return [(face_id, image) for face_id, image in faces if image is not None]

    def replace_embeddings(
        self, *, gallery: str, face_ids: Sequence[int], vectors: np.ndarray
    ) -> GalleryOut:
        """Stores new embeddings made by the served model and moves the gallery to it."""
        with self._sessions() as session:
            gallery_id = self._require_gallery(session, gallery).id
        with self._lock(gallery_id):
            with self._sessions.begin() as session:
                row = self._require_gallery(session, gallery, for_update=True)
                current = set(crud.face_ids(session, gallery_id=gallery_id).tolist())
                if not current <= set(face_ids):
                    raise ConflictError(f"gallery '{gallery}' changed during re-embedding; retry")
                for face_id, vector in zip(face_ids, vectors, strict=True):
                    if face_id in current:
                        crud.set_embedding(
                            session,
                            face_id=face_id,
                            embedding=vector,
                            model_version=self._model.version,
                        )
                row.model_name = self._model.name
                row.model_version = self._model.version
                row.embedding_size = self._model.embedding_size
                session.flush()
                crud.bump_revision(session, gallery_id=gallery_id)
            with self._sessions() as session:
                row = self._require_gallery(session, gallery)
                self._rebuild(session, row)
                return self._gallery_out(session, row)
