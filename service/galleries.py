"""Galleries, subjects and faces: the database transactions of the service.

Writes to one gallery are serialised in this process (a lock per gallery) and in the
database (the gallery row is locked ``FOR UPDATE`` and its ``revision`` bumped in the same
transaction as the change), all through one helper, ``_write``. Each committed change is
then handed to ``service.index_sync``, which keeps the gallery's vectors (FAISS or Milvus)
in step with the database.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service import crud
from service.db import Face, Gallery, Subject
from service.errors import ConflictError, ModelMismatchError, NotFoundError
from service.index_sync import Hits, IndexSync, StartupReport, model_key
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

__all__ = ["Candidate", "GalleryService", "StartupReport", "face_out", "model_key"]

logger = logging.getLogger(__name__)


def face_out(face: Face) -> FaceOut:
    return FaceOut(
        id=face.id,
        quality=Quality.model_validate(face, from_attributes=True),  # the same-named columns
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
class _Write:
    """One locked write to a gallery: its session and row, and what the change does to
    the gallery's vectors (filled in by the body of ``GalleryService._write``)."""

    session: Session
    gallery: Gallery
    added: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    removed: list[np.ndarray] = field(default_factory=list)
    rebuild: bool = False

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.added.append((ids, vectors))

    def remove(self, ids: np.ndarray) -> None:
        self.removed.append(ids)


class GalleryService:
    """Keeps galleries in the database and, through ``sync``, their vectors in a vector
    backend.

    Args:
        sync: the vectors of the served model's galleries; its session factory (the
            database, the source of truth) and model (galleries of other models are
            refused) are the service's.
    """

    def __init__(self, sync: IndexSync) -> None:
        self.sync = sync
        self._sessions = sync.sessions
        # the engine itself, for the read-only lookups of every search (plain Core
        # connections: no ORM session to set up and tear down per request)
        self._engine: Engine = sync.sessions.kw["bind"]
        self._model = sync.model

    # -- helpers ---------------------------------------------------------------------------

    def _compatible(self, gallery: Gallery | crud.GalleryRef) -> bool:
        return self.sync.compatible(gallery)

    def _require_compatible(self, gallery: Gallery | crud.GalleryRef) -> None:
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

    @contextlib.contextmanager
    def _write(self, name: str) -> Iterator[_Write]:
        """A write to gallery ``name``: the gallery locked in this process and its row in the
        database, one transaction. The body changes rows through ``write.session`` and says
        what happens to the vectors (``write.add``/``remove``, or ``rebuild``); on commit the
        revision is bumped with it, then the vectors follow, still under the lock."""
        with self._sessions() as session:
            gallery_id = self._require_gallery(session, name).id
        with self.sync.lock(gallery_id):
            with self._sessions.begin() as session:
                row = self._require_gallery(session, name, for_update=True)
                if row.id != gallery_id:
                    raise ConflictError(f"gallery '{name}' was replaced meanwhile; retry")
                write = _Write(session, row)
                yield write
                revision = crud.bump_revision(session, gallery_id=gallery_id)
            if write.rebuild:
                self.sync.rebuild_now(gallery_id)
            elif self._compatible(row):
                added = (
                    (
                        np.concatenate([ids for ids, _ in write.added]),
                        np.concatenate([vectors for _, vectors in write.added]),
                    )
                    if write.added
                    else None
                )
                removed = np.concatenate(write.removed) if write.removed else None
                self.sync.apply(gallery_id, name, revision, add=added, remove=removed)

    # -- startup, readiness, persistence (the vectors') -------------------------------------

    def load_all(self) -> StartupReport:
        """Loads every compatible gallery's vectors, rebuilding missing or stale ones."""
        return self.sync.load_all()

    def consistency_problems(self) -> list[str]:
        """Why the vectors and the database disagree (empty: consistent)."""
        return self.sync.consistency_problems()

    def flush(self) -> int:
        """Persists the vectors changed since the last flush; returns how many galleries."""
        return self.sync.flush()

    def maintain(self) -> dict[str, str]:
        """Retrains indexes that have outgrown their training (see ``IndexSync.maintain``)."""
        return self.sync.maintain()

    def close(self) -> None:
        self.sync.close()

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
        self.sync.created(gallery_id, name)
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
        with self.sync.lock(gallery_id):
            with self._sessions.begin() as session:
                self._require_gallery(session, name, for_update=True)
                crud.delete_gallery(session, gallery_id=gallery_id)
            self.sync.dropped(gallery_id, name)
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
        with self._write(gallery) as write:
            subject_row = self._require_subject(write.session, write.gallery, subject)
            removed = crud.delete_subject(write.session, subject_id=subject_row.id)
            write.remove(removed)
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
        with self._write(gallery) as write:
            self._require_compatible(write.gallery)
            subject_row = self._require_subject(write.session, write.gallery, subject)
            rows = crud.add_faces(
                write.session,
                gallery_id=write.gallery.id,
                subject_id=subject_row.id,
                model_version=self._model.version,
                faces=faces,
            )
            out = [face_out(face) for face in rows]
            write.add(
                np.asarray([face.id for face in out], dtype=np.int64),
                np.stack([face.embedding for face in faces]),
            )
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
        with self._write(gallery) as write:
            subject_row = self._require_subject(write.session, write.gallery, subject)
            if crud.get_face(write.session, subject_id=subject_row.id, face_id=face_id) is None:
                raise NotFoundError(f"face {face_id} not found for subject '{subject}'")
            crud.delete_face(write.session, face_id=face_id)
            write.remove(np.asarray([face_id], dtype=np.int64))

    # -- search ------------------------------------------------------------------------------

    def require_gallery(self, *, name: str) -> None:
        """404 unless gallery ``name`` exists (one light query)."""
        with self._engine.connect() as connection:
            if crud.gallery_ref(connection, name=name) is None:
                raise NotFoundError(f"gallery '{name}' not found")

    def search(self, *, gallery: str, vector: np.ndarray, top_k: int) -> list[Candidate]:
        """The ``top_k`` most similar subjects (best face of each), best first."""
        with self._engine.connect() as connection:
            row = crud.gallery_ref(connection, name=gallery)
        if row is None:
            raise NotFoundError(f"gallery '{gallery}' not found")
        self._require_compatible(row)
        k = top_k * 4
        while True:
            # no connection is held during the search (it may wait for a rebuild)
            hits = self.sync.search(row.id, row.revision, vector, k)
            # the owners are read after the search: a face deleted meanwhile is left out
            with self._engine.connect() as connection:
                owners = crud.subjects_of_faces(connection, face_ids=hits.ids.tolist())
            best = self._best_of_subjects(hits, owners)
            if len(best) >= top_k or hits.exhausted:
                return list(best.values())[:top_k]
            k *= 4

    @staticmethod
    def _best_of_subjects(
        hits: Hits, owners: dict[int, tuple[str, float]]
    ) -> dict[str, Candidate]:
        """The best face of each subject among ``hits``, best first; faces without an
        owner (deleted meanwhile) are left out."""
        best: dict[str, Candidate] = {}
        for similarity, face_id in zip(hits.similarities.tolist(), hits.ids.tolist(),
                                       strict=True):
            found = owners.get(int(face_id))
            if found is None or found[0] in best:
                continue  # deleted meanwhile, or a worse face of a subject already in
            owner, quality = found
            best[owner] = Candidate(
                subject=owner, similarity=float(similarity), face=int(face_id),
                face_quality=quality,
            )
        return best

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
        with self._write(gallery) as write:
            row, session = write.gallery, write.session
            current = set(crud.face_ids(session, gallery_id=row.id).tolist())
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
            write.rebuild = True
        with self._sessions() as session:
            return self._gallery_out(session, self._require_gallery(session, gallery))
