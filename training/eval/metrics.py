"""Verification and identification metrics on similarity scores (numpy only).

Conventions used throughout:

* A score is a cosine similarity; higher means "more likely the same person".
* A pair is **accepted** when ``score >= threshold``. Thresholds picked to maximise
  accuracy are midpoints between neighbouring distinct scores, so the rule's tie
  behaviour never matters for them.
* FAR = accepted negatives / negatives, TAR = accepted positives / positives.
* TAR at a FAR target uses the strictest threshold whose measured FAR does not exceed
  the target; it is ``None`` when there are fewer than ``1 / FAR`` negatives, since
  the target cannot then be measured.
* Ranks are pessimistic on ties: a wrong candidate scoring exactly like the right one
  counts as ranked above it.
* Open-set identification (NIST FRVT 1:N, rank-1 based): FPIR(t) = share of non-mated
  searches whose best gallery score is >= t; FNIR(t) = share of mated searches whose
  mate is not the rank-1 candidate or scores below t. t for a target FPIR is picked on
  the non-mated scores like a threshold for a target FAR.

Nothing here imports torch; the training loop's validation and ``lrfr eval`` share it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def _as_scores_labels(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.size} scores but {labels.size} labels")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinite values")
    return scores, labels


@dataclass(frozen=True)
class RocCurve:
    """A ROC curve: ``far[i]``, ``tar[i]`` when accepting ``score >= thresholds[i]``.

    Starts at (0, 0) with threshold +inf and ends at (1, 1).
    """

    far: np.ndarray
    tar: np.ndarray
    thresholds: np.ndarray


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> RocCurve:
    """The ROC curve of ``scores`` with boolean ``labels`` (True = same identity).

    Raises:
        ValueError: shapes differ, a score is not finite, or a class is missing.
    """
    scores, labels = _as_scores_labels(scores, labels)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        raise ValueError(f"a ROC needs both classes: {positives} positives, {negatives} negatives")
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_labels = scores[order], labels[order]
    # one point per distinct score: the last index of each run of equal scores
    distinct = np.flatnonzero(np.diff(sorted_scores) != 0)
    ends = np.concatenate([distinct, [sorted_scores.size - 1]])
    true_accepts = np.cumsum(sorted_labels)[ends]
    false_accepts = (ends + 1) - true_accepts
    return RocCurve(
        far=np.concatenate([[0.0], false_accepts / negatives]),
        tar=np.concatenate([[0.0], true_accepts / positives]),
        thresholds=np.concatenate([[np.inf], sorted_scores[ends]]),
    )


def auc(curve: RocCurve) -> float:
    """Area under a ROC curve (trapezoidal rule)."""
    far, tar = curve.far, curve.tar
    return float(np.sum(np.diff(far) * (tar[1:] + tar[:-1]) / 2.0))


def threshold_at_far(negative_scores: np.ndarray, far: float) -> float | None:
    """The strictest acceptance threshold whose FAR on ``negative_scores`` is <= ``far``.

    Returns ``None`` when the negatives are too few to measure ``far``
    (fewer than ``1 / far``).
    """
    if not 0.0 < far <= 1.0:
        raise ValueError(f"FAR must be in (0, 1], got {far}")
    negatives = np.sort(np.asarray(negative_scores, dtype=np.float64).ravel())[::-1]
    if negatives.size == 0 or negatives.size * far < 1.0 - 1e-9:
        return None
    allowed = int(np.floor(negatives.size * far + 1e-9))  # false accepts we may make
    if allowed >= negatives.size:
        return float(negatives[-1])
    # accepting >= t with t just above the (allowed+1)-th highest negative accepts at
    # most `allowed` negatives (fewer when that score is tied with higher ones)
    return float(np.nextafter(negatives[allowed], np.inf))


def tar_at_far(scores: np.ndarray, labels: np.ndarray, far: float) -> float | None:
    """True-accept rate at false-accept rate ``far`` (``None`` if not measurable)."""
    scores, labels = _as_scores_labels(scores, labels)
    if not labels.any():
        raise ValueError("TAR needs at least one positive pair")
    threshold = threshold_at_far(scores[~labels], far)
    if threshold is None:
        return None
    return float(np.mean(scores[labels] >= threshold))


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold that maximises accuracy of ``score >= t`` on these pairs.

    Candidates are midpoints between neighbouring distinct scores plus one below the
    lowest and one above the highest; ties between equally accurate candidates go to
    the lowest threshold.
    """
    scores, labels = _as_scores_labels(scores, labels)
    if scores.size == 0:
        raise ValueError("no scores to pick a threshold from")
    order = np.argsort(scores, kind="mergesort")
    s, y = scores[order], labels[order]
    distinct = np.unique(s)
    # cut k: reject everything below distinct[k] (k = 0: accept all; k = len: reject all)
    starts = np.searchsorted(s, distinct, side="left")
    cut_positions = np.concatenate([starts, [s.size]])
    negatives_below = np.concatenate([[0], np.cumsum(~y)])[cut_positions]
    positives_above = y.sum() - np.concatenate([[0], np.cumsum(y)])[cut_positions]
    correct = negatives_below + positives_above
    k = int(np.argmax(correct))
    if k == 0:
        return float(distinct[0] - 1.0)
    if k == distinct.size:
        return float(distinct[-1] + 1.0)
    return float((distinct[k - 1] + distinct[k]) / 2.0)


def accuracy_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """Fraction of pairs classified correctly by ``score >= threshold``."""
    scores, labels = _as_scores_labels(scores, labels)
    return float(np.mean((scores >= threshold) == labels))


@dataclass(frozen=True)
class FoldAccuracy:
    """k-fold verification accuracy: per-fold accuracies and the thresholds used."""

    accuracies: np.ndarray
    thresholds: np.ndarray

    @property
    def mean(self) -> float:
        return float(self.accuracies.mean())

    @property
    def std(self) -> float:
        """Population standard deviation over folds (ddof=0), as the LFW tools report it."""
        return float(self.accuracies.std())


def kfold_accuracy(scores: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> FoldAccuracy:
    """Accuracy per fold with the threshold chosen on all the other folds.

    Args:
        scores: one similarity per pair.
        labels: True for same-identity pairs.
        folds: the fold index of every pair (any integers; each distinct value is a fold).
    """
    grouped = kfold_accuracy_by_group(scores, labels, folds, np.zeros(np.size(scores), int))
    return FoldAccuracy(grouped.accuracies, grouped.thresholds[:, 0])


def kfold_accuracy_by_group(
    scores: np.ndarray, labels: np.ndarray, folds: np.ndarray, groups: np.ndarray
) -> FoldAccuracy:
    """:func:`kfold_accuracy` with one threshold per group of pairs, each chosen on the
    other folds' pairs of that group (on all of their pairs when the group has no
    positive or no negative there): for pairs whose scores live on different scales,
    e.g. compared by different networks.

    Returns:
        the per-fold accuracies and thresholds of shape (folds, groups), the groups in
        ``np.unique(groups)`` order (NaN where a fold has no pair of that group).
    """
    scores, labels = _as_scores_labels(scores, labels)
    folds, groups = np.asarray(folds).ravel(), np.asarray(groups)
    if folds.shape != scores.shape or groups.shape != scores.shape:
        raise ValueError(f"{folds.size} fold indices and groups of shape {groups.shape} for "
                         f"{scores.size} pairs")
    if groups.dtype.kind == "f" and not np.all(np.isfinite(groups)):
        raise ValueError("groups contain NaN or infinite values")
    fold_ids, group_ids = np.unique(folds), np.unique(groups)
    if fold_ids.size < 2:
        raise ValueError("k-fold accuracy needs at least two folds")
    accuracies = np.zeros(fold_ids.size)
    thresholds = np.full((fold_ids.size, group_ids.size), np.nan)
    for i, fold in enumerate(fold_ids):
        test = folds == fold
        correct = 0
        for j, group in enumerate(group_ids):
            members = test & (groups == group)
            if not members.any():
                continue
            chosen = ~test & (groups == group)
            if labels[chosen].all() or not labels[chosen].any():
                chosen = ~test
            thresholds[i, j] = best_threshold(scores[chosen], labels[chosen])
            correct += int(np.sum((scores[members] >= thresholds[i, j]) == labels[members]))
        accuracies[i] = correct / int(test.sum())
    return FoldAccuracy(accuracies, thresholds)


def interleaved_folds(labels: np.ndarray, n_folds: int = 10) -> np.ndarray:
    """Fold indices that spread each class evenly: the i-th pair of a class -> i % k.

    Every fold then holds positives and negatives in the data's proportion (never a
    fold of a single class), and the assignment is deterministic.
    """
    labels = np.asarray(labels).astype(bool).ravel()
    folds = np.empty(labels.size, dtype=np.int64)
    for value in (True, False):
        members = np.flatnonzero(labels == value)
        folds[members] = np.arange(members.size) % n_folds
    return folds


def verification_metrics(
    scores: np.ndarray,
    labels: np.ndarray,
    folds: np.ndarray,
    fars: Sequence[float] = (1e-2, 1e-3),
) -> tuple[dict[str, object], RocCurve]:
    """The standard verification summary of one set of pair scores.

    Returns:
        ``({"accuracy", "std", "fold_accuracies", "threshold", "tar_at_far", "auc",
        "pairs", "positives", "negatives"}, roc)``; ``tar_at_far`` is keyed by
        ``str(far)`` and holds ``None`` where the pair count cannot measure it;
        ``threshold`` is the accuracy-optimal threshold on all pairs.
    """
    scores, labels = _as_scores_labels(scores, labels)
    folded = kfold_accuracy(scores, labels, folds)
    curve = roc_curve(scores, labels)
    summary: dict[str, object] = {
        "accuracy": folded.mean,
        "std": folded.std,
        "fold_accuracies": [float(a) for a in folded.accuracies],
        "threshold": best_threshold(scores, labels),
        "tar_at_far": {str(far): tar_at_far(scores, labels, far) for far in fars},
        "auc": auc(curve),
        "pairs": int(scores.size),
        "positives": int(labels.sum()),
        "negatives": int((~labels).sum()),
    }
    return summary, curve


@dataclass(frozen=True)
class SearchResults:
    """What identification metrics need from a probe-vs-gallery search.

    Attributes:
        mate_rank: 1-based rank of the first correct gallery entry per probe
            (0 for a probe whose identity is not enrolled).
        mate_score: score of the best correct gallery entry (-inf when not enrolled).
        top_label_correct: whether the top-ranked entry has the probe's identity.
        top_score: the best score of the search.
        nonmate_score: the best score over gallery entries of *other* identities, i.e.
            the top score of the same search had the probe's identity not been enrolled.
    """

    mate_rank: np.ndarray
    mate_score: np.ndarray
    top_label_correct: np.ndarray
    top_score: np.ndarray
    nonmate_score: np.ndarray


def search(
    probes: np.ndarray,
    probe_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    *,
    by_identity: bool = False,
    chunk: int = 256,
) -> SearchResults:
    """Searches L2-normalised ``probes`` (P, D) in ``gallery`` (G, D) by cosine similarity.

    Args:
        probes: probe embeddings, one row per probe.
        probe_labels: identity of every probe.
        gallery: gallery embeddings.
        gallery_labels: identity of every gallery entry (distractors: labels no probe
            carries, e.g. negative numbers, each distractor its own or a shared one).
        by_identity: rank identities (each scored by its best gallery entry) instead of
            gallery images; the same when each identity has one gallery image.
        chunk: probes scored at a time, bounding memory to ``chunk * G`` floats.
    """
    probes = np.asarray(probes, dtype=np.float32)
    gallery = np.asarray(gallery, dtype=np.float32)
    probe_labels = np.asarray(probe_labels).ravel()
    gallery_labels = np.asarray(gallery_labels).ravel()
    if probes.ndim != 2 or gallery.ndim != 2 or probes.shape[1] != gallery.shape[1]:
        raise ValueError(f"embedding shapes differ: probes {probes.shape}, gallery {gallery.shape}")
    if len(probe_labels) != len(probes) or len(gallery_labels) != len(gallery):
        raise ValueError("one label per probe and per gallery entry is required")
    if len(gallery) == 0:
        raise ValueError("the gallery is empty")
    if by_identity:
        # columns = identities, each scored by its best image
        order = np.argsort(gallery_labels, kind="mergesort")
        gallery, gallery_labels = gallery[order], gallery_labels[order]
        column_labels, starts = np.unique(gallery_labels, return_index=True)
    else:
        column_labels, starts = gallery_labels, None
    parts = []
    for begin in range(0, len(probes), chunk):
        sims = probes[begin : begin + chunk] @ gallery.T
        if starts is not None:
            sims = np.maximum.reduceat(sims, starts, axis=1)
        parts.append(search_scores(sims, probe_labels[begin : begin + chunk], column_labels))
    return SearchResults(**{
        key: np.concatenate([getattr(part, key) for part in parts])
        for key in SearchResults.__dataclass_fields__
    })


def search_scores(
    scores: np.ndarray, probe_labels: np.ndarray, gallery_labels: np.ndarray
) -> SearchResults:
    """The outcome of every search from a (P, G) similarity matrix.

    Args:
        scores: ``scores[i, j]`` = similarity of probe i and gallery entry j.
        probe_labels: (P,) identity of every probe.
        gallery_labels: (G,) identity of every gallery entry (column).

    Ranks are pessimistic on ties: a wrong entry scoring exactly like the best mate
    ranks above it.
    """
    sims = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(probe_labels).ravel()
    column_labels = np.asarray(gallery_labels).ravel()
    if sims.ndim != 2 or sims.shape != (labels.size, column_labels.size):
        raise ValueError(
            f"scores {sims.shape} do not match {labels.size} probes x "
            f"{column_labels.size} gallery entries"
        )
    if column_labels.size == 0:
        raise ValueError("the gallery is empty")
    is_mate = column_labels[None, :] == labels[:, None]
    mate_score = np.where(is_mate, sims, -np.inf).max(axis=1)
    nonmate = np.where(is_mate, -np.inf, sims)
    enrolled = is_mate.any(axis=1)
    # pessimistic ties: wrong entries scoring >= the best mate rank above it
    ahead = (nonmate >= mate_score[:, None]).sum(axis=1)
    return SearchResults(
        mate_rank=np.where(enrolled, ahead + 1, 0),
        mate_score=mate_score,
        top_label_correct=enrolled & (ahead == 0),
        top_score=sims.max(axis=1),
        nonmate_score=nonmate.max(axis=1),
    )


def cmc(results: SearchResults, ranks: Sequence[int]) -> dict[int, float]:
    """Closed-set identification rate at each rank, over the enrolled probes."""
    enrolled = results.mate_rank > 0
    if not enrolled.any():
        raise ValueError("no probe has its identity in the gallery")
    found = results.mate_rank[enrolled]
    return {int(rank): float(np.mean(found <= rank)) for rank in ranks}


def fnir_at_fpir(results: SearchResults, fpir: float) -> tuple[float | None, float | None]:
    """Open-set rank-1 FNIR at a target FPIR, and the threshold that achieves it.

    Non-mated searches are taken from every probe's best score against the *other*
    identities (the leave-own-identity-out search), plus the top score of every probe
    whose identity is not enrolled. A mated search fails when the top entry is not the
    mate or scores below the threshold.

    Returns:
        ``(fnir, threshold)``, or ``(None, None)`` when the non-mated searches are too
        few to measure ``fpir``.
    """
    enrolled = results.mate_rank > 0
    nonmated = np.concatenate([results.nonmate_score[enrolled], results.top_score[~enrolled]])
    nonmated = nonmated[np.isfinite(nonmated)]
    threshold = threshold_at_far(nonmated, fpir)
    if threshold is None or not enrolled.any():
        return None, None
    hits = results.top_label_correct[enrolled] & (results.mate_score[enrolled] >= threshold)
    return float(1.0 - hits.mean()), threshold


def fpir_at(nonmated_top: np.ndarray, threshold: float) -> float:
    """FPIR(t): the share of non-mated searches whose best gallery score is >= ``t``."""
    top = np.asarray(nonmated_top, dtype=np.float64).ravel()
    if top.size == 0:
        raise ValueError("FPIR needs at least one non-mated search")
    return float(np.mean(top >= threshold))


def fnir_at(mated: SearchResults, threshold: float) -> float:
    """Rank-1 FNIR(t): the share of mated searches whose mate is not returned at rank 1
    with a score >= ``t`` (a wrong top candidate is a miss whatever its score)."""
    if mated.mate_rank.size == 0 or not np.all(mated.mate_rank > 0):
        raise ValueError("FNIR needs mated searches only (every probe's identity enrolled)")
    hits = mated.top_label_correct & (mated.mate_score >= threshold)
    return float(1.0 - hits.mean())


def open_set_at_fpir(
    mated: SearchResults, nonmated_top: np.ndarray, fpir: float
) -> dict[str, float | None]:
    """Open-set (NIST FRVT 1:N) operating point at a target FPIR, non-mated probes apart.

    Unlike :func:`fnir_at_fpir`, no search of an enrolled person is reused as a
    non-mated one: the non-mated searches are probes of people not in the gallery.

    Args:
        mated: the searches of probes whose person is enrolled (``mate_rank > 0``).
        nonmated_top: (N,) the best gallery score of every non-mated search.
        fpir: the target false positive identification rate.

    Returns:
        ``{"fnir", "fpir", "threshold"}``: the strictest threshold whose FPIR on these
        non-mated searches is <= ``fpir`` (:func:`threshold_at_far`), the FPIR it
        realises and the rank-1 FNIR at it; all ``None`` when fewer than ``1 / fpir``
        non-mated searches cannot measure the target.
    """
    threshold = threshold_at_far(nonmated_top, fpir)
    if threshold is None:
        return {"fnir": None, "fpir": None, "threshold": None}
    return {
        "fnir": fnir_at(mated, threshold),
        "fpir": fpir_at(nonmated_top, threshold),
        "threshold": threshold,
    }


def open_set_roc(results: SearchResults) -> RocCurve | None:
    """The open-set identification curve: FPIR (as ``far``) vs 1 - FNIR (as ``tar``).

    ``None`` when there are no mated or no non-mated searches.
    """
    enrolled = results.mate_rank > 0
    nonmated = np.concatenate([results.nonmate_score[enrolled], results.top_score[~enrolled]])
    nonmated = nonmated[np.isfinite(nonmated)]
    if nonmated.size == 0 or not enrolled.any():
        return None
    # a mated search "scores" its mate's score if it is ranked first, else never accepted
    mated = np.where(results.top_label_correct[enrolled], results.mate_score[enrolled], -np.inf)
    floor = min(np.min(nonmated, initial=0.0), np.min(mated[np.isfinite(mated)], initial=0.0))
    mated = np.where(np.isfinite(mated), mated, floor - 1.0)
    scores = np.concatenate([mated, nonmated])
    labels = np.concatenate([np.ones(mated.size, bool), np.zeros(nonmated.size, bool)])
    curve = roc_curve(scores, labels)
    # misses scored below everything never become hits: cap the curve at the hit rate
    hit_rate = float(results.top_label_correct[enrolled].mean())
    keep = curve.tar <= hit_rate + 1e-12
    return RocCurve(curve.far[keep], curve.tar[keep], curve.thresholds[keep])


def identification_metrics(
    results: SearchResults,
    ranks: Sequence[int] = (1, 5),
    fpirs: Sequence[float] = (1e-2,),
) -> dict[str, object]:
    """``{"rank1": ..., "rank5": ..., "fnir_at_fpir": {"0.01": ...}, "probes", ...}``."""
    rates = cmc(results, ranks)
    summary: dict[str, object] = {f"rank{rank}": rate for rank, rate in rates.items()}
    summary["fnir_at_fpir"] = {str(fpir): fnir_at_fpir(results, fpir)[0] for fpir in fpirs}
    summary["probes"] = int(results.mate_rank.size)
    summary["mated_probes"] = int((results.mate_rank > 0).sum())
    return summary
