"""Runs a model over a protocol at several resolutions and collects the results.

The distinct images of a protocol are decoded and cropped once (in a few threads) and
kept in memory as 112x112 crops; for every resolution r they are degraded to r and
back (:func:`training.degrade.degrade`, METHODS §5) and embedded in batches. An image
is embedded at most once per resolution, however many pairs or searches use it.

Verification (pairs): at each r both images are degraded ("downsampled"); with
``cross_resolution`` the first image of each pair stays at 112 and the second is
degraded. Identification: the gallery stays at full quality, the probes are degraded.
Identification beside pairs (``evaluate(..., identification=OpenSetProtocol)``, e.g.
``lrfr eval lfw --identification``) follows the pairs' two settings: gallery and probes
at r, and with ``cross_resolution`` the gallery at 112 and the probes at r; its images
join the pairs' images, so an image both use is decoded and embedded once per side.
Resolution ``None`` ("native") and any r >= 112 leave the images untouched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from models.alignment import align_face
from models.decision import DecisionRule
from models.quality import laplacian_score
from training.degrade import CameraEffects, Interpolation, degrade, resampling
from training.eval.decisions import realised_rates
from training.eval.embedding import (
    EmbeddingModel,
    FlipAveraged,
    artifact_metadata,
    embed_batched,
    query_side,
)
from training.eval.metrics import RocCurve
from training.eval.protocols import (
    IdentificationProtocol,
    OpenSetProtocol,
    PairProtocol,
    score_identification,
    score_open_set,
    score_pairs,
)
from training.faces import INPUT_SIZE, FaceLoader, FaceNotFoundError

logger = logging.getLogger(__name__)

Protocol = PairProtocol | IdentificationProtocol
#: The service's default fallback threshold, for uncalibrated artifacts (service settings).
DEFAULT_FALLBACK_THRESHOLD = 0.35


def resolution_key(resolution: int | None) -> str:
    """The results key of a resolution: ``"112"``, ``"7"`` ... or ``"native"``."""
    return "native" if resolution is None else str(resolution)


def parse_resolutions(text: str) -> tuple[int | None, ...]:
    """``"112,56,28"`` -> ``(112, 56, 28)``; ``"native"`` -> ``(None,)``."""
    values: list[int | None] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part.lower() == "native":
            values.append(None)
            continue
        try:
            value = int(part)
        except ValueError:
            raise ValueError(f"resolution {part!r} is neither an integer nor 'native'") from None
        if value < 1:
            raise ValueError(f"resolution must be positive, got {value}")
        values.append(value)
    if not values:
        raise ValueError("no resolutions given")
    return tuple(dict.fromkeys(values))


@dataclass(frozen=True)
class EvalSettings:
    """How images are degraded and embedded.

    Attributes:
        resolutions: sides r to evaluate at (``None`` = native, untouched).
        cross_resolution: for pairs, also score one image at 112 vs the other at r.
        down, up: interpolation kernels of the degradation (METHODS §5).
        batch_size: images per forward pass.
        workers: threads decoding images.
        progress: show progress bars.
        decisions: for pairs with known identities and a model artifact, also report the
            FAR and TAR that the service's decision rule realises (all impostor pairs).
        flip: test-time flip averaging: each face's embedding is the normalised sum of
            its own and its mirror image's (twice the network time).
        camera: camera effects on every degraded face (``None``: the resize alone),
            drawn from a generator seeded by the image and the side, so a run repeats.
    """

    resolutions: tuple[int | None, ...] = (112, 56, 28, 14, 7)
    cross_resolution: bool = False
    down: Interpolation = "bicubic"
    up: Interpolation = "bicubic"
    batch_size: int = 128
    workers: int = 2
    progress: bool = True
    decisions: bool = True
    flip: bool = False
    camera: CameraEffects | None = None


@dataclass
class LoadedFaces:
    """The faces of a protocol's images, decoded once.

    Attributes:
        crops: uint8 (N, 112, 112, 3) template crops (zeros where detection failed).
        failed: (N,) True where the detector found no face (``detect``/``box`` modes).
        boxes: for ``box`` mode, each image's detector box at its own resolution.
    """

    crops: np.ndarray
    failed: np.ndarray
    boxes: list[np.ndarray] | None = None


def load_face_set(
    paths: Sequence[Path], loader: FaceLoader, *, workers: int = 2, progress: bool = True
) -> LoadedFaces:
    """Decodes and crops every image once; detection failures are recorded, not raised."""
    crops = np.zeros((len(paths), INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
    failed = np.zeros(len(paths), dtype=bool)
    boxes: list[np.ndarray] | None = [] if loader.mode == "box" else None
    grey = np.full((1, 1, 3), 128, dtype=np.uint8)

    def one(path: Path) -> tuple[np.ndarray | None, np.ndarray | None]:
        try:
            if boxes is not None:
                box = loader.load_box(path)
                return align_face(box), box
            return loader.load(path), None
        except FaceNotFoundError:
            return None, None

    with (
        ThreadPoolExecutor(max_workers=max(1, workers)) as pool,
        tqdm(total=len(paths), desc="loading faces", unit="img", disable=not progress,
             leave=False) as bar,
    ):
        for i, (crop, box) in enumerate(pool.map(one, paths)):
            if crop is None:
                failed[i] = True
            else:
                crops[i] = crop
            if boxes is not None:
                boxes.append(grey if box is None else box)
            bar.update(1)
    if failed.any():
        logger.warning("no face found in %d of %d images", int(failed.sum()), len(paths))
    return LoadedFaces(crops=crops, failed=failed, boxes=boxes)


def load_faces(
    paths: Sequence[Path], loader: FaceLoader, *, workers: int = 2, progress: bool = True
) -> np.ndarray:
    """Decodes and crops every image once: uint8 (N, 112, 112, 3).

    Raises:
        FaceNotFoundError: a ``detect``/``box`` loader found no face in an image.
    """
    loaded = load_face_set(paths, loader, workers=workers, progress=progress)
    if loaded.failed.any():
        first = paths[int(np.argmax(loaded.failed))]
        raise FaceNotFoundError(f"no face found in {int(loaded.failed.sum())} images, e.g. {first}")
    return loaded.crops


class EmbeddingStore:
    """Embeddings of the cached faces per resolution, computed on first request."""

    def __init__(
        self,
        model: EmbeddingModel,
        faces: np.ndarray,
        settings: EvalSettings,
        *,
        boxes: list[np.ndarray] | None = None,
        failed: np.ndarray | None = None,
    ) -> None:
        if tuple(model.input_size) != (INPUT_SIZE, INPUT_SIZE):
            raise ValueError(
                f"the model takes {model.input_size} inputs; evaluation feeds "
                f"{INPUT_SIZE}x{INPUT_SIZE} crops"
            )
        # flip averaging wraps the model: each batch is degraded (and scored) once
        self.model = FlipAveraged(model) if settings.flip else model
        self.faces = faces
        self.boxes = boxes
        self.failed = np.zeros(len(faces), bool) if failed is None else np.asarray(failed, bool)
        self.settings = settings
        self._embeddings: dict[int | None, np.ndarray] = {}
        self._done: dict[int | None, np.ndarray] = {}
        self._quality: dict[int | None, np.ndarray] = {}
        self.embedded = 0  # images run through the model, for tests and logs

    def effective(self, resolution: int | None) -> int | None:
        """``None`` when ``resolution`` leaves the crops untouched."""
        return None if resolution is None or resolution >= INPUT_SIZE else resolution

    def pixels(self, resolution: int | None, indices: np.ndarray) -> np.ndarray:
        """The crops at ``indices`` as the network sees them at ``resolution``."""
        side = self.effective(resolution)
        if self.boxes is not None:
            return np.stack([self._box_pixels(self.boxes[i], side, int(i)) for i in indices])
        crops = self.faces[indices]
        if side is None:
            return crops
        s = self.settings
        return np.stack([
            degrade(c, side, down=s.down, up=s.up, camera=s.camera,
                    rng=self._camera_rng(int(i), side) if s.camera else None)
            for i, c in zip(indices, crops, strict=True)
        ])

    @staticmethod
    def _camera_rng(index: int, side: int) -> np.random.Generator:
        """The camera effects' generator of face ``index`` at ``side``: seeded by both, so
        a run repeats and two models see the same pixels."""
        return np.random.default_rng((index, side))

    def _box_pixels(self, box: np.ndarray, side: int | None, index: int) -> np.ndarray:
        """A detector's box crop as sent by a camera whose face is ``side`` px wide (with
        the camera effects, when set, on that small image), mapped onto the template the
        way the service maps ``face=box`` uploads."""
        height, width = box.shape[:2]
        if side is not None and side < width:
            size = (side, max(1, round(height * side / width)))
            small = Image.fromarray(box).resize(size, resampling(self.settings.down))
            if self.settings.camera is not None:
                small = self.settings.camera(small, self._camera_rng(index, side))
            box = np.asarray(small)
        return align_face(box)

    def get(self, resolution: int | None, indices: np.ndarray) -> np.ndarray:
        """Embeddings (len(indices), D) of the faces at ``indices`` degraded to ``resolution``."""
        side = self.effective(resolution)
        indices = np.asarray(indices, dtype=np.int64)
        done = self._done.setdefault(side, np.zeros(len(self.faces), dtype=bool))
        missing = np.unique(indices[~done[indices]])
        if missing.size:
            embeddings = embed_batched(
                self.model, _LazyPixels(self, side, missing),
                batch_size=self.settings.batch_size, progress=self.settings.progress,
                desc=f"embedding at {side or INPUT_SIZE} px",
            )
            if side not in self._embeddings:
                self._embeddings[side] = np.zeros(
                    (len(self.faces), embeddings.shape[1]), dtype=np.float32
                )
            # no face found: a zero vector, similar to nothing (never a match)
            embeddings[self.failed[missing]] = 0.0
            self._embeddings[side][missing] = embeddings
            done[missing] = True
            self.embedded += int(missing.size)
        return self._embeddings[side][indices]

    def query(self, resolution: int | None, indices: np.ndarray) -> np.ndarray:
        """What the embeddings of :meth:`get` are compared with (``models.comparison``):
        the same vectors for a cosine model, the query vectors of a pair-space one."""
        return query_side(self.model, self.get(resolution, indices))


    def _qualities(self, side: int | None) -> np.ndarray:
        """q per face at ``side``, NaN until the face's pixels were produced."""
        return self._quality.setdefault(side, np.full(len(self.faces), np.nan))

    def quality(self, resolution: int | None, indices: np.ndarray | None = None) -> np.ndarray:
        """Laplacian q (METHODS §3) of the faces at ``indices`` (default: all) as the
        network sees them at ``resolution``; measured while the faces are embedded, the
        rest (not embedded yet) now."""
        side = self.effective(resolution)
        known = self._qualities(side)
        wanted = np.arange(len(known)) if indices is None else np.asarray(indices, np.int64)
        for i in wanted[np.isnan(known[wanted])]:
            known[i] = laplacian_score(self.pixels(side, np.array([i]))[0]).laplacian
        return known[wanted]


class _LazyPixels:
    """Degrades one batch at a time, so memory holds one batch of degraded pixels."""

    def __init__(self, store: EmbeddingStore, side: int | None, indices: np.ndarray) -> None:
        self.store, self.side, self.indices = store, side, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: slice) -> np.ndarray:
        indices = self.indices[item]
        pixels = self.store.pixels(self.side, indices)
        # the decision rule needs q of exactly these pixels: score them while they exist
        self.store._qualities(self.side)[indices] = [laplacian_score(p).laplacian for p in pixels]
        return pixels


def _decision_rule(model: EmbeddingModel) -> DecisionRule | None:
    """The service's rule for an ONNX artifact (its calibration); None for other models and
    for one branch of a gated artifact (its calibration is the whole model's)."""
    metadata = artifact_metadata(model)
    if metadata is None or getattr(model, "branch", None):
        return None
    return DecisionRule(metadata, fallback_threshold=DEFAULT_FALLBACK_THRESHOLD)


def _add_decisions(
    sections: dict[str, dict[str, Any]],
    rule: DecisionRule,
    store: EmbeddingStore,
    protocol: PairProtocol,
    resolution: int | None,
    settings: EvalSettings,
) -> None:
    """Realised FAR/TAR of the service's decisions at ``resolution`` (both degraded and,
    when asked, cross-resolution), stored beside the accuracy of that resolution."""
    key = resolution_key(resolution)
    every = np.arange(len(protocol.images))
    identities = np.asarray(protocol.identities)
    genuine = protocol.labels.astype(bool)
    degraded, degraded_queries = store.get(resolution, every), store.query(resolution, every)
    common = dict(
        fars=rule.fars, identities=identities, uncalibrated=store.boxes is not None,
        genuine_left=protocol.left[genuine], genuine_right=protocol.right[genuine],
    )
    quality = store.quality(resolution, every)
    sections["resolutions"][key]["decisions"] = realised_rates(
        rule, embeddings_a=degraded, quality_a=quality,
        embeddings_b=degraded_queries, quality_b=quality, same_side=True, **common,
    )
    if settings.cross_resolution and store.effective(resolution) is not None:
        sections["cross_resolution"][key]["decisions"] = realised_rates(
            rule, embeddings_a=store.get(None, every), quality_a=store.quality(None, every),
            embeddings_b=degraded_queries, quality_b=quality, same_side=False,
            **common,
        )


def join_images(
    protocol: Protocol, identification: OpenSetProtocol
) -> tuple[list[Path], OpenSetProtocol]:
    """The protocol's images followed by the identification's other images, and the
    identification re-indexed into that list (the protocol's indices stay valid)."""
    images = list(protocol.images)
    lookup = {path: i for i, path in enumerate(images)}
    for path in identification.images:
        if path not in lookup:
            lookup[path] = len(images)
            images.append(path)
    return images, identification.reindexed(images, lookup)


def _score_identification_beside(
    ident: OpenSetProtocol,
    store: EmbeddingStore,
    resolution: int | None,
    settings: EvalSettings,
    section: dict[str, Any],
) -> None:
    """Identification at ``resolution``: gallery and probes degraded ("resolutions"),
    and with ``cross_resolution`` the gallery at 112 ("cross_resolution")."""
    key = resolution_key(resolution)
    probes = store.query(resolution, ident.probes)
    nonmated = store.query(resolution, ident.nonmated)
    section["resolutions"][key] = score_open_set(
        ident, store.get(resolution, ident.gallery), probes, nonmated, failed=store.failed
    )
    if settings.cross_resolution and store.effective(resolution) is not None:
        section.setdefault("cross_resolution", {})[key] = score_open_set(
            ident, store.get(None, ident.gallery), probes, nonmated, failed=store.failed
        )


@dataclass
class EvaluationRun:
    """The results of one evaluation and the curves for its plots.

    Attributes:
        results: the JSON-ready results (see ``docs/evaluation.md``).
        curves: ``{"downsampled" | "cross_resolution": {resolution key: RocCurve}}``;
            for identification the open-set curve (FPIR vs 1 - FNIR).
    """

    results: dict[str, Any]
    curves: dict[str, dict[str, RocCurve]] = field(default_factory=dict)


def evaluate(
    model: EmbeddingModel,
    protocol: Protocol,
    loader: FaceLoader,
    settings: EvalSettings | None = None,
    *,
    dataset: str | Path | None = None,
    limit: int | None = None,
    identification: OpenSetProtocol | None = None,
) -> EvaluationRun:
    """Scores ``model`` on ``protocol`` (optionally a fixed subset) at every resolution.

    Args:
        identification: an identification protocol scored beside ``protocol`` on the
            same embeddings (``lrfr eval lfw --identification``), into
            ``results["identification"]``; ``limit`` cuts it to its first ``limit``
            gallery people and ``limit`` people never enrolled.
    """
    settings = settings or EvalSettings()
    protocol = protocol.subset(limit)
    images = protocol.images
    ident = None
    if identification is not None:
        images, ident = join_images(protocol, identification.subset(limit))
    started = time.perf_counter()
    logger.info("%s: decoding %d images", protocol.name, len(images))
    faces = load_face_set(images, loader, workers=settings.workers, progress=settings.progress)
    loaded = time.perf_counter()
    store = EmbeddingStore(model, faces.crops, settings, boxes=faces.boxes, failed=faces.failed)
    failed_pairs = (
        faces.failed[protocol.left] | faces.failed[protocol.right]
        if isinstance(protocol, PairProtocol) else None
    )
    rule = _decision_rule(model) if settings.decisions else None
    sections: dict[str, dict[str, Any]] = {"resolutions": {}}
    curves: dict[str, dict[str, RocCurve]] = {"downsampled": {}}
    ident_section: dict[str, Any] = {"resolutions": {}}
    resolutions = tqdm(settings.resolutions, desc="resolutions", disable=not settings.progress)
    for resolution in resolutions:
        key = resolution_key(resolution)
        curve: RocCurve | None
        if isinstance(protocol, PairProtocol):
            left = store.get(resolution, protocol.left)
            summary, curve = score_pairs(
                protocol, left, store.query(resolution, protocol.right), failed=failed_pairs
            )
        else:
            summary, curve = score_identification(
                protocol, store.get(None, protocol.gallery),
                store.query(resolution, protocol.probes),
            )
        sections["resolutions"][key] = summary
        if curve is not None:
            curves["downsampled"][key] = curve
        if (
            settings.cross_resolution
            and isinstance(protocol, PairProtocol)
            and store.effective(resolution) is not None
        ):
            summary, curve = score_pairs(
                protocol, store.get(None, protocol.left), store.query(resolution, protocol.right),
                failed=failed_pairs,
            )
            sections.setdefault("cross_resolution", {})[key] = summary
            curves.setdefault("cross_resolution", {})[key] = curve
        if rule is not None and isinstance(protocol, PairProtocol) and protocol.identities:
            _add_decisions(sections, rule, store, protocol, resolution, settings)
        if ident is not None:
            _score_identification_beside(ident, store, resolution, settings, ident_section)
    finished = time.perf_counter()
    kind = "verification" if isinstance(protocol, PairProtocol) else "identification"
    results: dict[str, Any] = {
        "model": model.describe(),
        "protocol": protocol.name,
        "kind": kind,
        "dataset": None if dataset is None else str(dataset),
        **sections,
        "images": len(protocol.images),
        "detection_failures": int(faces.failed[: len(protocol.images)].sum()),
        "limit": limit,
        "settings": {
            **{k: v for k, v in asdict(settings).items() if k not in ("progress", "workers")},
            "resolutions": [resolution_key(r) for r in settings.resolutions],
            "face_mode": loader.mode,
            "camera": settings.camera.model_dump() if settings.camera else None,
        },
        "timing_s": {
            "load": round(loaded - started, 3),
            "embed_and_score": round(finished - loaded, 3),
            "total": round(finished - started, 3),
        },
        "images_embedded": store.embedded,
        "created_at": datetime.now(timezone.utc).isoformat(),
    }
    if isinstance(protocol, PairProtocol):
        results["pairs"] = protocol.pairs
    else:
        results["probes"] = len(protocol.probes)
        results["gallery"] = len(protocol.gallery)
    if ident is not None:
        ident_images = np.unique(np.concatenate([ident.gallery, ident.probes, ident.nonmated]))
        results["identification"] = {
            "protocol": ident.name,
            "images": int(ident_images.size),
            **ident.counts(),
            "detection_failures": int(faces.failed[ident_images].sum()),
            "ranks": list(ident.ranks),
            "fpirs": [str(f) for f in ident.fpirs],
            **ident_section,
        }
    return EvaluationRun(results=results, curves=curves)
