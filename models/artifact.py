"""The model artifact: an ONNX file plus the metadata JSON beside it.

This is the contract between training and serving. ``model.onnx`` is always paired with
``model.json`` (same stem) describing how to feed the network and how to read its output.
The loader refuses an ONNX file without valid metadata, and a metadata file whose
``onnx_sha256`` does not match the ONNX file next to it.

Input contract: float32 NCHW tensor of ``input_size`` (height, width), channels in
``colour_order``, values ``(pixel - mean) / std`` with pixels in [0, 255].
Output: one embedding of ``embedding_size`` per image (not necessarily normalised).
A quality-gated model says so in ``gate``: its threshold and where each branch came from.
``precision`` says whether the graph computes in fp32 (as exported), int8 or fp16.
``comparison`` says how two faces' embeddings are compared (``models.comparison``): by
their cosine, or for a gated model in the pair's space (three blocks per face).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from models.comparison import PAIR_SPACE_BLOCKS, Comparison

SCHEMA_VERSION: Final = 1
#: The false-accept rates at which thresholds are calibrated, as metadata keys.
THRESHOLD_FARS: tuple[str, ...] = ("1e-2", "1e-3", "1e-4")


class ArtifactError(ValueError):
    """A model artifact is missing, malformed or inconsistent."""


class QualityCell(BaseModel):
    """Thresholds of the pairs whose lower quality falls in band ``low`` and higher in ``high``.

    Attributes:
        low: band of the lower Laplacian q of the two faces (0 = the poorest band).
        high: band of the higher q; ``high >= low``.
        thresholds: cosine threshold per FAR key; ``None`` when the impostors of this cell
            were too few to measure that FAR.
        tar: true-accept rate of the calibration's genuine pairs at each threshold.
        genuine: genuine pairs measured in the cell.
        impostors: impostor pairs measured in the cell.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    low: int = Field(ge=0)
    high: int = Field(ge=0)
    thresholds: dict[str, float | None]
    tar: dict[str, float | None]
    genuine: int = Field(ge=0)
    impostors: int = Field(ge=0)


class QualityCalibration(BaseModel):
    """Decision thresholds as a function of the pair's Laplacian quality (version 1).

    The q axis is cut into bands at ``edges`` (band k holds ``edges[k-1] <= q <
    edges[k]``); a pair of faces with qualities q1, q2 is decided with the cell
    (band(min), band(max)). ``models.decision`` holds the rule; ``training.calibration``
    measures the cells. Artifacts without this field decide with their single threshold.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    quality: Literal["laplacian"] = Field(
        default="laplacian", description="q = mean |L| of the 112 crop (METHODS §3)."
    )
    edges: tuple[float, ...] = Field(description="Ascending inner band edges on q.")
    cells: tuple[QualityCell, ...]
    tar_floor: float = Field(
        ge=0.0, le=1.0,
        description="Under this TAR at the target FAR a cell's pairs are 'undecidable'.",
    )
    source: str = Field(description="What the thresholds were measured on.")

    @field_validator("edges")
    @classmethod
    def _ascending(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(b <= a for a, b in itertools.pairwise(value)):
            raise ValueError(f"band edges must be strictly ascending, got {value}")
        return value

    @field_validator("cells")
    @classmethod
    def _valid_cells(cls, value: tuple[QualityCell, ...]) -> tuple[QualityCell, ...]:
        for cell in value:
            if cell.high < cell.low:
                raise ValueError(f"cell ({cell.low}, {cell.high}): high band below low band")
            for far, t in cell.thresholds.items():
                if far not in THRESHOLD_FARS:
                    raise ValueError(f"cell ({cell.low}, {cell.high}): unknown FAR key {far}")
                if t is not None and not -1.0 <= t <= 1.0:
                    raise ValueError(f"cell ({cell.low}, {cell.high}): threshold {t} not a cosine")
        return value

    @model_validator(mode="after")
    def _complete(self) -> QualityCalibration:
        bands = len(self.edges) + 1
        wanted = {(lo, hi) for lo in range(bands) for hi in range(lo, bands)}
        have = [(c.low, c.high) for c in self.cells]
        if len(set(have)) != len(have) or set(have) != wanted:
            raise ValueError(
                f"{bands} bands need exactly one cell per (low <= high) band pair: "
                f"{len(wanted)} cells, got {len(have)}"
            )
        return self

    @property
    def bands(self) -> int:
        return len(self.edges) + 1


#: What a gated model's ``head`` says when a branch runs weights as they were released.
RELEASED_WEIGHTS: Final = "released weights"


class GateBranch(BaseModel):
    """One branch of a quality-gated model: which network, and where its weights came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        min_length=1,
        description="The network, e.g. 'dlib_face_recognition_resnet_model_v1' or "
        "'dlib-resnet29 student'.",
    )
    source: str = Field(
        min_length=1,
        description="Where its weights came from: the released weights' name and licence, "
        "or the training recipe (config path) and the checkpoint's step.",
    )
    head: str | None = Field(
        default=None,
        description="The training objective of this branch (e.g. 'approach2+distill'); "
        "null for weights used as released.",
    )


class GateInfo(BaseModel):
    """The quality gate of a gated model (version 1; ``models/backbones/gated.py``).

    The graph measures the Laplacian quality q of each input crop and returns the
    ``sharp`` branch's embedding when ``q >= threshold``, else the ``blurred`` branch's
    (both unit length, in one embedding space). ``training.gate`` chooses the threshold
    and records the branches; ``models.export`` copies the record into the metadata.
    Artifacts without this field are not gated.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    quality: Literal["laplacian"] = Field(
        default="laplacian",
        description="q = mean |Laplacian| of the 112 crop in pixel units (models/quality.py, "
        "METHODS §3): the q the service reports and quality_calibration bands.",
    )
    threshold: float = Field(
        ge=0.0, allow_inf_nan=False,
        description="Inputs with q >= threshold take the sharp branch, the others the "
        "blurred one (0: always the sharp branch).",
    )
    sharp: GateBranch = Field(description="The branch for q >= threshold.")
    blurred: GateBranch = Field(description="The branch for q < threshold.")
    chosen_on: str = Field(
        min_length=1, description="The data the threshold was chosen on, and how."
    )

    def head_label(self) -> str:
        """The ``head`` of a gated model: each branch's objective, sharp first, e.g.
        ``gated(sharp: released weights | blurred: approach2+distill)``."""
        sharp = self.sharp.head or RELEASED_WEIGHTS
        blurred = self.blurred.head or RELEASED_WEIGHTS
        return f"gated(sharp: {sharp} | blurred: {blurred})"


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
    head: str | None = Field(
        default=None,
        description="The training objective (margin head) of the network; for a gated "
        "model both branches', 'gated(sharp: ... | blurred: ...)' (GateInfo.head_label), "
        "detailed in ``gate``.",
    )
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
    quality_calibration: QualityCalibration | None = Field(
        default=None,
        description="Thresholds per quality band (versioned); without it the service "
        "decides every pair with ``thresholds``.",
    )
    gate: GateInfo | None = Field(
        default=None,
        description="The quality gate and its two branches (versioned); null for a model "
        "that is not gated.",
    )
    precision: Literal["fp32", "fp16", "int8"] = Field(
        default="fp32",
        description="Arithmetic of the graph (``models.quantize``): fp32 as exported, int8 "
        "(static QDQ, for the CPU provider) or fp16 (for CUDA). The input and output are "
        "float32 whatever the precision; metadata without the field is fp32.",
    )
    comparison: Comparison = Field(
        default="cosine",
        description="How two faces' embeddings are compared (``models.comparison``): "
        "'cosine', one unit vector per face; 'pair-space' (gated models), three unit "
        "blocks per face, dlib's cosine for two sharp faces and the students' for every "
        "other pair. Metadata without the field compares by cosine.",
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

    @model_validator(mode="after")
    def _pair_space_is_gated(self) -> ModelMetadata:
        if self.comparison == "pair-space":
            if self.gate is None:
                raise ValueError("comparison 'pair-space' needs a gated model (gate is null)")
            if self.embedding_size % PAIR_SPACE_BLOCKS:
                raise ValueError(
                    f"a pair-space embedding is {PAIR_SPACE_BLOCKS} blocks, but "
                    f"embedding_size {self.embedding_size} is not a multiple of it"
                )
        return self

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
