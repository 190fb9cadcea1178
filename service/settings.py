"""Service settings, read from ``LRFR_*`` environment variables (pydantic-settings).

Validators refuse unsafe or broken configurations at startup: no API key outside dev
mode, a key both admin and client, a model path that does not exist.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from models.artifact import THRESHOLD_FARS

logger = logging.getLogger(__name__)

#: Where a trained model is dropped to become the default (inside the ``models`` package).
BUNDLED_MODEL_PATH = Path(__file__).resolve().parent.parent / "models" / "bundled" / "lrfr.onnx"

KeyList = Annotated[list[str], NoDecode]


def default_database_url(data_dir: Path) -> str:
    """The embedded default database: SQLite in the data folder."""
    return f"sqlite:///{(Path(data_dir) / 'lrfr.sqlite3').resolve()}"


def _split_keys(value: object) -> object:
    if isinstance(value, str):
        return [key.strip() for key in value.split(",") if key.strip()]
    return value


class Settings(BaseSettings):
    """Configuration of the service; every field is the env variable ``LRFR_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix="LRFR_", extra="ignore", frozen=True, env_ignore_empty=True
    )

    model_path: Path | None = Field(
        default=None,
        description="The .onnx artifact (its .json beside it). Default: the bundled model "
        "models/bundled/lrfr.onnx when it exists; otherwise required.",
    )
    data_dir: Path = Field(default=Path("data"), description="Index files and the SQLite db.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///<data_dir>/lrfr.sqlite3."
    )
    admin_keys: KeyList = Field(default_factory=list, description="Keys that may enroll/delete.")
    client_keys: KeyList = Field(default_factory=list, description="Keys that may read/verify.")
    metrics_keys: KeyList = Field(
        default_factory=list, description="Keys that may read /metrics (admin keys may too)."
    )
    metrics_public: bool = Field(
        default=False,
        description="Serve /metrics without a key (only where the port is on a private network).",
    )
    metrics_gallery_labels: bool = Field(
        default=False,
        description="Publish each gallery's size under its name (lrfr_gallery_faces{gallery}); "
        "off: only totals, so /metrics names no gallery.",
    )
    dev_mode: bool = Field(
        default=False, description="Allow running without API keys (every caller is admin)."
    )
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, gt=0, description="Per image file.")
    max_files_per_request: int = Field(default=64, gt=0)
    max_image_pixels: int = Field(default=25_000_000, gt=0, description="Decompression cap.")
    min_enroll_quality: float | Literal["auto", "off"] = Field(
        default="auto",
        description="Refuse enrollment under this Laplacian q. 'auto': the lower edge of "
        "the poorest quality band in which the model, at the target FAR, still accepts at "
        "least half of the genuine pairs against a sharp probe (models with quality bands; "
        "off for the others); 'off': never refuse.",
    )
    fallback_threshold: float = Field(
        default=0.35, ge=-1, le=1, description="Used when the model has no FAR 1e-3 threshold."
    )
    default_face: Literal["auto", "aligned", "box"] = Field(
        default="auto",
        description="How uploads are read when a request has no 'face' field: 'auto' "
        "(detect and align), 'aligned' (template crops), 'box' (detector boxes).",
    )
    target_far: str = Field(
        default="1e-3",
        description="False-accept rate the decisions are made at, one of the model's "
        "calibrated ones (1e-2, 1e-3, 1e-4); a request may ask for another with 'far'.",
    )
    max_top_k: int = Field(default=100, gt=0)
    batch_window_ms: float = Field(default=2.0, ge=0, description="Micro-batch collection window.")
    max_batch_size: int = Field(default=32, gt=0)
    ort_threads: int | None = Field(default=None, gt=0)
    ort_spin: bool = Field(
        default=False,
        description="Let ONNX Runtime's idle threads busy-wait for work (faster only on "
        "cores nothing else needs; off, they leave the CPU to HTTP, decoding and search).",
    )
    malloc_mmap_threshold_mb: int = Field(
        default=4,
        ge=0,
        le=32,
        description="glibc: blocks under this many MB come from reused heap pages, not "
        "fresh mmaps (image-sized arrays of a request skip their page faults; each malloc "
        "arena may keep up to 8x this of freed memory); 0: leave malloc as it is.",
    )
    execution_providers: KeyList = Field(
        default_factory=list, description="ONNX Runtime providers; default CUDA if present, CPU."
    )
    faiss_threads: int | None = Field(
        default=1,
        gt=0,
        description="OpenMP threads of FAISS (unset: all cores). One query scans on one "
        "thread anyway; more threads only spin against ONNX Runtime.",
    )
    index_flush_seconds: float = Field(default=30.0, gt=0, description="Index persist interval.")
    vector_backend: Literal["faiss", "milvus"] = Field(
        default="faiss",
        description="Where gallery vectors are searched: 'faiss' (in this process, index "
        "files under <data_dir>/index) or 'milvus' (LRFR_MILVUS_URI; pip install lrfr[milvus]).",
    )
    ann_min_faces: int = Field(
        default=50_000,
        gt=0,
        description="FAISS: galleries with at least this many faces get an approximate "
        "(IVF) index; smaller ones are scanned exactly.",
    )
    ann_nlist: int = Field(
        default=0, ge=0, description="FAISS IVF lists; 0: about sqrt(faces), a power of two."
    )
    ann_nprobe: int = Field(
        default=0,
        ge=0,
        description="FAISS IVF lists visited per query; 0: calibrated for LRFR_ANN_RECALL "
        "when the index is trained.",
    )
    ann_recall: float = Field(
        default=0.99,
        gt=0,
        le=1,
        description="recall@1 against exact search that the calibrated nprobe reaches.",
    )
    ann_retrain_growth: float = Field(
        default=2.0,
        gt=1,
        description="Retrain an IVF index once its gallery has grown (or shrunk) this many "
        "times from the size it was trained on.",
    )
    milvus_uri: str | None = Field(
        default=None,
        description="Milvus server (http://host:19530) or a milvus-lite file; default "
        "<data_dir>/milvus.db (embedded milvus-lite).",
    )
    milvus_token: SecretStr | None = Field(
        default=None, description="Milvus credentials ('user:password' or an API key)."
    )
    milvus_db: str | None = Field(default=None, description="Milvus database (default: its).")
    milvus_collection_prefix: str = Field(
        default="lrfr",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$",
        description="Prefix of the collection names (one per gallery and model version); "
        "services with different databases sharing one Milvus need different prefixes.",
    )
    milvus_index_type: str = Field(
        default="AUTOINDEX",
        description="Milvus index of the vectors (AUTOINDEX, HNSW, IVF_FLAT, FLAT, ...).",
    )
    milvus_index_params: dict[str, Any] = Field(
        default_factory=dict, description="JSON: build parameters, e.g. {\"M\": 16}."
    )
    milvus_search_params: dict[str, Any] = Field(
        default_factory=dict, description="JSON: search parameters, e.g. {\"ef\": 64}."
    )
    auto_migrate: bool = Field(default=True, description="Run Alembic migrations at startup.")
    store_face_images: bool = Field(
        default=True, description="Keep each enrolled face (PNG) so galleries can be re-embedded."
    )

    @field_validator(
        "admin_keys", "client_keys", "metrics_keys", "execution_providers", mode="before"
    )
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _split_keys(value)

    @field_validator("min_enroll_quality")
    @classmethod
    def _non_negative_floor(cls, value: float | str) -> float | str:
        if isinstance(value, float | int) and value < 0:
            raise ValueError("LRFR_MIN_ENROLL_QUALITY must be >= 0, 'auto' or 'off'")
        return value

    @field_validator("target_far")
    @classmethod
    def _known_far(cls, value: str) -> str:
        for key in THRESHOLD_FARS:
            try:
                if float(value) == float(key):
                    return key
            except ValueError:
                break
        raise ValueError(
            f"LRFR_TARGET_FAR must be one of {', '.join(THRESHOLD_FARS)}, got {value!r}"
        )

    @field_validator("admin_keys", "client_keys", "metrics_keys")
    @classmethod
    def _key_length(cls, keys: list[str]) -> list[str]:
        short = [key for key in keys if len(key) < 16]
        if short:
            raise ValueError("API keys must be at least 16 characters long")
        return keys

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.model_path is None:
            if not BUNDLED_MODEL_PATH.is_file():
                raise ValueError(
                    "LRFR_MODEL_PATH is not set and there is no bundled model at "
                    f"{BUNDLED_MODEL_PATH}; point LRFR_MODEL_PATH at an exported .onnx file"
                )
            object.__setattr__(self, "model_path", BUNDLED_MODEL_PATH)
        if not self.admin_keys and not self.dev_mode:
            raise ValueError(
                "no LRFR_ADMIN_KEYS: the service refuses to start without an admin key "
                "(set LRFR_DEV_MODE=1 to run without keys on a development machine)"
            )
        both = set(self.admin_keys) & set(self.client_keys)
        if both:
            raise ValueError("a key cannot be both an admin and a client key")
        if set(self.metrics_keys) & (set(self.admin_keys) | set(self.client_keys)):
            raise ValueError("a metrics key cannot also be an admin or a client key")
        return self

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite in the data folder."""
        if self.database_url:
            return self.database_url
        return default_database_url(self.data_dir)

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    @property
    def resolved_milvus_uri(self) -> str:
        """The Milvus URI, defaulting to an embedded milvus-lite file in the data folder."""
        return self.milvus_uri or str((self.data_dir / "milvus.db").resolve())

    @property
    def auth_disabled(self) -> bool:
        """Dev mode with no keys at all: every caller is treated as admin."""
        return self.dev_mode and not self.admin_keys and not self.client_keys
