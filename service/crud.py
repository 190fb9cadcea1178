"""Database operations, keyword-only, on a caller-owned ``Session`` (no commits here)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from sqlalchemy import Connection, bindparam, delete, func, select, update
from sqlalchemy.orm import Session

from service.db import Face, Gallery, Subject


@dataclass(frozen=True)
class NewFace:
    """A face to insert: its embedding and what the service measured on it."""

    embedding: np.ndarray
    laplacian: float
    laplacian_var: float
    width: int
    height: int
    image_png: bytes | None
    upload_sha256: str | None = None

    def columns(self) -> dict[str, object]:
        """Every field but the embedding, each the ``faces`` column of the same name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "embedding"}


@dataclass(frozen=True)
class GalleryRef:
    """What a search needs of a gallery row: its id, revision and model (read as plain
    columns, without loading an ORM object)."""

    id: int
    name: str
    revision: int
    model_name: str
    model_version: str


# Built once: a statement object reused keeps its cache key, which SQLAlchemy would
# otherwise compute again on every call (a fair share of a search's database time).
_GALLERY_REF = select(
    Gallery.id, Gallery.name, Gallery.revision, Gallery.model_name, Gallery.model_version
).where(Gallery.name == bindparam("name"))
_SUBJECTS_OF_FACES = (
    select(Face.id, Subject.external_id, Face.laplacian)
    .join(Subject, Subject.id == Face.subject_id)
    .where(Face.id.in_(bindparam("ids", expanding=True)))
)


def gallery_ref(session: Session | Connection, *, name: str) -> GalleryRef | None:
    """The id, revision and model of gallery ``name``, or None.

    On a ``Connection`` (plain Core, no ORM layer) it costs about a third of a session's
    query: the per-request lookups of a search use one.
    """
    row = session.execute(_GALLERY_REF, {"name": name}).one_or_none()
    return None if row is None else GalleryRef(*row)


def get_gallery(session: Session, *, name: str, for_update: bool = False) -> Gallery | None:
    statement = select(Gallery).where(Gallery.name == name)
    if for_update:
        statement = statement.with_for_update()
    return session.scalars(statement).one_or_none()


def list_galleries(
    session: Session, *, offset: int = 0, limit: int | None = None
) -> list[Gallery]:
    return list(
        session.scalars(select(Gallery).order_by(Gallery.name).offset(offset).limit(limit))
    )


def count_galleries(session: Session) -> int:
    return int(session.scalar(select(func.count(Gallery.id))) or 0)


def create_gallery(
    session: Session, *, name: str, model_name: str, model_version: str, embedding_size: int
) -> Gallery:
    gallery = Gallery(
        name=name,
        model_name=model_name,
        model_version=model_version,
        embedding_size=embedding_size,
        revision=0,
    )
    session.add(gallery)
    session.flush()
    return gallery


def delete_gallery(session: Session, *, gallery_id: int) -> None:
    """Deletes a gallery with its subjects and faces (explicitly, whatever the FK mode)."""
    session.execute(delete(Face).where(Face.gallery_id == gallery_id))
    session.execute(delete(Subject).where(Subject.gallery_id == gallery_id))
    session.execute(delete(Gallery).where(Gallery.id == gallery_id))


def bump_revision(session: Session, *, gallery_id: int) -> int:
    """Increments the gallery revision atomically; returns the new value."""
    return int(
        session.execute(
            update(Gallery)
            .where(Gallery.id == gallery_id)
            .values(revision=Gallery.revision + 1)
            .returning(Gallery.revision)
        ).scalar_one()
    )


def count_faces(session: Session, *, gallery_id: int) -> int:
    return int(
        session.scalar(select(func.count(Face.id)).where(Face.gallery_id == gallery_id)) or 0
    )


def count_subjects(session: Session, *, gallery_id: int) -> int:
    return int(
        session.scalar(select(func.count(Subject.id)).where(Subject.gallery_id == gallery_id)) or 0
    )


def face_ids(session: Session, *, gallery_id: int) -> np.ndarray:
    ids = session.scalars(select(Face.id).where(Face.gallery_id == gallery_id)).all()
    return np.asarray(ids, dtype=np.int64)


def iter_embeddings(
    session: Session, *, gallery_id: int, chunk: int = 10_000
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, float32 vectors) of a gallery's faces, ``chunk`` rows at a time."""
    result = session.execute(
        select(Face.id, Face.embedding)
        .where(Face.gallery_id == gallery_id)
        .order_by(Face.id)
        .execution_options(yield_per=chunk)
    )
    for rows in result.partitions():
        ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        vectors = np.stack([np.frombuffer(row[1], dtype=np.float32) for row in rows])
        yield ids, vectors


def get_subject(session: Session, *, gallery_id: int, external_id: str) -> Subject | None:
    return session.scalars(
        select(Subject).where(Subject.gallery_id == gallery_id, Subject.external_id == external_id)
    ).one_or_none()


def list_subjects(
    session: Session, *, gallery_id: int, offset: int = 0, limit: int = 100
) -> list[Subject]:
    return list(
        session.scalars(
            select(Subject)
            .where(Subject.gallery_id == gallery_id)
            .order_by(Subject.id)
            .offset(offset)
            .limit(limit)
        )
    )


def face_counts(session: Session, *, subject_ids: Sequence[int]) -> dict[int, int]:
    if not subject_ids:
        return {}
    rows = session.execute(
        select(Face.subject_id, func.count(Face.id))
        .where(Face.subject_id.in_(subject_ids))
        .group_by(Face.subject_id)
    )
    return {int(subject_id): int(count) for subject_id, count in rows}


def create_subject(
    session: Session,
    *,
    gallery_id: int,
    external_id: str,
    name: str | None,
    attributes: dict[str, Any],
) -> Subject:
    subject = Subject(
        gallery_id=gallery_id, external_id=external_id, name=name, attributes=attributes
    )
    session.add(subject)
    session.flush()
    return subject


def delete_subject(session: Session, *, subject_id: int) -> np.ndarray:
    """Deletes a subject and its faces; returns the ids of the faces removed."""
    ids = session.scalars(select(Face.id).where(Face.subject_id == subject_id)).all()
    session.execute(delete(Face).where(Face.subject_id == subject_id))
    session.execute(delete(Subject).where(Subject.id == subject_id))
    return np.asarray(ids, dtype=np.int64)


def list_faces(session: Session, *, subject_id: int) -> list[Face]:
    return list(
        session.scalars(select(Face).where(Face.subject_id == subject_id).order_by(Face.id))
    )


def add_faces(
    session: Session,
    *,
    gallery_id: int,
    subject_id: int,
    model_version: str,
    faces: Sequence[NewFace],
) -> list[Face]:
    rows = [
        Face(
            gallery_id=gallery_id,
            subject_id=subject_id,
            model_version=model_version,
            embedding=np.ascontiguousarray(face.embedding, dtype=np.float32).tobytes(),
            **face.columns(),
        )
        for face in faces
    ]
    session.add_all(rows)
    session.flush()
    return rows


def get_face(session: Session, *, subject_id: int, face_id: int) -> Face | None:
    return session.scalars(
        select(Face).where(Face.id == face_id, Face.subject_id == subject_id)
    ).one_or_none()


def face_image(session: Session, *, subject_id: int, face_id: int) -> tuple[bool, bytes | None]:
    """(whether the face exists, its stored PNG or None when none was stored)."""
    row = session.execute(
        select(Face.image_png).where(Face.id == face_id, Face.subject_id == subject_id)
    ).one_or_none()
    return (False, None) if row is None else (True, row[0])


def delete_face(session: Session, *, face_id: int) -> None:
    session.execute(delete(Face).where(Face.id == face_id))


def subjects_of_faces(
    session: Session | Connection, *, face_ids: Sequence[int]
) -> dict[int, tuple[str, float]]:
    """Maps face id -> (subject external id, the face's Laplacian q), for the faces that
    still exist."""
    if not len(face_ids):
        return {}
    rows = session.execute(_SUBJECTS_OF_FACES, {"ids": [int(i) for i in face_ids]})
    return {
        int(face_id): (external_id, float(laplacian))
        for face_id, external_id, laplacian in rows
    }


def faces_for_reembedding(session: Session, *, gallery_id: int) -> list[tuple[int, bytes | None]]:
    return [
        (int(face_id), image)
        for face_id, image in session.execute(
            select(Face.id, Face.image_png).where(Face.gallery_id == gallery_id).order_by(Face.id)
        )
    ]


def set_embedding(
    session: Session, *, face_id: int, embedding: np.ndarray, model_version: str
) -> None:
    session.execute(
        update(Face)
        .where(Face.id == face_id)
        .values(
            embedding=np.ascontiguousarray(embedding, dtype=np.float32).tobytes(),
            model_version=model_version,
        )
    )
