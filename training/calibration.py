"""Threshold calibration of an exported artifact on validation pairs.

The thresholds go into the artifact's metadata (``thresholds`` keyed by FAR), so the
service's default decision threshold is the one measured on the exported graph itself:
the images are embedded through ONNX Runtime (``training.eval.embedding.OnnxModel``,
the service's code path), never through torch.

Impostor scores come, by default, from **all** pairs of images of different people
among the protocol's images (for LFW View 1 about 1.4 million, for View 2 about 30
million), because the published mismatched pairs (500 or 3,000) cannot measure
FAR 1e-3 or 1e-4. ``impostors="pairs"`` restricts them to the published pairs; a FAR
that the impostor count cannot measure gets ``null``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from models.artifact import THRESHOLD_FARS, ModelMetadata, load_metadata, write_metadata
from models.embedder import resize_to_input
from training.eval.datasets import load_lfw
from training.eval.embedding import OnnxModel, embed_batched
from training.eval.metrics import threshold_at_far
from training.eval.protocols import PairProtocol
from training.eval.runner import load_faces
from training.faces import FaceLoader

logger = logging.getLogger(__name__)

#: Above this many impostor pairs, a fixed random sample of them is used.
MAX_IMPOSTORS = 20_000_000


@dataclass
class Calibration:
    """Calibrated thresholds and what they were measured on.

    Attributes:
        thresholds: cosine threshold per FAR key (``"1e-3"``), ``None`` if not measurable.
        tar: true-accept rate of the genuine pairs at each threshold.
        genuine: number of genuine pairs.
        impostors: number of impostor scores.
        source: a description of the pairs.
    """

    thresholds: dict[str, float | None]
    tar: dict[str, float | None] = field(default_factory=dict)
    genuine: int = 0
    impostors: int = 0
    source: str = ""


def impostor_scores(
    embeddings: np.ndarray,
    identities: np.ndarray,
    *,
    limit: int = MAX_IMPOSTORS,
    seed: int = 0,
    chunk: int = 1024,
) -> np.ndarray:
    """Cosine scores of all pairs (i < j) of L2-normalised embeddings of different
    identities; a fixed random sample of ``limit`` when there are more."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    identities = np.asarray(identities)
    n = len(embeddings)
    parts = []
    for begin in range(0, n, chunk):
        block = embeddings[begin : begin + chunk] @ embeddings.T
        rows = np.arange(begin, min(begin + chunk, n))[:, None]
        cols = np.arange(n)[None, :]
        mask = (cols > rows) & (identities[rows] != identities[cols])
        parts.append(block[mask])
    scores = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    if scores.size > limit:
        keep = np.random.default_rng(seed).choice(scores.size, size=limit, replace=False)
        scores = scores[keep]
    return scores.astype(np.float64)


def calibrate_embeddings(
    embeddings: np.ndarray,
    protocol: PairProtocol,
    identities: Sequence[str] | np.ndarray,
    *,
    fars: Sequence[str] = THRESHOLD_FARS,
    impostors: Literal["all", "pairs"] = "all",
) -> Calibration:
    """Thresholds at ``fars`` from the embeddings of ``protocol.images``.

    Args:
        embeddings: (len(protocol.images), D), L2-normalised.
        protocol: the pairs; genuine scores come from its matched pairs.
        identities: the person of every image (for ``impostors="all"``).
        fars: FAR keys, e.g. ``"1e-3"``.
        impostors: ``all`` different-identity image pairs, or the protocol's ``pairs``.
    """
    e = np.asarray(embeddings, dtype=np.float32)
    scores = np.einsum("ij,ij->i", e[protocol.left], e[protocol.right]).astype(np.float64)
    labels = np.asarray(protocol.labels, dtype=bool)
    genuine = scores[labels]
    negative = (
        impostor_scores(e, np.asarray(identities)) if impostors == "all" else scores[~labels]
    )
    thresholds: dict[str, float | None] = {}
    tar: dict[str, float | None] = {}
    for key in fars:
        t = threshold_at_far(negative, float(key))
        # thresholds are cosines; keep them in the metadata's [-1, 1]
        thresholds[key] = None if t is None else float(min(1.0, max(-1.0, t)))
        tar[key] = None if t is None else float(np.mean(genuine >= t))
    return Calibration(
        thresholds=thresholds, tar=tar, genuine=int(genuine.size),
        impostors=int(negative.size), source=f"{protocol.name} ({impostors} impostors)",
    )


def calibrate_artifact(
    onnx_path: str | Path,
    lfw_dir: str | Path,
    *,
    view: int = 2,
    pairs_file: str | None = None,
    impostors: Literal["all", "pairs"] = "all",
    batch_size: int = 128,
    threads: int | None = None,
    progress: bool = True,
) -> tuple[Calibration, ModelMetadata]:
    """Calibrates ``onnx_path`` on LFW pairs and writes the thresholds into its metadata.

    Use ``view=1`` (``pairsDevTest.txt``) for models trained on LFW ``peopleDevTrain``:
    View 2 shares identities with it; or ``pairs_file="pairsDevTrain.txt"`` to keep
    DevTest untouched for evaluation (its images were seen in training, so genuine
    scores there are optimistic).

    Returns:
        The calibration and the updated metadata.
    """
    protocol = load_lfw(lfw_dir, view, pairs_file=pairs_file)
    model = OnnxModel(onnx_path, threads=threads)
    faces = load_faces(protocol.images, FaceLoader("lfw"), progress=progress)
    if tuple(model.input_size) != faces.shape[1:3]:
        # as the service feeds it: the crop resized to the network input (bicubic)
        faces = np.stack([
            resize_to_input(Image.fromarray(face), tuple(model.input_size)) for face in faces
        ])
    embeddings = embed_batched(model, faces, batch_size=batch_size, progress=progress,
                               desc="calibration")
    identities = [Path(p).parent.name for p in protocol.images]
    calibration = calibrate_embeddings(embeddings, protocol, identities, impostors=impostors)
    metadata = load_metadata(onnx_path)
    merged = {**metadata.thresholds, **calibration.thresholds}
    updated = metadata.model_copy(update={
        "thresholds": merged,
        "extra": {
            **metadata.extra,
            "calibration": {
                "source": calibration.source,
                "genuine_pairs": calibration.genuine,
                "impostor_pairs": calibration.impostors,
                "tar_at_threshold": calibration.tar,
            },
        },
    })
    ModelMetadata.model_validate(updated.model_dump())
    write_metadata(onnx_path, updated)
    logger.info("calibrated %s on %s: %s", onnx_path, calibration.source, calibration.thresholds)
    return calibration, load_metadata(onnx_path)
