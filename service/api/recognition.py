"""Quality, verification (1:1) and identification (1:N)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, UploadFile

from service.api.deps import ClientRole, RecognitionDep, SettingsDep, read_upload
from service.api.guard import GuardedRoute
from service.api.params import FaceField, FaceIndexField, GalleryField
from service.api.responses import errors
from service.recognition import FaceRequest
from service.schemas import (
    DetectResponse,
    IdentifyFrameResponse,
    IdentifyResponse,
    QualityResponse,
    VerifyResponse,
)

router = APIRouter(prefix="/v1", tags=["recognition"], route_class=GuardedRoute)

Threshold = Annotated[
    float | None,
    Form(
        ge=-1.0, le=1.0,
        description="Your own cosine threshold for every pair (no quality bands, never "
        "'undecidable'); default: the threshold of the pair's quality band at `far`.",
    ),
]
Far = Annotated[
    str | None,
    Form(
        max_length=16,
        description="False-accept rate to decide at, one the model is calibrated at "
        "(1e-2, 1e-3, 1e-4); default: LRFR_TARGET_FAR.",
    ),
]


@router.post(
    "/quality", response_model=QualityResponse, responses=errors(400, 401, 413, 415, 422, 503)
)
async def quality(
    _: ClientRole,
    service: RecognitionDep,
    settings: SettingsDep,
    image: Annotated[UploadFile, File(description="A face image.")],
    face: FaceField = None,
    face_index: FaceIndexField = None,
) -> QualityResponse:
    """Laplacian quality of the face as the network sees it, and how it was found."""
    return await service.quality(
        await read_upload(image, field="image", settings=settings),
        face=FaceRequest(mode=face, index=face_index),
    )


@router.post(
    "/detect", response_model=DetectResponse, responses=errors(400, 401, 413, 415, 422, 503)
)
async def detect(
    _: ClientRole,
    service: RecognitionDep,
    settings: SettingsDep,
    image: Annotated[UploadFile, File(description="An image: a frame, a photo, a crop.")],
) -> DetectResponse:
    """The faces in an image, largest first: box, landmarks, detector score and the
    Laplacian quality of each face's aligned crop."""
    return await service.detect(await read_upload(image, field="image", settings=settings))


@router.post(
    "/verify", response_model=VerifyResponse, responses=errors(400, 401, 413, 415, 422, 503)
)
async def verify(
    _: ClientRole,
    service: RecognitionDep,
    settings: SettingsDep,
    image1: Annotated[UploadFile, File()],
    image2: Annotated[UploadFile, File()],
    threshold: Threshold = None,
    far: Far = None,
    face: FaceField = None,
) -> VerifyResponse:
    """1:1: are the two faces the same person? (the largest face of each image)"""
    first = await read_upload(image1, field="image1", settings=settings)
    second = await read_upload(image2, field="image2", settings=settings)
    return await service.verify(
        first, second, threshold=threshold, far=far, face=FaceRequest(mode=face)
    )


@router.post(
    "/identify",
    response_model=IdentifyResponse | IdentifyFrameResponse,
    responses=errors(400, 401, 404, 409, 413, 415, 422, 503),
)
async def identify(
    _: ClientRole,
    service: RecognitionDep,
    settings: SettingsDep,
    image: Annotated[UploadFile, File()],
    gallery: GalleryField,
    top_k: Annotated[int, Form(ge=1)] = 5,
    threshold: Threshold = None,
    far: Far = None,
    face: FaceField = None,
    face_index: FaceIndexField = None,
    faces: Annotated[
        Literal["one", "all"],
        Form(description="'all': one answer per face found in the image (a frame)."),
    ] = "one",
) -> IdentifyResponse | IdentifyFrameResponse:
    """1:N, open-set: the closest subjects, and "unknown" when the best is under threshold;
    with faces=all, that for every face of a frame."""
    upload = await read_upload(image, field="image", settings=settings)
    if faces == "all":
        return await service.identify_all(
            upload, gallery=gallery, top_k=top_k, threshold=threshold, far=far
        )
    return await service.identify(
        upload, gallery=gallery, top_k=top_k, threshold=threshold, far=far,
        face=FaceRequest(mode=face, index=face_index),
    )
