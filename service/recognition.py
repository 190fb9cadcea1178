"""Quality, verification (1:1), identification (1:N) and enrollment of uploaded faces."""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from starlette.concurrency import run_in_threadpool

from models.artifact import ModelMetadata
from models.decision import Decision, DecisionRule, UnknownFarError
from models.embedder import resize_to_input
from models.quality import laplacian_score
from service import crud
from service.batching import BatchingEmbedder
from service.errors import QualityRefusedError, ServiceError
from service.galleries import GalleryService
from service.images import decode_image
from service.schemas import (
    EnrollResponse,
    IdentifyResponse,
    Match,
    ModelInfo,
    Quality,
    QualityBand,
    QualityResponse,
    ReembedResponse,
    RefusedFace,
    VerifyResponse,
)
from service.settings import Settings

logger = logging.getLogger(__name__)


class InvalidRequestError(ServiceError):
    status_code = 422


@dataclass(frozen=True)
class Upload:
    """The bytes of one uploaded file and how to name it in messages."""

    data: bytes
    field: str
    filename: str | None = None

    @property
    def label(self) -> str:
        return f"{self.field} ({self.filename})" if self.filename else self.field


@dataclass(frozen=True)
class PreparedFace:
    """An upload as the network sees it, its quality, and (optionally) a lossless copy."""

    pixels: np.ndarray
    quality: Quality
    image_png: bytes | None


class RecognitionService:
    """Turns uploads into embeddings and answers quality, verify, identify and enroll.

    Args:
        settings: service settings (limits, thresholds, quality floor).
        model: metadata of the served model.
        batcher: the micro-batching embedder.
        galleries: the gallery store used by identify and enroll.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        model: ModelMetadata,
        batcher: BatchingEmbedder,
        galleries: GalleryService,
    ) -> None:
        self._settings = settings
        self.model = model
        self._batcher = batcher
        self.galleries = galleries
        self.rule = DecisionRule(model, fallback_threshold=settings.fallback_threshold)
        self.target_far = self.rule.check_far(settings.target_far)
        floor = settings.min_enroll_quality
        self.enroll_floor: float | None = (
            self.rule.enrollment_floor(self.target_far) if floor == "auto"
            else None if floor == "off" else float(floor)
        )

    @property
    def model_info(self) -> ModelInfo:
        return ModelInfo(name=self.model.name, version=self.model.version)

    def _far(self, far: str | None) -> str:
        """The FAR key of a request: its own (one the model is calibrated at) or the
        service's target."""
        if far is None:
            return self.target_far
        try:
            return self.rule.check_far(far)
        except UnknownFarError as exc:
            raise InvalidRequestError(str(exc)) from exc

    # -- images ------------------------------------------------------------------------------

    def _prepare_one(self, upload: Upload, keep_image: bool) -> PreparedFace:
        decoded = decode_image(
            upload.data, max_pixels=self._settings.max_image_pixels, name=upload.label
        )
        pixels = resize_to_input(decoded.image, self.model.input_size)
        score = laplacian_score(pixels)
        image_png = None
        if keep_image:
            buffer = io.BytesIO()
            decoded.image.save(buffer, format="PNG")
            image_png = buffer.getvalue()
        quality = Quality(
            laplacian=score.laplacian,
            laplacian_var=score.laplacian_var,
            width=decoded.width,
            height=decoded.height,
        )
        return PreparedFace(pixels=pixels, quality=quality, image_png=image_png)

    async def prepare(
        self, uploads: Sequence[Upload], *, keep_image: bool = False
    ) -> list[PreparedFace]:
        """Decodes, resizes and scores uploads off the event loop."""
        return await run_in_threadpool(
            lambda: [self._prepare_one(upload, keep_image) for upload in uploads]
        )

    async def embed(self, faces: Sequence[PreparedFace]) -> np.ndarray:
        return await self._batcher.embed([face.pixels for face in faces])

    # -- endpoints ---------------------------------------------------------------------------

    async def quality(self, upload: Upload) -> QualityResponse:
        (face,) = await self.prepare([upload])
        return QualityResponse(quality=face.quality)

    async def verify(
        self, first: Upload, second: Upload, *, threshold: float | None, far: str | None = None
    ) -> VerifyResponse:
        key = self._far(far)
        faces = await self.prepare([first, second])
        vectors = await self.embed(faces)
        similarity = float(np.clip(vectors[0] @ vectors[1], -1.0, 1.0))
        q1, q2 = (face.quality.laplacian for face in faces)
        decision = self.rule.decide(similarity, q1, q2, far=key, threshold=threshold)
        return VerifyResponse(
            similarity=similarity,
            decision=decision.decision,
            match=decision.match,
            threshold=decision.threshold,
            far=decision.far,
            band=_band_out(decision),
            tar=decision.tar,
            reason=decision.reason,
            quality=[face.quality for face in faces],
            model=self.model_info,
        )

    async def identify(
        self,
        upload: Upload,
        *,
        gallery: str,
        top_k: int,
        threshold: float | None,
        far: str | None = None,
    ) -> IdentifyResponse:
        if top_k > self._settings.max_top_k:
            raise InvalidRequestError(f"top_k must be at most {self._settings.max_top_k}")
        key = self._far(far)
        (face,) = await self.prepare([upload])
        vector = (await self.embed([face]))[0]
        candidates = await run_in_threadpool(
            lambda: self.galleries.search(gallery=gallery, vector=vector, top_k=top_k)
        )
        probe_q = face.quality.laplacian
        decided = [
            self.rule.decide(c.similarity, probe_q, c.face_quality, far=key, threshold=threshold)
            for c in candidates
        ]
        matches = [
            Match(
                subject=c.subject, similarity=c.similarity, face=c.face,
                face_quality=c.face_quality, threshold=d.threshold, decision=d.decision,
            )
            for c, d in zip(candidates, decided, strict=True)
        ]
        # open set: the best candidate decides (FNIR/FPIR are defined on the top score)
        best = decided[0] if decided else None
        outcome = "unknown"
        if best is not None and best.decision != "no_match":
            outcome = best.decision
        return IdentifyResponse(
            matches=matches,
            decision=outcome,
            threshold=None if best is None else best.threshold,
            far=key if best is None else best.far,
            band=None if best is None else _band_out(best),
            reason=None if best is None else best.reason,
            quality=face.quality,
            model=self.model_info,
        )

    async def enroll(
        self, uploads: Sequence[Upload], *, gallery: str, subject: str
    ) -> EnrollResponse:
        """Enrolls the faces of one request together; refuses those under the quality floor.

        Raises:
            QualityRefusedError: every face was under ``min_enroll_quality`` (422).
        """
        if len(uploads) > self._settings.max_files_per_request:
            raise InvalidRequestError(
                f"at most {self._settings.max_files_per_request} images per request"
            )
        await run_in_threadpool(
            lambda: self.galleries.check_enrollable(gallery=gallery, subject=subject)
        )
        faces = await self.prepare(uploads, keep_image=self._settings.store_face_images)
        floor = self.enroll_floor
        accepted: list[PreparedFace] = []
        refused: list[RefusedFace] = []
        for position, (upload, face) in enumerate(zip(uploads, faces, strict=True)):
            if floor is not None and face.quality.laplacian < floor:
                refused.append(
                    RefusedFace(
                        index=position,
                        filename=upload.filename,
                        reason=f"quality {face.quality.laplacian:.3f} is under the enrollment "
                        f"floor {floor:.3f} (LRFR_MIN_ENROLL_QUALITY)",
                        quality=face.quality,
                    )
                )
            else:
                accepted.append(face)
        if not accepted:
            raise QualityRefusedError(
                {
                    "message": "every image was under the enrollment quality floor",
                    "refused": [item.model_dump() for item in refused],
                }
            )
        vectors = await self.embed(accepted)
        rows = [
            crud.NewFace(
                embedding=vector,
                laplacian=face.quality.laplacian,
                laplacian_var=face.quality.laplacian_var,
                width=face.quality.width,
                height=face.quality.height,
                image_png=face.image_png,
            )
            for face, vector in zip(accepted, vectors, strict=True)
        ]
        stored = await run_in_threadpool(
            lambda: self.galleries.add_faces(gallery=gallery, subject=subject, faces=rows)
        )
        return EnrollResponse(subject=subject, faces=stored, refused=refused)

    async def reembed(self, *, gallery: str, chunk: int = 256) -> ReembedResponse:
        """Re-embeds a gallery's stored face images with the served model."""
        stored = await run_in_threadpool(lambda: self.galleries.faces_to_reembed(gallery=gallery))
        ids: list[int] = []
        parts: list[np.ndarray] = []
        for start in range(0, len(stored), chunk):
            block = stored[start : start + chunk]
            uploads = [Upload(data=image, field=f"face {face_id}") for face_id, image in block]
            faces = await self.prepare(uploads)
            parts.append(await self.embed(faces))
            ids.extend(face_id for face_id, _ in block)
        vectors = (
            np.concatenate(parts)
            if parts
            else np.zeros((0, self.model.embedding_size), dtype=np.float32)
        )
        out = await run_in_threadpool(
            lambda: self.galleries.replace_embeddings(
                gallery=gallery, face_ids=ids, vectors=vectors
            )
        )
        logger.info("re-embedded %d faces of gallery '%s'", len(ids), gallery)
        return ReembedResponse(gallery=gallery, faces=out.faces, model=out.model)


def _band_out(decision: Decision) -> QualityBand | None:
    band = decision.band
    if band is None:
        return None
    return QualityBand(
        low=band.low, high=band.high, low_range=band.low_range, high_range=band.high_range,
        label=band.label,
    )
