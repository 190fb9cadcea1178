"""Quality, verification (1:1), identification (1:N) and enrollment of uploaded faces."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image
from starlette.concurrency import run_in_threadpool

from models.artifact import ModelMetadata
from models.comparison import pair_similarity, queries, sharp_rows
from models.decision import Decision, DecisionRule, UnknownFarError
from models.detector import FaceDetector
from models.quality import laplacian_score
from service import crud
from service.batching import BatchingEmbedder
from service.errors import QualityRefusedError, ServiceError
from service.faces import FaceFinder, FaceMode, FoundFace
from service.galleries import GalleryService
from service.images import DecodedImage, decode_image
from service.schemas import (
    DetectedFace,
    DetectResponse,
    EnrollResponse,
    FaceInfo,
    IdentifyFrameResponse,
    IdentifyResponse,
    Match,
    ModelGate,
    ModelInfo,
    Quality,
    QualityBand,
    QualityResponse,
    ReembedResponse,
    RefusedFace,
    ServedModel,
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
class FaceRequest:
    """How to find the face in an upload (the API's ``face`` and ``face_index``)."""

    mode: FaceMode | None = None  # None: LRFR_DEFAULT_FACE
    index: int | None = None
    single: bool = False


@dataclass(frozen=True)
class PreparedFace:
    """An upload's face as the network sees it, how it was found, its quality, and
    (optionally) a lossless copy of that crop for re-embedding."""

    pixels: np.ndarray
    quality: Quality
    found: FoundFace
    image_png: bytes | None

    @property
    def info(self) -> FaceInfo:
        return face_info(self.found)


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
        finder: FaceFinder | None = None,
    ) -> None:
        self._settings = settings
        self.finder = finder or FaceFinder(
            FaceDetector(providers=settings.execution_providers or None,
                         threads=settings.ort_threads),
            input_size=model.input_size,
        )
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

    @property
    def served_model(self) -> ServedModel:
        """The served model with its backbone, head and quality gate (for /readyz)."""
        gate = self.model.gate
        return ServedModel(
            name=self.model.name, version=self.model.version, backbone=self.model.backbone,
            head=self.model.head, embedding_size=self.model.embedding_size,
            comparison=self.model.comparison,
            gate=None if gate is None else ModelGate.model_validate(gate.model_dump()),
        )

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

    def _face_request(self, face: FaceRequest | None) -> FaceRequest:
        """``face`` with its mode resolved (the request's, else LRFR_DEFAULT_FACE)."""
        face = face or FaceRequest()
        mode = face.mode or self._settings.default_face
        if face.index is not None and mode != "auto":
            raise InvalidRequestError(
                f"face_index picks one of the detected faces; it needs face=auto, not {mode}"
            )
        return FaceRequest(mode=mode, index=face.index, single=face.single)

    def _decode(self, upload: Upload) -> DecodedImage:
        return decode_image(
            upload.data, max_pixels=self._settings.max_image_pixels, name=upload.label
        )

    def _prepared(self, found: FoundFace, decoded: DecodedImage, keep_image: bool) -> PreparedFace:
        score = laplacian_score(found.pixels)
        image_png = None
        if keep_image:  # the aligned crop: re-embedding takes it as it is (face=aligned)
            buffer = io.BytesIO()
            Image.fromarray(found.pixels).save(buffer, format="PNG")
            image_png = buffer.getvalue()
        quality = Quality(
            laplacian=score.laplacian,
            laplacian_var=score.laplacian_var,
            width=decoded.width,
            height=decoded.height,
        )
        return PreparedFace(pixels=found.pixels, quality=quality, found=found, image_png=image_png)

    def _prepare_one(self, upload: Upload, keep_image: bool, face: FaceRequest) -> PreparedFace:
        decoded = self._decode(upload)
        assert face.mode is not None  # resolved by the caller (LRFR_DEFAULT_FACE)
        found = self.finder.find(
            decoded.image, face.mode, face_index=face.index, single=face.single,
            name=upload.label,
        )
        return self._prepared(found, decoded, keep_image)

    async def prepare(
        self,
        uploads: Sequence[Upload],
        *,
        keep_image: bool = False,
        face: FaceRequest | None = None,
        embedding: bool = True,
    ) -> list[PreparedFace]:
        """Decodes uploads, finds their faces and scores them, off the event loop.

        With ``embedding`` (the caller embeds the faces next, with no ``await`` in between)
        an open batch of the embedder waits for them meanwhile.
        """
        request = self._face_request(face)
        with self._batcher.incoming() if embedding else contextlib.nullcontext():
            return await run_in_threadpool(
                lambda: [self._prepare_one(upload, keep_image, request) for upload in uploads]
            )

    async def embed(self, faces: Sequence[PreparedFace], *, same_side: bool = False) -> np.ndarray:
        return await self._batcher.embed([face.pixels for face in faces], same_side=same_side)

    def _same_side(self, faces: Sequence[PreparedFace]) -> bool:
        """Whether a pair-space model may embed ``faces`` for comparison with each other
        only, all on one side of its gate (by the q the service measured, the graph's own
        q up to rounding): two sharp faces then run dlib's branch alone."""
        gate = self.model.gate
        if self.model.comparison != "pair-space" or gate is None:
            return False
        return len({face.quality.laplacian >= gate.threshold for face in faces}) == 1

    # -- endpoints ---------------------------------------------------------------------------

    async def quality(self, upload: Upload, *, face: FaceRequest | None = None) -> QualityResponse:
        (prepared,) = await self.prepare([upload], face=face, embedding=False)
        return QualityResponse(quality=prepared.quality, face=prepared.info)

    def _detect_all(self, upload: Upload) -> tuple[DecodedImage, list[PreparedFace]]:
        decoded = self._decode(upload)
        found = self.finder.find_all(decoded.image)
        return decoded, [self._prepared(f, decoded, keep_image=False) for f in found]

    async def detect(self, upload: Upload) -> DetectResponse:
        """Every face of an image with box, landmarks, score and aligned-crop quality."""
        decoded, faces = await run_in_threadpool(lambda: self._detect_all(upload))
        return DetectResponse(
            width=decoded.width, height=decoded.height,
            faces=[DetectedFace(face=f.info, quality=f.quality) for f in faces],
        )

    async def verify(
        self,
        first: Upload,
        second: Upload,
        *,
        threshold: float | None,
        far: str | None = None,
        face: FaceRequest | None = None,
    ) -> VerifyResponse:
        key = self._far(far)
        faces = await self.prepare([first, second], face=face)
        same_side = self._same_side(faces)
        vectors = await self.embed(faces, same_side=same_side)
        if same_side and len(set(sharp_rows(vectors).tolist())) > 1:
            # the graph's own q put the gate between them after all (a face within rounding
            # of the gate): the full form, so that they are compared by the students' z
            vectors = await self.embed(faces)
        # the model's comparison: a cosine, or a gated model's pair's space (models.comparison)
        similarity = float(np.clip(
            pair_similarity(vectors[:1], vectors[1:], self.model.comparison)[0], -1.0, 1.0
        ))
        q1, q2 = (face.quality.laplacian for face in faces)
        decision = self.rule.decide(
            similarity, q1, q2, far=key, threshold=threshold,
            uncalibrated=any(face.found.alignment == "box" for face in faces),
        )
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
            faces=[face.info for face in faces],
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
        face: FaceRequest | None = None,
    ) -> IdentifyResponse:
        self._check_top_k(top_k)
        key = self._far(far)
        (prepared,) = await self.prepare([upload], face=face)
        vector = (await self.embed([prepared]))[0]
        return await self._identify_one(
            prepared, vector, gallery=gallery, top_k=top_k, threshold=threshold, far=key
        )

    def _check_top_k(self, top_k: int) -> None:
        if top_k > self._settings.max_top_k:
            raise InvalidRequestError(f"top_k must be at most {self._settings.max_top_k}")

    async def identify_all(
        self,
        upload: Upload,
        *,
        gallery: str,
        top_k: int,
        threshold: float | None,
        far: str | None = None,
    ) -> IdentifyFrameResponse:
        """One identification per face found in a frame (``faces=all``)."""
        self._check_top_k(top_k)
        key = self._far(far)
        await run_in_threadpool(lambda: self.galleries.require_gallery(name=gallery))
        with self._batcher.incoming():
            decoded, faces = await run_in_threadpool(lambda: self._detect_all(upload))
        vectors: np.ndarray | list[np.ndarray] = await self.embed(faces) if faces else []
        answers = [
            await self._identify_one(
                face, vector, gallery=gallery, top_k=top_k, threshold=threshold, far=key
            )
            for face, vector in zip(faces, vectors, strict=True)
        ]
        return IdentifyFrameResponse(
            width=decoded.width, height=decoded.height, faces=answers, model=self.model_info
        )

    async def _identify_one(
        self,
        face: PreparedFace,
        vector: np.ndarray,
        *,
        gallery: str,
        top_k: int,
        threshold: float | None,
        far: str,
    ) -> IdentifyResponse:
        query = queries(vector[None], self.model.comparison)[0]  # stored . query: the similarity
        candidates = await run_in_threadpool(
            lambda: self.galleries.search(gallery=gallery, vector=query, top_k=top_k)
        )
        probe_q = face.quality.laplacian
        box = face.found.alignment == "box"
        # every candidate by the vectorised rule; the explanation only for the best, which
        # decides (one pair at a time cost ~0.1 ms per candidate)
        decided = self.rule.decide_many(
            np.asarray([c.similarity for c in candidates]),
            np.full(len(candidates), probe_q),
            np.asarray([c.face_quality for c in candidates]),
            far=far, threshold=threshold, uncalibrated=box,
        )
        matches = [
            Match(
                subject=c.subject, similarity=c.similarity, face=c.face,
                face_quality=c.face_quality, threshold=decided.threshold(i),
                decision=decided.kind(i),
            )
            for i, c in enumerate(candidates)
        ]
        # open set: the best candidate decides (FNIR/FPIR are defined on the top score)
        best = None
        if candidates:
            top = candidates[0]
            best = self.rule.decide(
                top.similarity, probe_q, top.face_quality, far=far, threshold=threshold,
                uncalibrated=box,
            )
        outcome: Literal["match", "unknown", "undecidable"] = "unknown"
        if best is not None and best.decision != "no_match":
            outcome = best.decision
        return IdentifyResponse(
            matches=matches,
            decision=outcome,
            threshold=None if best is None else best.threshold,
            far=far if best is None else best.far,
            band=None if best is None else _band_out(best),
            reason=None if best is None else best.reason,
            quality=face.quality,
            face=face.info,
            model=self.model_info,
        )

    async def enroll(
        self,
        uploads: Sequence[Upload],
        *,
        gallery: str,
        subject: str,
        face: FaceRequest | None = None,
    ) -> EnrollResponse:
        """Enrolls the faces of one request together; refuses those under the quality floor.

        With ``face=auto`` an image with two or more faces of similar size is refused
        (422, their boxes listed) unless ``face_index`` picks one, so galleries stay clean.

        Raises:
            QualityRefusedError: every face was under ``min_enroll_quality`` (422).
            SeveralFacesError: an image holds several faces of similar size (422).
        """
        request = self._face_request(face)
        request = FaceRequest(mode=request.mode, index=request.index, single=True)
        if len(uploads) > self._settings.max_files_per_request:
            raise InvalidRequestError(
                f"at most {self._settings.max_files_per_request} images per request"
            )
        await run_in_threadpool(
            lambda: self.galleries.check_enrollable(gallery=gallery, subject=subject)
        )
        faces = await self.prepare(
            uploads, keep_image=self._settings.store_face_images, face=request
        )
        floor = self.enroll_floor
        accepted: list[PreparedFace] = []
        hashes: list[str] = []
        refused: list[RefusedFace] = []
        for position, (upload, prepared) in enumerate(zip(uploads, faces, strict=True)):
            if floor is not None and prepared.quality.laplacian < floor:
                refused.append(
                    RefusedFace(
                        index=position,
                        filename=upload.filename,
                        reason=f"quality {prepared.quality.laplacian:.3f} is under the enrollment "
                        f"floor {floor:.3f} (LRFR_MIN_ENROLL_QUALITY)",
                        quality=prepared.quality,
                        face=prepared.info,
                    )
                )
            else:
                accepted.append(prepared)
                hashes.append(hashlib.sha256(upload.data).hexdigest())
        if not accepted:
            raise QualityRefusedError(
                {
                    "code": "quality_refused",
                    "message": "every image was under the enrollment quality floor",
                    "refused": [item.model_dump() for item in refused],
                }
            )
        vectors = await self.embed(accepted)
        rows = [
            crud.NewFace(
                embedding=vector,
                **prepared.quality.model_dump(),
                image_png=prepared.image_png,
                upload_sha256=digest,
            )
            for prepared, vector, digest in zip(accepted, vectors, hashes, strict=True)
        ]
        stored = await run_in_threadpool(
            lambda: self.galleries.add_faces(gallery=gallery, subject=subject, faces=rows)
        )
        for out, prepared in zip(stored, accepted, strict=True):
            out.face = prepared.info
        return EnrollResponse(subject=subject, faces=stored, refused=refused)

    async def reembed(self, *, gallery: str, chunk: int = 256) -> ReembedResponse:
        """Re-embeds a gallery's stored face images with the served model."""
        stored = await run_in_threadpool(lambda: self.galleries.faces_to_reembed(gallery=gallery))
        ids: list[int] = []
        parts: list[np.ndarray] = []
        for start in range(0, len(stored), chunk):
            block = stored[start : start + chunk]
            uploads = [Upload(data=image, field=f"face {face_id}") for face_id, image in block]
            # stored faces are the aligned crops the network saw
            faces = await self.prepare(uploads, face=FaceRequest(mode="aligned"))
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


def face_info(found: FoundFace) -> FaceInfo:
    """How a face was found, for the answer."""
    return FaceInfo(
        alignment=found.alignment,
        box=tuple(round(float(v), 2) for v in found.box),  # type: ignore[arg-type]
        landmarks=None if found.landmarks is None
        else [[round(float(x), 2), round(float(y), 2)] for x, y in found.landmarks],
        score=found.score,
        index=found.index,
        faces_found=found.faces_found,
    )
