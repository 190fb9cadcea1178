"""Evaluation protocols as data, and their scoring from embeddings (numpy only).

A protocol names its distinct images once (``images``) and refers to them by index, so
each image is decoded and embedded once per resolution however many pairs or searches
use it. Two kinds exist:

* :class:`PairProtocol` - verification pairs with labels and folds (LFW, QMUL-SurvFace).
* :class:`IdentificationProtocol` - a gallery and probes with integer identities
  (SCface, TinyFace, any folder of identities); probes may carry a group name
  (SCface distances) scored separately.
* :class:`OpenSetProtocol` - one enrolled image per person, closed-set ranks over all
  of them and open-set FNIR at FPIR with half of them enrolled and honest non-mated
  probes (LFW DevTest identification, scored beside the LFW pairs).

Loading the official file layouts lives in :mod:`training.eval.datasets`; running a
model lives in :mod:`training.eval.runner`. This module never imports torch, so the
training loop's validation can call :func:`score_pairs` and :func:`score_identification`
on embeddings it computed itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from training.eval.metrics import (
    RocCurve,
    SearchResults,
    cmc,
    identification_metrics,
    open_set_at_fpir,
    open_set_roc,
    search,
    search_scores,
    verification_metrics,
)


def _reindex(images: Sequence[Path], *index_arrays: np.ndarray) -> tuple[Any, ...]:
    """Keeps only the images the index arrays use, renumbering the arrays to match.

    Returns:
        The kept images (a list of paths), then each index array renumbered.
    """
    used = np.unique(np.concatenate([np.asarray(a, dtype=np.int64) for a in index_arrays]))
    remap = np.full(len(images), -1, dtype=np.int64)
    remap[used] = np.arange(used.size)
    kept = [images[i] for i in used]
    return (kept, *(remap[np.asarray(a, dtype=np.int64)] for a in index_arrays))


def balanced_subset(keys: np.ndarray, limit: int) -> np.ndarray:
    """Indices of ``limit`` items spread evenly across the groups named by ``keys``.

    Items are taken round-robin: the first of every group, then the second of every
    group, and so on, in the data's order; the result is sorted and deterministic.
    """
    keys = np.asarray(keys)
    if limit >= keys.size:
        return np.arange(keys.size)
    _, group = np.unique(keys, return_inverse=True, axis=0)
    group = group.ravel()
    rank_in_group = np.zeros(keys.shape[0], dtype=np.int64)
    for g in np.unique(group):
        members = np.flatnonzero(group == g)
        rank_in_group[members] = np.arange(members.size)
    order = np.lexsort((np.arange(keys.shape[0]), group, rank_in_group))
    return np.sort(order[:limit])


@dataclass(frozen=True)
class PairProtocol:
    """Verification pairs over a list of distinct images.

    Attributes:
        name: protocol id written to results, e.g. ``"lfw-view2"``.
        images: every distinct image the pairs use.
        left, right: indices into ``images`` of each pair's two images.
        labels: True for same-identity pairs.
        folds: fold index of every pair (accuracy: threshold on the other folds).
        fars: FAR targets at which TAR is reported.
        identities: the person of every image, when the dataset names them (then
            every pair of images of different people is an impostor pair, which the
            realised FAR of the service's decisions is measured on).
    """

    name: str
    images: list[Path]
    left: np.ndarray
    right: np.ndarray
    labels: np.ndarray
    folds: np.ndarray
    fars: tuple[float, ...] = (1e-2, 1e-3)
    identities: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        n = len(self.labels)
        if not (len(self.left) == len(self.right) == len(self.folds) == n):
            raise ValueError("left, right, labels and folds must have one entry per pair")
        if self.identities is not None and len(self.identities) != len(self.images):
            raise ValueError("identities must have one entry per image")
        if n and max(int(np.max(self.left)), int(np.max(self.right))) >= len(self.images):
            raise ValueError("a pair refers to an image index beyond the image list")

    @property
    def pairs(self) -> int:
        return len(self.labels)

    def subset(self, limit: int | None) -> PairProtocol:
        """A fixed subset of ``limit`` pairs, balanced over folds and labels."""
        if limit is None or limit >= self.pairs:
            return self
        if limit < 1:
            raise ValueError(f"limit must be positive, got {limit}")
        keys = np.stack([self.folds, self.labels.astype(np.int64)], axis=1)
        keep = balanced_subset(keys, limit)
        images, left, right = _reindex(self.images, self.left[keep], self.right[keep])
        identities = None
        if self.identities is not None:
            person = dict(zip(self.images, self.identities, strict=True))
            identities = tuple(person[image] for image in images)
        return replace(
            self, images=images, left=left, right=right,
            labels=self.labels[keep], folds=self.folds[keep], identities=identities,
        )


@dataclass(frozen=True)
class IdentificationProtocol:
    """A gallery and probes over a list of distinct images.

    Attributes:
        name: protocol id, e.g. ``"tinyface"``.
        images: every distinct image used.
        gallery, probes: indices into ``images``.
        gallery_labels, probe_labels: integer identities; gallery distractors carry
            labels no probe has (negative numbers by convention).
        probe_groups: optional group name per probe (e.g. ``"d1"``) scored separately
            as well as together; empty strings mean "no group".
        ranks: CMC ranks reported.
        fpirs: FPIR targets at which open-set FNIR is reported.
        by_identity: rank identities instead of gallery images.
    """

    name: str
    images: list[Path]
    gallery: np.ndarray
    gallery_labels: np.ndarray
    probes: np.ndarray
    probe_labels: np.ndarray
    probe_groups: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=str))
    ranks: tuple[int, ...] = (1, 5)
    fpirs: tuple[float, ...] = (1e-2,)
    by_identity: bool = False

    def __post_init__(self) -> None:
        if len(self.gallery) != len(self.gallery_labels):
            raise ValueError("one label per gallery image is required")
        if len(self.probes) != len(self.probe_labels):
            raise ValueError("one label per probe is required")
        if len(self.probe_groups) not in (0, len(self.probes)):
            raise ValueError("probe_groups must be empty or have one entry per probe")

    @property
    def groups(self) -> list[str]:
        """The probe group names in sorted order (empty when ungrouped)."""
        return sorted({str(g) for g in self.probe_groups if str(g)})

    def subset(self, limit: int | None) -> IdentificationProtocol:
        """The first ``limit`` probe identities (sorted) with their gallery entries.

        Distractors (gallery labels no probe has) are cut to ``limit`` images too, so a
        limited run stays small but still searches a gallery with non-mates.
        """
        if limit is None:
            return self
        if limit < 1:
            raise ValueError(f"limit must be positive, got {limit}")
        identities = np.unique(self.probe_labels)[:limit]
        probe_keep = np.isin(self.probe_labels, identities)
        mate = np.isin(self.gallery_labels, identities)
        others = np.flatnonzero(~mate & ~np.isin(self.gallery_labels, self.probe_labels))
        gallery_keep = np.sort(np.concatenate([np.flatnonzero(mate), others[:limit]]))
        images, gallery, probes = _reindex(
            self.images, self.gallery[gallery_keep], self.probes[probe_keep]
        )
        groups = self.probe_groups[probe_keep] if len(self.probe_groups) else self.probe_groups
        return replace(
            self, images=images, gallery=gallery, probes=probes,
            gallery_labels=self.gallery_labels[gallery_keep],
            probe_labels=self.probe_labels[probe_keep], probe_groups=groups,
        )


@dataclass(frozen=True)
class OpenSetProtocol:
    """Closed- and open-set identification with one enrolled image per person.

    Closed set: every gallery person is enrolled and every probe is searched among all
    of them (rank-k). Open set (NIST FRVT 1:N): only the ``enrolled`` gallery entries
    form the gallery; probes of enrolled people are mated searches, and the probes of
    the other gallery people plus the ``nonmated`` images are non-mated searches, so no
    non-mated search ever involves an enrolled person.

    Attributes:
        name: protocol id written to results, e.g. ``"lfw-ident-peopleDevTest"``.
        images: every distinct image used.
        gallery, gallery_labels: indices into ``images`` of the one image per person
            enrolled in the closed set, and that person's (unique) integer identity.
        enrolled: (G,) True where a gallery person is also enrolled in the open set.
        probes, probe_labels: indices of the other images of the gallery people.
        nonmated, nonmated_labels: images searched in the open set only, as non-mated
            searches: never of an enrolled person.
        ranks: closed-set ranks reported.
        fpirs: FPIR targets at which open-set FNIR is reported.
    """

    name: str
    images: list[Path]
    gallery: np.ndarray
    gallery_labels: np.ndarray
    enrolled: np.ndarray
    probes: np.ndarray
    probe_labels: np.ndarray
    nonmated: np.ndarray
    nonmated_labels: np.ndarray
    ranks: tuple[int, ...] = (1, 5)
    fpirs: tuple[float, ...] = (1e-2, 1e-3)

    def __post_init__(self) -> None:
        if not len(self.gallery) == len(self.gallery_labels) == len(self.enrolled):
            raise ValueError("gallery, gallery_labels and enrolled need one entry per person")
        if len(np.unique(self.gallery_labels)) != len(self.gallery_labels):
            raise ValueError("one gallery image per person: gallery labels must be unique")
        if len(self.probes) != len(self.probe_labels):
            raise ValueError("one label per probe is required")
        if len(self.nonmated) != len(self.nonmated_labels):
            raise ValueError("one label per non-mated image is required")
        if not np.isin(self.probe_labels, self.gallery_labels).all():
            raise ValueError("every probe's person must be in the gallery")
        if np.isin(self.nonmated_labels, self.enrolled_labels).any():
            raise ValueError("a non-mated image belongs to an enrolled person")

    @property
    def enrolled_labels(self) -> np.ndarray:
        """The identities in the open-set gallery."""
        return np.asarray(self.gallery_labels)[np.asarray(self.enrolled, dtype=bool)]

    @property
    def mated(self) -> np.ndarray:
        """(P,) True for the probes that are mated searches in the open set."""
        return np.isin(self.probe_labels, self.enrolled_labels)

    def counts(self) -> dict[str, int]:
        """Gallery sizes and probe counts of both settings (the same at every resolution)."""
        mated = int(self.mated.sum())
        return {
            "gallery": len(self.gallery),
            "probes": len(self.probes),
            "open_set_gallery": int(np.sum(self.enrolled)),
            "mated_probes": mated,
            "nonmated_probes": len(self.probes) - mated + len(self.nonmated),
        }

    def subset(self, limit: int | None) -> OpenSetProtocol:
        """The first ``limit`` gallery people with their probes, and the first ``limit``
        people never in the gallery (non-mated images), in the protocol's order."""
        if limit is None:
            return self
        if limit < 1:
            raise ValueError(f"limit must be positive, got {limit}")
        keep = np.arange(len(self.gallery)) < limit
        kept_labels = self.gallery_labels[keep]
        probe_keep = np.isin(self.probe_labels, kept_labels)
        outsiders = self.nonmated_labels[~np.isin(self.nonmated_labels, self.gallery_labels)]
        _, first_seen = np.unique(outsiders, return_index=True)
        first_outsiders = outsiders[np.sort(first_seen)][:limit]
        nonmated_keep = np.isin(self.nonmated_labels, kept_labels) | np.isin(
            self.nonmated_labels, first_outsiders
        )
        images, gallery, probes, nonmated = _reindex(
            self.images, self.gallery[keep], self.probes[probe_keep],
            self.nonmated[nonmated_keep],
        )
        return replace(
            self, images=images, gallery=gallery, gallery_labels=kept_labels,
            enrolled=self.enrolled[keep], probes=probes,
            probe_labels=self.probe_labels[probe_keep], nonmated=nonmated,
            nonmated_labels=self.nonmated_labels[nonmated_keep],
        )

    def reindexed(self, images: list[Path], lookup: dict[Path, int]) -> OpenSetProtocol:
        """The same protocol over a larger image list (``lookup``: path -> index)."""
        remap = np.asarray([lookup[path] for path in self.images], dtype=np.int64)
        return replace(
            self, images=images, gallery=remap[self.gallery], probes=remap[self.probes],
            nonmated=remap[self.nonmated],
        )


def pair_scores(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Inner products of row-aligned vectors: the cosine of unit embeddings, or of a
    pair-space model's stored and query vectors, its similarity (``models.comparison``)."""
    left, right = np.asarray(left, np.float32), np.asarray(right, np.float32)
    if left.shape != right.shape:
        raise ValueError(f"embedding shapes differ: {left.shape} vs {right.shape}")
    return np.einsum("ij,ij->i", left, right).astype(np.float64)


#: Scores that make a pair wrong at any threshold (cosines lie in [-1, 1]).
_ALWAYS_REJECTED, _ALWAYS_ACCEPTED = -2.0, 2.0


def score_pairs(
    protocol: PairProtocol,
    left: np.ndarray,
    right: np.ndarray,
    *,
    failed: np.ndarray | None = None,
) -> tuple[dict[str, object], RocCurve]:
    """Verification summary of ``protocol`` from the embeddings of each pair's images.

    Args:
        protocol: the pairs.
        left, right: (pairs, D) embeddings of each pair's first and second image (for a
            pair-space model, the first image's stored vectors and the second's query
            vectors).
        failed: pairs with an image where no face was found: counted as errors at
            every threshold (a genuine pair rejected, an impostor pair accepted), never
            dropped; their number is reported as ``failed_pairs``.
    """
    scores = pair_scores(left, right)
    labels = np.asarray(protocol.labels, dtype=bool)
    if failed is not None and failed.any():
        scores = scores.copy()
        scores[failed & labels] = _ALWAYS_REJECTED
        scores[failed & ~labels] = _ALWAYS_ACCEPTED
    summary, curve = verification_metrics(scores, protocol.labels, protocol.folds, protocol.fars)
    summary["failed_pairs"] = 0 if failed is None else int(failed.sum())
    return summary, curve


def score_identification(
    protocol: IdentificationProtocol, gallery: np.ndarray, probes: np.ndarray
) -> tuple[dict[str, object], RocCurve | None]:
    """Identification summary of ``protocol`` from gallery and probe embeddings.

    Returns:
        ``(summary, open-set ROC or None)``; the summary has ``rank{k}`` for each rank,
        ``fnir_at_fpir``, probe counts and, for grouped probes, one entry per group
        (``{"d1": {"rank1": ...}, ...}``) plus ``rank1_d1``-style flat keys for tables.
    """
    results = search(
        probes, protocol.probe_labels, gallery, protocol.gallery_labels,
        by_identity=protocol.by_identity,
    )
    summary = identification_metrics(results, protocol.ranks, protocol.fpirs)
    groups = protocol.groups
    if groups:
        names = np.asarray([str(g) for g in protocol.probe_groups])
        per_group: dict[str, object] = {}
        for group in groups:
            members = names == group
            picked = type(results)(**{
                key: getattr(results, key)[members] for key in results.__dataclass_fields__
            })
            group_summary = identification_metrics(picked, protocol.ranks, protocol.fpirs)
            per_group[group] = group_summary
            for rank in protocol.ranks:
                summary[f"rank{rank}_{group}"] = group_summary[f"rank{rank}"]
        summary["groups"] = per_group
    summary["gallery"] = len(gallery)
    return summary, open_set_roc(results)


#: Scores of a search with no face: below every cosine (never a candidate).
_NO_CANDIDATE = -2.0


def _no_candidates(results: SearchResults, empty: np.ndarray) -> SearchResults:
    """``results`` with the searches at ``empty`` returning no candidate list: a mated
    one is found at no rank and never at rank 1."""
    if not empty.any():
        return results
    missed = empty & (results.mate_rank > 0)
    beyond = np.iinfo(np.int64).max
    return replace(
        results,
        mate_rank=np.where(missed, beyond, results.mate_rank),
        top_label_correct=results.top_label_correct & ~empty,
    )


def score_open_set(
    protocol: OpenSetProtocol,
    gallery: np.ndarray,
    probes: np.ndarray,
    nonmated: np.ndarray,
    *,
    failed: np.ndarray | None = None,
) -> dict[str, object]:
    """Closed-set ranks and open-set FNIR at FPIR of ``protocol`` from embeddings.

    Args:
        protocol: the gallery, probes and non-mated images.
        gallery: (G, D) embeddings of ``protocol.gallery`` (a pair-space model's stored
            vectors).
        probes: (P, D) embeddings of ``protocol.probes`` (a pair-space model's query
            vectors).
        nonmated: (N, D) embeddings of ``protocol.nonmated`` (likewise).
        failed: (len(images),) True where no face was found. Following NIST FRVT, a
            failed probe returns no candidate (a mated search is a miss at every rank; a
            non-mated search is no false positive) and a failed gallery image matches
            nothing; never dropped.

    Returns:
        ``{"rank1": ..., "rank5": ..., "fnir_at_fpir": {"0.01": ...},
        "fpir": {"0.01": realised FPIR}, "threshold_at_fpir": {"0.01": t}}``; a target
        the non-mated searches cannot measure (fewer than ``1 / FPIR``) holds ``None``.
    """
    gallery_labels = np.asarray(protocol.gallery_labels)
    probe_scores = np.asarray(probes, np.float32) @ np.asarray(gallery, np.float32).T
    other_scores = np.asarray(nonmated, np.float32) @ np.asarray(gallery, np.float32).T
    probe_scores = probe_scores.astype(np.float64)
    other_scores = other_scores.astype(np.float64)
    no_face = np.zeros(len(protocol.probes), dtype=bool)
    if failed is not None and failed.any():
        failed = np.asarray(failed, dtype=bool)
        no_face = failed[protocol.probes]
        for scores, rows in ((probe_scores, protocol.probes), (other_scores, protocol.nonmated)):
            scores[failed[rows]] = _NO_CANDIDATE
            scores[:, failed[protocol.gallery]] = _NO_CANDIDATE
    closed = _no_candidates(
        search_scores(probe_scores, protocol.probe_labels, gallery_labels), no_face
    )
    summary: dict[str, object] = {
        f"rank{rank}": rate for rank, rate in cmc(closed, protocol.ranks).items()
    }
    enrolled = np.asarray(protocol.enrolled, dtype=bool)
    mated = protocol.mated
    unmeasured: dict[str, float | None] = {"fnir": None, "fpir": None, "threshold": None}
    points = {str(f): unmeasured for f in protocol.fpirs}
    if mated.any():  # (then someone is enrolled)
        opened = _no_candidates(search_scores(
            probe_scores[mated][:, enrolled], protocol.probe_labels[mated],
            gallery_labels[enrolled],
        ), no_face[mated])
        nonmated_top = np.concatenate([
            probe_scores[~mated][:, enrolled].max(axis=1),
            other_scores[:, enrolled].max(axis=1),
        ])
        points = {str(f): open_set_at_fpir(opened, nonmated_top, f) for f in protocol.fpirs}
    summary["fnir_at_fpir"] = {fpir: point["fnir"] for fpir, point in points.items()}
    summary["fpir"] = {fpir: point["fpir"] for fpir, point in points.items()}
    summary["threshold_at_fpir"] = {fpir: point["threshold"] for fpir, point in points.items()}
    return summary
