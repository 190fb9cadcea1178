"""The model artifact: an ONNX file plus the metadata JSON beside it.

This is the contract between training and serving. ``model.onnx`` is always paired with
``model.json`` (same stem) describing how to feed the network and how to read its output.
The loader refuses an ONNX file without valid metadata, and a metadata file whose
``onnx_sha256`` does not match the ONNX file next to it.

Input contract: float32 NCHW tensor of ``input_size`` (height, width), channels in
``colour_order``, values ``(pixel - mean) / std`` with pixels in [0, 255].
Output: one embedding of ``embedding_size`` per image (not necessarily normalised).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

SCHEMA_VERSION = 1
#: The false-accept rates at which thresholds are calibrated, as metadata keys.
THRESHOLD_FARS: tuple[str, ...] = ("1e-2", "1e-3", "1e-4")


class ArtifactError(ValueError):
    """A model artifact is missing, malformed or inconsistent."""


class ModelMetadata(BaseModel):
    """Metadata that travels beside every exported ONNX model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    name: str = Field(min_length=1, description="Human name of the model, e.g. 'lrfr-ir50'.")
    version: str = Field(min_length=1, description="Version string; galleries are tied to it.")
    input_name: str = "input"
    output_name: str = "embedding"
    input_size: tuple[int, int] = (112, 112)
    colour_order: Literal["RGB", "BGR"] = "RGB"
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)
    embedding_size: int = Field(gt=0)
    backbone: str
    head: str | None = None
    training_data: str | None = None
    git_commit: str | None = None
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    opset: int = Field(default=17, ge=17)
    onnx_sha256: str | None = Field(
        default=None, description="SHA-256 of the ONNX file; checked on load when present."
    )
    thresholds: dict[str, float | None] = Field(
        default_factory=lambda: dict.fromkeys(THRESHOLD_FARS),
        description="Cosine thresholds keyed by false-accept rate; null until calibrated.",
    )
    extra: dict[str, object] = Field(default_factory=dict, description="Free-form notes.")

    @field_validator("input_size")
    @classmethod
    def _positive_size(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) <= 0:
            raise ValueError(f"input_size must be positive, got {value}")
        return value

    @field_validator("std")
    @classmethod
    def _nonzero_std(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(v == 0 for v in value):
            raise ValueError("std must not contain zeros")
        return value

    @field_validator("thresholds")
    @classmethod
    def _known_fars(cls, value: dict[str, float | None]) -> dict[str, float | None]:
        unknown = set(value) - set(THRESHOLD_FARS)
        if unknown:
            raise ValueError(f"unknown FAR keys {sorted(unknown)}; use {list(THRESHOLD_FARS)}")
        for far, t in value.items():
            if t is not None and not -1.0 <= t <= 1.0:
                raise ValueError(f"threshold at FAR {far} must be a cosine in [-1, 1], got {t}")
        return {far: value.get(far) for far in THRESHOLD_FARS}

    def default_threshold(self, fallback: float) -> float:
        """The FAR 1e-3 threshold if calibrated, else ``fallback``."""
        calibrated = self.thresholds.get("1e-3")
        return fallback if calibrated is None else calibrated


def metadata_path(onnx_path: str | Path) -> Path:
    """Where the metadata of ``onnx_path`` lives: same folder, same stem, ``.json``."""
    return Path(onnx_path).with_suffix(".json")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_metadata(onnx_path: str | Path, metadata: ModelMetadata) -> Path:
    """Writes ``metadata`` beside ``onnx_path``, stamping the ONNX file's SHA-256."""
    stamped = metadata.model_copy(update={"onnx_sha256": file_sha256(onnx_path)})
    target = metadata_path(onnx_path)
    target.write_text(stamped.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return target


def load_metadata(onnx_path: str | Path) -> ModelMetadata:
    """Reads and validates the metadata of ``onnx_path``.

    Raises:
        ArtifactError: the ONNX file or its metadata is missing, the JSON is malformed,
            a field is invalid, or the recorded SHA-256 does not match the ONNX file.
    """
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ArtifactError(f"model file not found: {onnx_path}")
    meta_path = metadata_path(onnx_path)
    if not meta_path.is_file():
        raise ArtifactError(
            f"{onnx_path} has no metadata: expected {meta_path} beside it "
            "(export models with 'lrfr export', which writes both)"
        )
    try:
        raw = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"metadata {meta_path} is not valid JSON: {exc}") from exc
    try:
        metadata = ModelMetadata.model_validate(raw)
    except ValidationError as exc:
        raise ArtifactError(f"metadata {meta_path} is invalid:\n{exc}") from exc
    if metadata.onnx_sha256 is not None:
        actual = file_sha256(onnx_path)
        if actual != metadata.onnx_sha256:
            raise ArtifactError(
                f"{onnx_path} does not match its metadata (sha256 {actual[:12]}..., "
                f"metadata says {metadata.onnx_sha256[:12]}...): the pair was mixed up"
            )
    return metadata


def update_thresholds(onnx_path: str | Path, thresholds: dict[str, float | None]) -> ModelMetadata:
    """Rewrites the metadata of ``onnx_path`` with calibrated ``thresholds``."""
    metadata = load_metadata(onnx_path)
    updated = metadata.model_copy(update={"thresholds": {**metadata.thresholds, **thresholds}})
    ModelMetadata.model_validate(updated.model_dump())  # re-validate the merged keys
    write_metadata(onnx_path, updated)
    return updated
