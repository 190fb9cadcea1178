"""Galleries, their subjects, and the subjects' faces."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Query, Response, UploadFile, status
from starlette.concurrency import run_in_threadpool

from service.api.deps import AdminRole, ClientRole, RecognitionDep, SettingsDep, read_upload
from service.api.guard import GuardedRoute
from service.api.params import (
    INT64_MAX,
    FaceField,
    FaceId,
    FaceIndexField,
    GalleryName,
    SubjectId,
)
from service.api.responses import errors
from service.recognition import FaceRequest
from service.schemas import (
    EnrollResponse,
    GalleryCreate,
    GalleryOut,
    GalleryPage,
    ReembedResponse,
    SubjectCreate,
    SubjectDetail,
    SubjectOut,
    SubjectPage,
)

router = APIRouter(prefix="/v1/galleries", tags=["galleries"], route_class=GuardedRoute)

#: The largest page a list answers.
MAX_PAGE = 1000
Offset = Annotated[
    int, Query(ge=0, le=INT64_MAX, description="How many items of the list to skip.")
]
Limit = Annotated[
    int, Query(ge=1, le=MAX_PAGE, description=f"The most items to answer (up to {MAX_PAGE}).")
]


@router.post(
    "",
    response_model=GalleryOut,
    status_code=status.HTTP_201_CREATED,
    responses=errors(400, 401, 403, 409, 413, 422, 503),
)
async def create_gallery(_: AdminRole, service: RecognitionDep, body: GalleryCreate) -> GalleryOut:
    """Creates a gallery tied to the served model version."""
    return await run_in_threadpool(lambda: service.galleries.create_gallery(name=body.name))


@router.get("", response_model=GalleryPage, responses=errors(401, 422, 503))
async def list_galleries(
    _: ClientRole, service: RecognitionDep, offset: Offset = 0, limit: Limit = 100
) -> GalleryPage:
    """The galleries by name, a page at a time, with how many there are in all."""
    return await run_in_threadpool(
        lambda: service.galleries.list_galleries(offset=offset, limit=limit)
    )


@router.get("/{gallery}", response_model=GalleryOut, responses=errors(401, 404, 422, 503))
async def get_gallery(_: ClientRole, service: RecognitionDep, gallery: GalleryName) -> GalleryOut:
    return await run_in_threadpool(lambda: service.galleries.get_gallery(name=gallery))


@router.delete(
    "/{gallery}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=errors(401, 403, 404, 422, 503),
)
async def delete_gallery(_: AdminRole, service: RecognitionDep, gallery: GalleryName) -> Response:
    """Deletes the gallery, its subjects, faces and vectors."""
    await run_in_threadpool(lambda: service.galleries.delete_gallery(name=gallery))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{gallery}/reembed",
    response_model=ReembedResponse,
    responses=errors(400, 401, 403, 404, 409, 413, 415, 422, 503),
)
async def reembed_gallery(
    _: AdminRole, service: RecognitionDep, gallery: GalleryName
) -> ReembedResponse:
    """Re-embeds the gallery's stored faces with the served model and moves it to it."""
    return await service.reembed(gallery=gallery)


@router.post(
    "/{gallery}/subjects",
    response_model=SubjectOut,
    status_code=status.HTTP_201_CREATED,
    responses=errors(400, 401, 403, 404, 409, 413, 422, 503),
)
async def create_subject(
    _: AdminRole, service: RecognitionDep, gallery: GalleryName, body: SubjectCreate
) -> SubjectOut:
    return await run_in_threadpool(
        lambda: service.galleries.create_subject(
            gallery=gallery, external_id=body.id, name=body.name, attributes=body.metadata
        )
    )


@router.get(
    "/{gallery}/subjects", response_model=SubjectPage, responses=errors(401, 404, 422, 503)
)
async def list_subjects(
    _: ClientRole,
    service: RecognitionDep,
    gallery: GalleryName,
    offset: Offset = 0,
    limit: Limit = 100,
) -> SubjectPage:
    """The gallery's subjects in the order they were created, a page at a time."""
    return await run_in_threadpool(
        lambda: service.galleries.list_subjects(gallery=gallery, offset=offset, limit=limit)
    )


@router.get(
    "/{gallery}/subjects/{subject}",
    response_model=SubjectDetail,
    responses=errors(401, 404, 422, 503),
)
async def get_subject(
    _: ClientRole, service: RecognitionDep, gallery: GalleryName, subject: SubjectId
) -> SubjectDetail:
    return await run_in_threadpool(
        lambda: service.galleries.get_subject(gallery=gallery, subject=subject)
    )


@router.delete(
    "/{gallery}/subjects/{subject}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=errors(401, 403, 404, 422, 503),
)
async def delete_subject(
    _: AdminRole, service: RecognitionDep, gallery: GalleryName, subject: SubjectId
) -> Response:
    """Deletes the subject, its faces and their vectors."""
    await run_in_threadpool(
        lambda: service.galleries.delete_subject(gallery=gallery, subject=subject)
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{gallery}/subjects/{subject}/faces",
    response_model=EnrollResponse,
    status_code=status.HTTP_201_CREATED,
    responses=errors(400, 401, 403, 404, 409, 413, 415, 422, 503),
)
async def enroll_faces(
    _: AdminRole,
    service: RecognitionDep,
    settings: SettingsDep,
    gallery: GalleryName,
    subject: SubjectId,
    images: Annotated[list[UploadFile], File(description="One or more face images.")],
    face: FaceField = None,
    face_index: FaceIndexField = None,
) -> EnrollResponse:
    """Enrolls one or many faces; those under the quality floor are refused with a reason,
    and an image with two or more faces of similar size unless face_index picks one."""
    uploads = [
        await read_upload(image, field=f"images[{position}]", settings=settings)
        for position, image in enumerate(images)
    ]
    return await service.enroll(
        uploads, gallery=gallery, subject=subject, face=FaceRequest(mode=face, index=face_index)
    )


@router.get(
    "/{gallery}/subjects/{subject}/faces/{face}/image",
    response_class=Response,
    responses={
        200: {
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
            "description": "The face as stored: the aligned crop the network saw (PNG).",
        },
        **errors(401, 404, 422, 503),
    },
)
async def get_face_image(
    _: ClientRole,
    service: RecognitionDep,
    gallery: GalleryName,
    subject: SubjectId,
    face: FaceId,
) -> Response:
    """The stored image of one face (404 when faces are not stored,
    LRFR_STORE_FACE_IMAGES=0)."""
    image = await run_in_threadpool(
        lambda: service.galleries.face_image(gallery=gallery, subject=subject, face_id=face)
    )
    return Response(image, media_type="image/png", headers={"Cache-Control": "private"})


@router.delete(
    "/{gallery}/subjects/{subject}/faces/{face}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=errors(401, 403, 404, 422, 503),
)
async def delete_face(
    _: AdminRole,
    service: RecognitionDep,
    gallery: GalleryName,
    subject: SubjectId,
    face: FaceId,
) -> Response:
    """Deletes one face and its vector."""
    await run_in_threadpool(
        lambda: service.galleries.delete_face(gallery=gallery, subject=subject, face_id=face)
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
