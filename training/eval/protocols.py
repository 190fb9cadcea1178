"""Evaluation protocols as data, and their scoring from embeddings (numpy only).

A protocol names its distinct images once (``images``) and refers to them by index, so
each image is decoded and embedded once per resolution however many pairs or searches
use it. Two kinds exist:

* :class:`PairProtocol` - verification pairs with labels and folds (LFW, QMUL-SurvFace).
* :class:`IdentificationProtocol` - a gallery and probes with integer identities
  (SCface, TinyFace, any folder of identities); probes may carry a group name
  (SCface distances) scored separately.

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
    identification_metrics,
    open_set_roc,
    search,
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


def pair_scores(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Cosine similarity of row-aligned L2-normalised embeddings."""
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
        left, right: (pairs, D) L2-normalised embeddings of each pair's first and
            second image.
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
