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

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from models.artifact import (
    THRESHOLD_FARS,
    ModelMetadata,
    QualityCalibration,
    QualityCell,
    load_metadata,
    write_metadata,
)
from models.embedder import resize_to_input
from models.quality import laplacian_score
from training.degrade import degrade
from training.eval.datasets import IMAGE_SUFFIXES, lfw_image_folder, load_lfw, parse_people_file
from training.eval.embedding import OnnxModel, comparison_of, embed_batched, query_side
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
    queries: np.ndarray | None = None,
) -> np.ndarray:
    """Similarities of all pairs (i < j) of embeddings of different identities; a fixed
    random sample of ``limit`` when there are more. ``queries``: what the embeddings are
    compared with (``models.comparison``; default the embeddings themselves)."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    others = embeddings if queries is None else np.asarray(queries, dtype=np.float32)
    identities = np.asarray(identities)
    n = len(embeddings)
    parts = []
    for begin in range(0, n, chunk):
        block = embeddings[begin : begin + chunk] @ others.T
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
    queries: np.ndarray | None = None,
) -> Calibration:
    """Thresholds at ``fars`` from the embeddings of ``protocol.images``.

    Args:
        embeddings: (len(protocol.images), D), L2-normalised.
        queries: what the embeddings are compared with (``models.comparison``: the query
            vectors of a pair-space model); default the embeddings themselves.
        protocol: the pairs; genuine scores come from its matched pairs.
        identities: the person of every image (for ``impostors="all"``).
        fars: FAR keys, e.g. ``"1e-3"``.
        impostors: ``all`` different-identity image pairs, or the protocol's ``pairs``.
    """
    e = np.asarray(embeddings, dtype=np.float32)
    q = e if queries is None else np.asarray(queries, dtype=np.float32)
    scores = np.einsum("ij,ij->i", e[protocol.left], q[protocol.right]).astype(np.float64)
    labels = np.asarray(protocol.labels, dtype=bool)
    genuine = scores[labels]
    negative = (
        impostor_scores(e, np.asarray(identities), queries=q) if impostors == "all"
        else scores[~labels]
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
            resize_to_input(Image.fromarray(face), model.input_size) for face in faces
        ])
    embeddings = embed_batched(model, faces, batch_size=batch_size, progress=progress,
                               desc="calibration")
    identities = [Path(p).parent.name for p in protocol.images]
    calibration = calibrate_embeddings(embeddings, protocol, identities, impostors=impostors,
                                       queries=query_side(model, embeddings))
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


# --------------------------------------------------------------- thresholds per quality band

#: Sides (px) the calibration faces are degraded to: every resolution the service meets.
CALIBRATION_SIDES: tuple[int, ...] = (7, 8, 10, 12, 14, 17, 20, 24, 28, 34, 40, 56, 112)
#: Sides whose median q separates the quality bands (edges at their geometric midpoints):
#: every calibration side. Coarser bands (7, 10, 14, 20, 28, 40, 56, 112) mixed 7 and 8 px
#: faces in one band, whose threshold then let 7 px impostors through at 1.9x the target
#: FAR even on the calibration pairs themselves (pairsDevTrain, FAR 1e-3 -> 1.9e-3).
BAND_SIDES: tuple[int, ...] = CALIBRATION_SIDES
#: Cosine histogram resolution of the per-cell score counts.
HISTOGRAM_BINS = 20_000
#: A FAR is measured in a cell only with at least this many allowed false accepts
#: (impostors x FAR); fewer make the threshold a coin toss of a few pairs.
MIN_FALSE_ACCEPTS = 10
#: Default floor under which a cell's TAR at the target FAR makes its pairs undecidable.
DEFAULT_TAR_FLOOR = 0.05


@dataclass
class DegradedSet:
    """Faces embedded at several sides: what the quality calibration measures.

    Attributes:
        embeddings: (S, N, D) L2-normalised, one block per side.
        quality: (S, N) Laplacian q of each degraded face as the network sees it.
        identities: (N,) person of each face; ``None`` when every face is a different
            person with no label (impostor pairs only).
        name: what the faces are, for the calibration's ``source``.
        queries: (S, N, D) what the embeddings are compared with (``models.comparison``:
            a pair-space model's query vectors); ``None``: the embeddings themselves.
    """

    embeddings: np.ndarray
    quality: np.ndarray
    identities: np.ndarray | None
    name: str
    queries: np.ndarray | None = None

    @property
    def compared_with(self) -> np.ndarray:
        """(S, N, D): the query vectors, or the embeddings for a cosine model."""
        return self.embeddings if self.queries is None else self.queries


def embed_degraded(
    model: OnnxModel,
    faces: np.ndarray,
    *,
    sides: Sequence[int] = CALIBRATION_SIDES,
    identities: Sequence[str] | None,
    name: str,
    batch_size: int = 128,
    progress: bool = True,
) -> DegradedSet:
    """Degrades 112 crops to every side (METHODS §5), scores and embeds them."""
    size = model.input_size
    blocks, qualities = [], []
    for side in sides:
        pixels = np.stack([degrade(face, side) for face in faces])
        if size != pixels.shape[1:3]:
            pixels = np.stack([resize_to_input(Image.fromarray(p), size) for p in pixels])
        qualities.append([laplacian_score(p).laplacian for p in pixels])
        blocks.append(embed_batched(model, pixels, batch_size=batch_size, progress=progress,
                                    desc=f"{name} at {side} px"))
    embeddings = np.stack(blocks)
    return DegradedSet(
        embeddings=embeddings,
        quality=np.asarray(qualities, dtype=np.float64),
        identities=None if identities is None else np.asarray(identities),
        name=name,
        queries=None if comparison_of(model) == "cosine" else np.stack(
            [query_side(model, block) for block in embeddings]
        ),
    )


def band_edges(quality: np.ndarray, sides: Sequence[int], band_sides: Sequence[int] = BAND_SIDES,
               *, gate: float | None = None) -> tuple[float, ...]:
    """Band edges on q: geometric midpoints of the median q at consecutive ``band_sides``.

    Args:
        quality: (S, N) q of faces degraded to ``sides``.
        sides: the side of each row of ``quality``.
        band_sides: sides whose median q anchors a band.
        gate: a quality gate of the model (its branch switches there); it becomes an
            edge itself, replacing the nearest one, so no band straddles two branches.
    """
    row = {side: i for i, side in enumerate(sides)}
    missing = [s for s in band_sides if s not in row]
    if missing:
        raise ValueError(f"band sides {missing} were not measured (sides: {list(sides)})")
    medians = sorted(float(np.median(quality[row[s]])) for s in band_sides)
    edges = [float(np.sqrt(a * b)) for a, b in itertools.pairwise(medians)]
    if gate is not None:
        nearest = int(np.argmin([abs(np.log(e / gate)) for e in edges]))
        edges[nearest] = float(gate)
    edges = sorted(set(round(e, 4) for e in edges))
    return tuple(edges)


class CellHistograms:
    """Score histograms of genuine and impostor pairs per quality cell.

    Counting every pair in fixed cosine bins (width 2 / ``HISTOGRAM_BINS``) keeps memory
    flat however many pairs there are (a billion for LFW DevTrain at 13 sides).
    """

    def __init__(self, edges: Sequence[float] | np.ndarray, bins: int = HISTOGRAM_BINS) -> None:
        self.edges = np.asarray(edges, dtype=np.float64)
        self.bands = len(self.edges) + 1
        self.bins = bins
        shape = (self.bands * self.bands, bins)
        self.genuine = np.zeros(shape, dtype=np.int64)
        self.impostor = np.zeros(shape, dtype=np.int64)

    def _cells(self, qa: np.ndarray, qb: np.ndarray) -> np.ndarray:
        low = np.searchsorted(self.edges, np.minimum(qa, qb), side="right")
        high = np.searchsorted(self.edges, np.maximum(qa, qb), side="right")
        return low * self.bands + high

    def _bins(self, scores: np.ndarray) -> np.ndarray:
        position = np.floor((np.clip(scores, -1.0, 1.0) + 1.0) / 2.0 * self.bins)
        return np.minimum(position.astype(np.int64), self.bins - 1)

    def add(self, scores: np.ndarray, qa: np.ndarray, qb: np.ndarray, genuine: np.ndarray,
            impostor: np.ndarray) -> None:
        """Counts the pairs selected by the boolean masks (all arrays one shape)."""
        size = self.bands * self.bands * self.bins
        for mask, counts in ((genuine, self.genuine), (impostor, self.impostor)):
            if mask.any():
                flat = self._cells(qa[mask], qb[mask]) * self.bins + self._bins(scores[mask])
                counts += np.bincount(flat, minlength=size).reshape(counts.shape)

    def bin_edge(self, index: int) -> float:
        """The lower cosine of bin ``index``."""
        return -1.0 + 2.0 * index / self.bins

    def threshold(self, cell: int, far: float, counts: np.ndarray | None = None) -> float | None:
        """The lowest bin edge accepting at most ``far`` of the cell's impostors; ``None``
        when the impostors allow fewer than :data:`MIN_FALSE_ACCEPTS` false accepts."""
        hist = self.impostor[cell] if counts is None else counts
        total = int(hist.sum())
        allowed = int(np.floor(total * far + 1e-9))
        if allowed < MIN_FALSE_ACCEPTS:
            return None
        above = np.cumsum(hist[::-1])[::-1]  # above[i] = impostors in bins >= i
        ok = np.nonzero(above <= allowed)[0]
        index = int(ok[0]) if ok.size else self.bins
        return min(1.0, self.bin_edge(index))

    def tar(self, cell: int, threshold: float) -> float | None:
        hist = self.genuine[cell]
        total = int(hist.sum())
        if total == 0:
            return None
        index = round((threshold + 1.0) / 2.0 * self.bins)
        return float(hist[index:].sum() / total)


@dataclass
class SidePairThresholds:
    """Thresholds that one pair of sides (a, b) alone needs in each cell.

    Attributes:
        sides: the two sides (px).
        impostors: (cells,) impostor pairs of this side pair in each cell.
        thresholds: ``{far: (cells,) threshold}``, NaN where not measurable.
    """

    sides: tuple[int, int]
    impostors: np.ndarray
    thresholds: dict[str, np.ndarray]


def count_pairs(
    histograms: CellHistograms,
    data: DegradedSet,
    *,
    chunk: int = 2048,
    sides: Sequence[int] | None = None,
    fars: Sequence[str] = THRESHOLD_FARS,
) -> list[SidePairThresholds]:
    """Adds every pair of ``data`` at every pair of sides to ``histograms``.

    Pairs are (face i at side a, face j at side b) with i != j: for a == b each unordered
    pair once, for a != b both orders (they are different pairs of images). Pairs of a
    face with itself are left out. Labelled faces give genuine (same identity) and
    impostor pairs; unlabelled ones (each a different person) impostor pairs only.

    Returns:
        For each side pair, the thresholds its own impostors need in each cell (q only
        approximates resolution: within one cell, pairs of the smallest faces score
        higher than the cell's average impostor).
    """
    count, n = data.quality.shape
    ids = data.identities
    names = list(sides) if sides is not None else list(range(count))
    cells = histograms.bands * histograms.bands
    per_pair = []
    for a in range(count):
        for b in range(a, count):
            own = CellHistograms(histograms.edges, histograms.bins)
            for start in range(0, n, chunk):
                rows = np.arange(start, min(start + chunk, n))
                scores = data.embeddings[a, rows] @ data.compared_with[b].T
                cols = np.arange(n)[None, :]
                valid = cols > rows[:, None] if a == b else cols != rows[:, None]
                same = (
                    ids[rows][:, None] == ids[None, :] if ids is not None
                    else np.zeros_like(valid)
                )
                qa = np.broadcast_to(data.quality[a, rows][:, None], scores.shape)
                qb = np.broadcast_to(data.quality[b][None, :], scores.shape)
                own.add(scores, qa, qb, valid & same, valid & ~same)
            histograms.genuine += own.genuine
            histograms.impostor += own.impostor
            per_pair.append(SidePairThresholds(
                sides=(names[a], names[b]),
                impostors=own.impostor.sum(axis=1),
                thresholds={
                    far: np.array([
                        np.nan if (t := own.threshold(c, float(far))) is None else t
                        for c in range(cells)
                    ])
                    for far in fars
                },
            ))
    return per_pair


#: A side pair's own threshold binds a cell when it holds at least this share of the
#: cell's impostor pairs (smaller shares are the tails of neighbouring resolutions).
MIN_SIDE_PAIR_SHARE = 0.1


def calibrate_quality(
    labelled: DegradedSet,
    extra_impostors: Sequence[DegradedSet] = (),
    *,
    edges: Sequence[float],
    fars: Sequence[str] = THRESHOLD_FARS,
    tar_floor: float = DEFAULT_TAR_FLOOR,
    min_share: float = MIN_SIDE_PAIR_SHARE,
) -> QualityCalibration:
    """Thresholds per quality cell at each FAR.

    Genuine pairs come from ``labelled``; impostors from ``labelled`` and, separately,
    from each of ``extra_impostors`` (faces of people the model may never have seen).
    A cell's threshold is the **highest** that any impostor source needs there, over
    the cell as a whole and over each pair of resolutions holding at least ``min_share``
    of the cell: the FAR bound then holds on every source (a model fine-tuned on the
    labelled people can push their impostors apart further than strangers') and at every
    resolution (q only approximates resolution; without this, 7 px impostors in a cell
    shared with 8 px ones were accepted at 1.9-2.6x the target FAR).
    """
    sources = []
    for data in (labelled, *extra_impostors):
        histograms = CellHistograms(edges)
        sources.append((histograms, count_pairs(histograms, data, fars=fars)))
    main = sources[0][0]
    cells = []
    for low in range(main.bands):
        for high in range(low, main.bands):
            cell = low * main.bands + high
            thresholds: dict[str, float | None] = {}
            tar: dict[str, float | None] = {}
            for key in fars:
                usable = []
                for histograms, per_pair in sources:
                    whole = histograms.threshold(cell, float(key))
                    if whole is None:
                        continue
                    usable.append(whole)
                    total = histograms.impostor[cell].sum()
                    usable += [
                        float(p.thresholds[key][cell]) for p in per_pair
                        if p.impostors[cell] >= min_share * total
                        and np.isfinite(p.thresholds[key][cell])
                    ]
                thresholds[key] = max(usable) if usable else None
                tar[key] = None if not usable else main.tar(cell, max(usable))
            cells.append(QualityCell(
                low=low, high=high, thresholds=thresholds, tar=tar,
                genuine=int(main.genuine[cell].sum()),
                impostors=int(sum(h.impostor[cell].sum() for h, _ in sources)),
            ))
    names = ", ".join([labelled.name, *(d.name for d in extra_impostors)])
    count = labelled.quality.shape[0]
    return QualityCalibration(
        edges=tuple(edges), cells=tuple(cells), tar_floor=tar_floor,
        source=f"{names}; every face degraded to {count} sides in 7..112 px, all pairs; "
        f"each cell's threshold the strictest over its sources and over the resolution "
        f"pairs holding >= {min_share:.0%} of it",
    )


def _model_gate(metadata: ModelMetadata) -> float | None:
    """The quality gate of a gated model (its branches switch there), if any."""
    return metadata.gate.threshold if metadata.gate is not None else None


def load_unlabelled_faces(folder: str | Path, limit: int | None, *, seed: int = 0) -> np.ndarray:
    """112 crops of a folder of aligned faces, each a different person (e.g.
    ``faces-extra/aaf``): a fixed random sample of ``limit`` of them."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no images in {folder}")
    if limit is not None and limit < len(files):
        keep = np.sort(np.random.default_rng(seed).choice(len(files), limit, replace=False))
        files = [files[i] for i in keep]
    return load_faces(files, FaceLoader("aligned"), progress=False)


def lfw_singletons(lfw_dir: str | Path, people_file: str) -> list[Path]:
    """The image of every person listed with exactly one image in ``people_file``
    (``peopleDevTrain.txt``): people that a model trained with a margin head on
    identities with two or more images never saw."""
    folder = lfw_image_folder(lfw_dir)
    return [
        folder / name / f"{name}_0001.jpg"
        for fold in parse_people_file(Path(lfw_dir) / people_file)
        for name, count in fold
        if count == 1
    ]


def calibrate_quality_artifact(
    onnx_path: str | Path,
    lfw_dir: str | Path,
    *,
    pairs_file: str = "pairsDevTrain.txt",
    singletons_of: str | None = "peopleDevTrain.txt",
    extra_impostors: str | Path | None = None,
    extra_limit: int | None = 3000,
    sides: Sequence[int] = CALIBRATION_SIDES,
    tar_floor: float = DEFAULT_TAR_FLOOR,
    batch_size: int = 128,
    threads: int | None = None,
    progress: bool = True,
) -> ModelMetadata:
    """Recalibrates ``onnx_path`` in place: thresholds per quality band and, from the
    sharp faces, the single thresholds; the ONNX file is untouched and the metadata
    keeps its SHA-256.

    Args:
        onnx_path: the artifact.
        lfw_dir: LFW folder; the images of ``pairs_file`` (training-side: DevTrain)
            give genuine and impostor pairs.
        pairs_file: the LFW pairs file whose images are used.
        singletons_of: an LFW people file whose one-image people give impostors a
            model fine-tuned on its people with two or more images never saw (None: off).
        extra_impostors: a folder of aligned faces of people outside LFW, each a
            different person (``faces-extra/aaf``): impostors the model never trained on.
        extra_limit: how many of those faces (a fixed random sample).
        sides: the resolutions every face is degraded to.
        tar_floor: cells whose TAR at a FAR is under this answer 'undecidable'.
    """
    metadata = load_metadata(onnx_path)
    model = OnnxModel(onnx_path, threads=threads)
    protocol = load_lfw(lfw_dir, 1, pairs_file=pairs_file)
    faces = load_faces(protocol.images, FaceLoader("lfw"), progress=progress)
    identities = [Path(p).parent.name for p in protocol.images]
    labelled = embed_degraded(model, faces, sides=sides, identities=identities,
                              name=protocol.name, batch_size=batch_size, progress=progress)
    extra = []
    if singletons_of:
        paths = lfw_singletons(lfw_dir, singletons_of)
        extra.append(embed_degraded(
            model, load_faces(paths, FaceLoader("lfw"), progress=progress), sides=sides,
            identities=None, name=f"{Path(singletons_of).stem} one-image people "
            f"({len(paths)}, impostors only)", batch_size=batch_size, progress=progress,
        ))
    if extra_impostors is not None:
        unlabelled = load_unlabelled_faces(extra_impostors, extra_limit)
        extra.append(embed_degraded(
            model, unlabelled, sides=sides, identities=None,
            name=f"{Path(extra_impostors).name} ({len(unlabelled)} faces, impostors only)",
            batch_size=batch_size, progress=progress,
        ))
    edges = band_edges(labelled.quality, sides, gate=_model_gate(metadata))
    quality = calibrate_quality(labelled, extra, edges=edges, tar_floor=tar_floor)
    sharp = list(sides).index(max(sides))
    single = calibrate_embeddings(labelled.embeddings[sharp], protocol, identities,
                                  queries=labelled.compared_with[sharp])
    updated = metadata.model_copy(update={
        "thresholds": {**metadata.thresholds, **single.thresholds},
        "quality_calibration": quality,
        "extra": {
            **metadata.extra,
            "calibration": {
                "source": single.source,
                "genuine_pairs": single.genuine,
                "impostor_pairs": single.impostors,
                "tar_at_threshold": single.tar,
            },
        },
    })
    ModelMetadata.model_validate(updated.model_dump())
    write_metadata(onnx_path, updated)
    logger.info("calibrated %s per quality band on %s", onnx_path, quality.source)
    return load_metadata(onnx_path)
