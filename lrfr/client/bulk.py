"""Bulk work over the client: import a folder per subject into a gallery, export one.

``import_folder`` is resumable: each enrolled face keeps the SHA-256 of the file it came
from (``FaceOut.sha256``), so files whose content a subject already holds are skipped,
and a second run over the same folder enrolls nothing new.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from lrfr.client.aio import AsyncClient
from lrfr.client.calls import FaceMode
from lrfr.client.errors import ApiError, NotFoundError
from service.schemas import NAME_PATTERN, SubjectDetail

logger = logging.getLogger(__name__)

#: The files an import sends (the formats the service decodes).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".pgm", ".ppm"})
#: What an export writes beside the face images, and an import reads back when present.
MANIFEST = "lrfr-gallery.json"

Outcome = Literal["enrolled", "skipped", "refused", "failed"]


@dataclass(frozen=True)
class SourceImage:
    """One file of the folder: whose face it is, where, and its content hash."""

    subject: str
    path: Path
    sha256: str


@dataclass
class ImportRecord:
    """What happened to one file.

    Attributes:
        outcome: ``enrolled``; ``skipped`` (its content was already enrolled for the
            subject); ``refused`` by the service for what the image is (no face, several
            faces, quality under the floor, not an image), with ``code`` and ``reason``;
            ``failed`` for anything else (the service unreachable, a 5xx): worth a retry.
    """

    subject: str
    path: str
    outcome: Outcome
    face: int | None = None
    code: str | None = None
    reason: str | None = None


@dataclass
class ImportReport:
    gallery: str
    subjects: int = 0
    subjects_created: int = 0
    records: list[ImportRecord] = field(default_factory=list)

    def count(self, outcome: Outcome) -> int:
        return sum(record.outcome == outcome for record in self.records)

    @property
    def refused(self) -> list[ImportRecord]:
        return [record for record in self.records if record.outcome == "refused"]

    @property
    def failed(self) -> list[ImportRecord]:
        return [record for record in self.records if record.outcome == "failed"]

    def to_json(self) -> dict[str, Any]:
        return {
            "gallery": self.gallery,
            "subjects": self.subjects,
            "subjects_created": self.subjects_created,
            "counts": {
                outcome: self.count(outcome)
                for outcome in ("enrolled", "skipped", "refused", "failed")
            },
            "records": [asdict(record) for record in self.records],
        }


def _natural(text: str) -> list[Any]:
    # s2 before s10, 2.pgm before 10.pgm
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def scan_folder(folder: Path) -> tuple[dict[str, list[Path]], list[ImportRecord]]:
    """The images of each subject folder (natural order), and the folders that cannot be
    subjects (their name is not a valid subject id)."""
    subjects: dict[str, list[Path]] = {}
    refused: list[ImportRecord] = []
    pattern = re.compile(NAME_PATTERN)
    for child in sorted(folder.iterdir(), key=lambda p: _natural(p.name)):
        if not child.is_dir() or child.name.startswith("."):
            continue
        images = sorted(
            (p for p in child.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
            key=lambda p: _natural(p.name),
        )
        if not pattern.match(child.name):
            refused.extend(
                ImportRecord(
                    subject=child.name, path=str(p), outcome="refused", code="invalid_subject_id",
                    reason="the folder name is not a subject id (letters, digits, '.', '_', "
                    "'-', starting with a letter or digit, at most 128 characters)",
                )
                for p in images
            )
            continue
        if images:
            subjects[child.name] = images
    return subjects, refused


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest_subjects(folder: Path) -> dict[str, dict[str, Any]]:
    path = folder / MANIFEST
    if not path.is_file():
        return {}
    manifest = json.loads(path.read_text())
    return {subject["id"]: subject for subject in manifest.get("subjects", [])}


def _refusal(error: ApiError) -> bool:
    """Whether an error answer is about the image (refused) rather than the service."""
    return error.status in (400, 413, 415, 422)


async def import_folder(
    client: AsyncClient,
    folder: Path,
    *,
    gallery: str,
    workers: int = 4,
    face: FaceMode | None = None,
    per_subject: int | None = None,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> ImportReport:
    """Enrolls every image of ``folder/<subject>/`` into ``gallery``, skipping files
    whose content is already enrolled for that subject.

    Args:
        client: an admin-key client.
        folder: one folder per subject, named by its id; an ``lrfr-gallery.json`` written
            by ``export_gallery`` gives new subjects their name and metadata (and creates
            those without images).
        gallery: created when missing.
        workers: requests in flight at once.
        face: how the service reads the images (default: its ``LRFR_DEFAULT_FACE``).
        per_subject: only the first N images of each subject (natural order).
        progress: called with 1 as each file is done (enrolled, skipped or refused).
        on_total: called once with the number of files to go through.

    Returns:
        One record per file, and the subjects seen and created.
    """
    report = ImportReport(gallery=gallery)
    subjects, invalid = scan_folder(folder)
    report.records.extend(invalid)
    if per_subject is not None:
        subjects = {name: paths[:per_subject] for name, paths in subjects.items()}
    known = _manifest_subjects(folder)
    pattern = re.compile(NAME_PATTERN)
    for subject in known:  # subjects of an export without faces are created all the same
        if pattern.match(subject):
            subjects.setdefault(subject, [])
    report.subjects = len(subjects)
    total = sum(len(paths) for paths in subjects.values())
    if on_total is not None:
        on_total(total)
    done = progress or (lambda _: None)
    try:
        await client.get_gallery(gallery)
    except NotFoundError:
        await client.create_gallery(gallery)
        logger.info("created gallery '%s'", gallery)
    limit = asyncio.Semaphore(workers)

    async def enrolled_hashes(subject: str) -> set[str]:
        async with limit:
            try:
                detail = await client.get_subject(gallery, subject)
            except NotFoundError:
                extra = known.get(subject, {})
                await client.create_subject(
                    gallery, subject, name=extra.get("name"), metadata=extra.get("metadata")
                )
                report.subjects_created += 1
                return set()
        return {face.sha256 for face in detail.faces if face.sha256}

    async def upload(image: SourceImage) -> ImportRecord:
        record = ImportRecord(subject=image.subject, path=str(image.path), outcome="enrolled")
        async with limit:
            try:
                data = await asyncio.to_thread(image.path.read_bytes)
                answer = await client.enroll(
                    gallery, image.subject, [(image.path.name, data)], face=face
                )
            except ApiError as error:
                record.outcome = "refused" if _refusal(error) else "failed"
                record.code, record.reason = error.code, error.message
                if error.code == "quality_refused" and isinstance(error.detail, dict):
                    refused = error.detail.get("refused") or [{}]
                    record.reason = str(refused[0].get("reason", error.message))
            except httpx.HTTPError as error:
                record.outcome, record.code = "failed", "transport"
                record.reason = f"{error.__class__.__name__}: {error}"
            else:
                if answer.faces:
                    record.face = answer.faces[0].id
                else:  # pragma: no cover - the service answers 422 when all are refused
                    record.outcome, record.code = "refused", "quality_refused"
                    record.reason = answer.refused[0].reason if answer.refused else None
        done(1)
        return record

    async def one_subject(subject: str, paths: list[Path]) -> list[ImportRecord]:
        try:
            present = await enrolled_hashes(subject)
        except (ApiError, httpx.HTTPError) as error:
            done(len(paths))
            return [
                ImportRecord(
                    subject=subject, path=str(p), outcome="failed",
                    code=getattr(error, "code", "transport"), reason=str(error),
                )
                for p in paths
            ]
        records: list[ImportRecord] = []
        todo: list[SourceImage] = []
        for path in paths:
            digest = await asyncio.to_thread(_sha256, path)
            if digest in present:
                records.append(ImportRecord(subject=subject, path=str(path), outcome="skipped"))
                done(1)
                continue
            present.add(digest)  # the same file twice in one folder is enrolled once
            todo.append(SourceImage(subject=subject, path=path, sha256=digest))
        records.extend(await asyncio.gather(*(upload(image) for image in todo)))
        return records

    results = await asyncio.gather(
        *(one_subject(subject, paths) for subject, paths in subjects.items())
    )
    for records in results:
        report.records.extend(sorted(records, key=lambda r: _natural(Path(r.path).name)))
    return report


@dataclass
class ExportReport:
    gallery: str
    subjects: int
    faces: int
    images: int
    missing_images: list[int]


async def export_gallery(
    client: AsyncClient,
    gallery: str,
    out: Path,
    *,
    images: bool = False,
    workers: int = 4,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> ExportReport:
    """Writes ``out/lrfr-gallery.json`` (the gallery, and each subject with its metadata
    and faces) and, with ``images``, each stored face as ``out/<subject>/<face>.png``.

    The stored faces are the aligned crops the network saw: import them again with
    ``face="aligned"``.
    """
    info = await client.get_gallery(gallery)
    summaries = [subject async for subject in client.iter_subjects(gallery, page=1000)]
    if on_total is not None:
        on_total(len(summaries))
    done = progress or (lambda _: None)
    limit = asyncio.Semaphore(workers)
    missing: list[int] = []
    written = 0

    async def one(subject: str) -> SubjectDetail:
        nonlocal written
        async with limit:
            detail = await client.get_subject(gallery, subject)
        if images:
            folder = out / subject
            await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
            for face in detail.faces:
                async with limit:
                    try:
                        data = await client.face_image(gallery, subject, face.id)
                    except NotFoundError:
                        missing.append(face.id)
                        continue
                await asyncio.to_thread((folder / f"{face.id}.png").write_bytes, data)
                written += 1
        done(1)
        return detail

    out.mkdir(parents=True, exist_ok=True)
    details = await asyncio.gather(*(one(subject.id) for subject in summaries))
    manifest = {
        "gallery": info.model_dump(mode="json"),
        "subjects": [detail.model_dump(mode="json") for detail in details],
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    return ExportReport(
        gallery=gallery,
        subjects=len(details),
        faces=sum(len(detail.faces) for detail in details),
        images=written,
        missing_images=sorted(missing),
    )


def refused_lines(records: Iterable[ImportRecord]) -> list[str]:
    """One line per refused or failed file: path, code, reason."""
    return [f"{r.path}: {r.code}: {r.reason}" for r in records]
