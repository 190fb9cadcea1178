"""Request and response bodies of the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: Gallery names and subject ids appear in URLs: letters, digits, '.', '_', '-'.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class Quality(BaseModel):
    """Laplacian quality of the image as the network sees it, and its uploaded size."""

    laplacian: float = Field(description="q = mean |L| at the network input size (METHODS §3).")
    laplacian_var: float = Field(description="var(L) at the network input size.")
    width: int = Field(description="Width as uploaded.")
    height: int = Field(description="Height as uploaded.")


class QualityResponse(BaseModel):
    quality: Quality


class ModelInfo(BaseModel):
    name: str
    version: str


class VerifyResponse(BaseModel):
    similarity: float
    match: bool
    threshold: float
    quality: list[Quality]
    model: ModelInfo


class Match(BaseModel):
    subject: str
    similarity: float
    face: int


class IdentifyResponse(BaseModel):
    matches: list[Match]
    decision: Literal["match", "unknown"]
    threshold: float
    quality: Quality
    model: ModelInfo


class GalleryCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="The gallery's id in paths.")


class GalleryOut(BaseModel):
    name: str
    model: ModelInfo
    embedding_size: int
    subjects: int
    faces: int
    compatible: bool = Field(description="Whether the served model may use this gallery.")
    created_at: datetime | None


class SubjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=NAME_PATTERN, description="The subject's id in paths.")
    name: str | None = Field(default=None, max_length=256)
    metadata: dict[str, Any] = Field(default_factory=dict)


class FaceOut(BaseModel):
    id: int
    quality: Quality
    created_at: datetime | None


class SubjectOut(BaseModel):
    id: str
    name: str | None
    metadata: dict[str, Any]
    face_count: int
    created_at: datetime | None


class SubjectDetail(SubjectOut):
    faces: list[FaceOut]


class RefusedFace(BaseModel):
    index: int = Field(description="Position of the file in the request.")
    filename: str | None
    reason: str
    quality: Quality


class EnrollResponse(BaseModel):
    subject: str
    faces: list[FaceOut]
    refused: list[RefusedFace]


class ReembedResponse(BaseModel):
    gallery: str
    faces: int
    model: ModelInfo


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    model: ModelInfo | None
    database: bool
    index: bool
    problems: list[str]
