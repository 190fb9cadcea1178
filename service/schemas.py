"""Request and response bodies of the API."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Annotated, Any, Generic, Literal, TypeVar, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, WithJsonSchema
from typing_extensions import TypeAliasType

#: Gallery names and subject ids appear in URLs: letters, digits, '.', '_', '-'.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"

#: Limits of a subject's metadata: nesting depth and size as JSON (characters).
METADATA_MAX_DEPTH = 16
METADATA_MAX_CHARS = 65536


def _as_utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes although they were stored in UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


#: A timestamp that always carries its (UTC) zone, whatever the database returns.
Timestamp = Annotated[datetime | None, AfterValidator(_as_utc)]


def _no_nul(text: str | None) -> str | None:
    # PostgreSQL text and JSONB cannot hold U+0000; refuse it on every database alike.
    if text is not None and "\x00" in text:
        raise ValueError("text must not contain NUL characters (U+0000)")
    return text


def _check_metadata(value: dict[str, Any]) -> dict[str, Any]:
    def depth(item: Any, level: int) -> None:
        if level > METADATA_MAX_DEPTH:
            raise ValueError(f"metadata is nested deeper than {METADATA_MAX_DEPTH} levels")
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError("metadata numbers must be finite (no NaN or Infinity)")
        if isinstance(item, str):
            _no_nul(item)
        if isinstance(item, dict):
            for key in item:
                _no_nul(key)
            item = list(item.values())
        for child in item if isinstance(item, list) else ():
            depth(child, level + 1)

    depth(value, 1)
    size = len(json.dumps(value, ensure_ascii=False))
    if size > METADATA_MAX_CHARS:
        raise ValueError(
            f"metadata is {size} characters as JSON; the limit is {METADATA_MAX_CHARS}"
        )
    return value


#: Text without NUL, as JSON Schema (the validators above refuse NUL; this documents it).
_NUL_FREE_PATTERN = "^[^\\u0000]*$"
_NulFreeText = Annotated[str, WithJsonSchema({"type": "string", "pattern": _NUL_FREE_PATTERN})]
# "not" rather than "pattern", so that dict keys become propertyNames, not patternProperties
_NulFreeKey = Annotated[str, WithJsonSchema({"type": "string", "not": {"pattern": "\\u0000"}})]
# mypy cannot resolve this recursive TypeAliasType (python/mypy#16614); pydantic can
MetadataValue = TypeAliasType(  # type: ignore[misc]
    "MetadataValue",
    Union[  # noqa: UP007 (a recursive alias needs the string forward references)
        _NulFreeText,
        bool,
        int,
        float,
        list["MetadataValue"],  # type: ignore[misc]
        dict[_NulFreeKey, "MetadataValue"],  # type: ignore[misc]
        None,
    ],
)


class _DocumentedAs:
    """Annotated marker: a field validated as declared is documented as ``type_`` (here,
    NUL-free JSON at every level, which JSON Schema can say and ``dict[str, Any]`` cannot)."""

    def __init__(self, type_: Any) -> None:
        self._type = type_

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> Any:
        return handler(TypeAdapter(self._type).core_schema)


class Quality(BaseModel):
    """Laplacian quality of the image as the network sees it, and its uploaded size."""

    laplacian: float = Field(description="q = mean |L| at the network input size (METHODS §3).")
    laplacian_var: float = Field(description="var(L) at the network input size.")
    width: int = Field(description="Width as uploaded.")
    height: int = Field(description="Height as uploaded.")


class FaceInfo(BaseModel):
    """How the face of an upload was found (service/faces.py)."""

    alignment: Literal["landmarks", "box", "as_is"] = Field(
        description="'landmarks': detected and aligned by its 5 points; 'box': the image "
        "(or a detection) taken as a detector box; 'as_is': the upload was a template crop."
    )
    box: tuple[float, float, float, float] = Field(
        description="x1, y1, x2, y2 of the face in the uploaded image's pixels."
    )
    landmarks: list[list[float]] | None = Field(
        default=None, description="Eyes, nose tip, mouth corners (x, y), when detected."
    )
    score: float | None = Field(default=None, description="Detector score, when detected.")
    index: int | None = Field(
        default=None, description="Which detected face (0 = the largest), when detected."
    )
    faces_found: int = Field(description="Faces the detector found in the image.")


class QualityResponse(BaseModel):
    quality: Quality
    face: FaceInfo


class ModelInfo(BaseModel):
    name: str
    version: str


class GateBranchInfo(BaseModel):
    """One branch of a quality-gated model (the artifact's ``gate``, models/artifact.py)."""

    name: str = Field(description="The network.")
    source: str = Field(description="Where its weights came from.")
    head: str | None = Field(description="Its training objective; null for released weights.")


class ModelGate(BaseModel):
    """The quality gate: a face with q >= ``threshold`` is embedded by the ``sharp``
    branch (and, for a pair-space model, by the ``blurred`` one too), else by ``blurred``."""

    quality: Literal["laplacian"] = Field(
        description="The q the gate measures: the Laplacian q of the face's aligned crop, "
        "as /v1/quality reports it."
    )
    threshold: float
    sharp: GateBranchInfo
    blurred: GateBranchInfo
    chosen_on: str = Field(description="The data the threshold was chosen on.")


class ServedModel(ModelInfo):
    """The model the service runs, as its artifact's metadata describes it."""

    backbone: str
    head: str | None = Field(description="Training objective; a gated model names both branches'.")
    embedding_size: int
    comparison: Literal["cosine", "pair-space"] = Field(
        default="cosine",
        description="How two faces are compared: 'cosine' of one vector per face, or "
        "'pair-space' (three blocks per face: the sharp branch's cosine for two sharp faces, "
        "the blurred branch's for every other pair).",
    )
    gate: ModelGate | None = Field(description="The quality gate; null for a model not gated.")


class QualityBand(BaseModel):
    """The quality cell a pair was decided in (models/decision.py)."""

    low: int = Field(description="Band of the lower q of the two faces (0 = poorest).")
    high: int = Field(description="Band of the higher q.")
    low_range: tuple[float | None, float | None] = Field(
        description="[from, to) of q in the lower face's band; null = open."
    )
    high_range: tuple[float | None, float | None]
    label: str


class VerifyResponse(BaseModel):
    similarity: float
    decision: Literal["match", "no_match", "undecidable"] = Field(
        description="'undecidable': the faces are too poor for the model to tell at this FAR."
    )
    match: bool = Field(description="decision == 'match'.")
    threshold: float | None = Field(
        description="Cosine threshold of the pair's quality band (or the one sent); null "
        "when the band has none at this FAR."
    )
    far: str | None = Field(
        description="The false-accept rate the threshold stands for; null for a threshold "
        "sent by the caller or an uncalibrated model."
    )
    band: QualityBand | None = Field(description="Null for a model without quality bands.")
    tar: float | None = Field(
        description="Calibrated true-accept rate at this threshold in this band."
    )
    reason: str | None = Field(description="Why the pair is undecidable.")
    quality: list[Quality]
    faces: list[FaceInfo] = Field(description="How each image's face was found.")
    model: ModelInfo


class Match(BaseModel):
    subject: str
    similarity: float
    face: int
    face_quality: float = Field(description="Laplacian q of the gallery face when enrolled.")
    threshold: float | None = Field(description="Threshold of the probe-vs-face pair's band.")
    decision: Literal["match", "no_match", "undecidable"]


class IdentifyResponse(BaseModel):
    matches: list[Match]
    decision: Literal["match", "unknown", "undecidable"] = Field(
        description="Open-set answer from the best candidate: 'match' when its similarity "
        "reaches its band's threshold, 'unknown' when not (or the gallery is empty), "
        "'undecidable' when the probe is too poor to decide against it."
    )
    threshold: float | None = Field(description="The best candidate's threshold.")
    far: str | None
    band: QualityBand | None
    reason: str | None
    quality: Quality
    face: FaceInfo
    model: ModelInfo


class IdentifyFrameResponse(BaseModel):
    """``faces=all``: one identification per face found in the frame, largest first."""

    width: int
    height: int
    faces: list[IdentifyResponse]
    model: ModelInfo


class DetectedFace(BaseModel):
    face: FaceInfo
    quality: Quality = Field(description="Laplacian q of the face's aligned crop.")


class DetectResponse(BaseModel):
    width: int
    height: int
    faces: list[DetectedFace] = Field(description="Largest first.")


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
    created_at: Timestamp


class SubjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=NAME_PATTERN, description="The subject's id in paths.")
    name: Annotated[str | None, AfterValidator(_no_nul)] = Field(
        default=None, max_length=256, json_schema_extra={"pattern": _NUL_FREE_PATTERN}
    )
    metadata: Annotated[
        dict[str, Any],
        AfterValidator(_check_metadata),
        _DocumentedAs(dict[_NulFreeKey, MetadataValue]),
    ] = Field(
        default_factory=dict,
        description=f"JSON object, nested at most {METADATA_MAX_DEPTH} levels, "
        f"{METADATA_MAX_CHARS} characters as JSON at most.",
    )


class FaceOut(BaseModel):
    id: int
    quality: Quality
    created_at: Timestamp
    sha256: str | None = Field(
        default=None,
        description="SHA-256 (hex) of the file the face was enrolled from, as uploaded; "
        "null for faces enrolled before the service recorded it.",
    )
    face: FaceInfo | None = Field(
        default=None, description="How the face was found (in the enrollment answer)."
    )


class SubjectOut(BaseModel):
    id: str
    name: str | None
    metadata: dict[str, Any]
    face_count: int
    created_at: Timestamp


class SubjectDetail(SubjectOut):
    faces: list[FaceOut]


ItemT = TypeVar("ItemT")


class Page(BaseModel, Generic[ItemT]):
    """One page of a list: its items, how many there are in all, and where it starts."""

    items: list[ItemT]
    total: int = Field(description="How many items the whole list holds.")
    offset: int = Field(description="Position of the first item of this page in the list.")
    limit: int = Field(description="The most items a page of this request holds.")


class GalleryPage(Page[GalleryOut]):
    """A page of galleries, by name."""


class SubjectPage(Page[SubjectOut]):
    """A page of a gallery's subjects, in the order they were created."""


class RefusedFace(BaseModel):
    index: int = Field(description="Position of the file in the request.")
    filename: str | None
    reason: str
    quality: Quality
    face: FaceInfo | None = None


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
    model: ServedModel | None
    database: bool
    index: bool
    problems: list[str]
