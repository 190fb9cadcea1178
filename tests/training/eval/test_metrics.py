"""Metric code on constructed cases (training.eval.metrics)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training.eval import metrics
from training.eval.metrics import (
    auc,
    best_threshold,
    cmc,
    fnir_at_fpir,
    interleaved_folds,
    kfold_accuracy,
    kfold_accuracy_by_group,
    roc_curve,
    search,
    tar_at_far,
    threshold_at_far,
    verification_metrics,
)

REPO_ROOT = Path(__file__).resolve().parents[3]


def test_perfectly_separated_scores_give_full_marks() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([True, False], 1500)
    scores = np.where(labels, rng.uniform(0.6, 1.0, 3000), rng.uniform(-0.2, 0.5, 3000))
    folds = interleaved_folds(labels, 10)
    summary, curve = verification_metrics(scores, labels, folds, fars=(1e-2, 1e-3))
    assert summary["accuracy"] == 1.0
    assert summary["std"] == 0.0
    assert summary["tar_at_far"] == {"0.01": 1.0, "0.001": 1.0}
    assert summary["auc"] == 1.0
    assert 0.5 < summary["threshold"] < 0.6
    assert curve.far[0] == 0.0 and curve.tar[-1] == 1.0


def test_known_small_roc() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    labels = np.array([True, False, True, False])
    curve = roc_curve(scores, labels)
    np.testing.assert_allclose(curve.far, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(curve.tar, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(curve.thresholds[1:], [0.9, 0.8, 0.7, 0.6])
    assert auc(curve) == pytest.approx(0.75)


def test_tied_scores_make_one_roc_point() -> None:
    curve = roc_curve(np.array([0.5, 0.5, 0.1]), np.array([True, False, False]))
    np.testing.assert_allclose(curve.far, [0, 0.5, 1])
    np.testing.assert_allclose(curve.tar, [0, 1, 1])
    assert auc(curve) == pytest.approx(0.75)


def test_roc_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="both classes"):
        roc_curve(np.array([0.1, 0.2]), np.array([True, True]))


def test_tar_at_far_counts_false_accepts() -> None:
    negatives = np.linspace(0, 0.99, 100)  # 100 negatives: FAR 0.01 allows one
    positives = np.array([0.985, 0.995, 0.2])
    scores = np.concatenate([positives, negatives])
    labels = np.concatenate([np.ones(3, bool), np.zeros(100, bool)])
    threshold = threshold_at_far(negatives, 0.01)
    assert np.sum(negatives >= threshold) == 1
    # the threshold sits just above the 2nd-highest negative (0.98): 0.985 and 0.995 pass
    assert tar_at_far(scores, labels, 0.01) == pytest.approx(2 / 3)
    assert tar_at_far(scores, labels, 0.001) is None  # 100 negatives cannot measure 1e-3


def test_best_threshold_maximises_accuracy() -> None:
    scores = np.array([0.1, 0.2, 0.35, 0.4, 0.8, 0.9])
    labels = np.array([False, False, True, False, True, True])
    t = best_threshold(scores, labels)
    assert 0.2 < t < 0.35 or 0.4 < t < 0.8
    assert np.mean((scores >= t) == labels) == pytest.approx(5 / 6)


def test_fold_thresholds_never_see_their_test_fold(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    labels = np.repeat([True, False], 300)
    scores = rng.normal(np.where(labels, 0.6, 0.3), 0.15)  # every score distinct
    folds = interleaved_folds(labels, 10)
    seen: list[np.ndarray] = []
    real = metrics.best_threshold

    def spy(s: np.ndarray, y: np.ndarray) -> float:
        seen.append(np.asarray(s).copy())
        return real(s, y)

    monkeypatch.setattr(metrics, "best_threshold", spy)
    result = kfold_accuracy(scores, labels, folds)
    assert len(seen) == 10
    for fold, used in enumerate(seen):
        test_scores = scores[folds == fold]
        assert not np.isin(test_scores, used).any()
        assert used.size == scores.size - test_scores.size
        assert result.thresholds[fold] == real(scores[folds != fold], labels[folds != fold])


def test_one_group_is_plain_kfold_accuracy() -> None:
    rng = np.random.default_rng(3)
    labels = rng.random(200) < 0.5
    scores = rng.normal(size=200) + labels
    folds = interleaved_folds(labels, 10)
    plain = kfold_accuracy(scores, labels, folds)
    grouped = kfold_accuracy_by_group(scores, labels, folds, np.zeros(200, dtype=int))
    np.testing.assert_array_equal(grouped.accuracies, plain.accuracies)
    np.testing.assert_array_equal(grouped.thresholds[:, 0], plain.thresholds)


def test_groups_on_different_scales_get_their_own_thresholds() -> None:
    # group 0 separates at 0.75, group 1 at 0.25: no single threshold gets both right
    labels = np.tile([True, False], 40)
    groups = np.repeat([0, 1], 40)
    scores = np.where(labels, 0.8, 0.7) - 0.5 * groups
    folds = interleaved_folds(labels, 4)
    grouped = kfold_accuracy_by_group(scores, labels, folds, groups)
    assert grouped.mean == 1.0
    assert np.all((grouped.thresholds[:, 0] > 0.7) & (grouped.thresholds[:, 0] <= 0.8))
    assert np.all((grouped.thresholds[:, 1] > 0.2) & (grouped.thresholds[:, 1] <= 0.3))
    assert kfold_accuracy(scores, labels, folds).mean == 0.75


def test_a_group_with_one_class_on_the_other_folds_uses_all_their_pairs() -> None:
    # group 1's only pair is a positive in fold 0: the other folds hold no pair of it,
    # so its threshold is the one chosen on all of their pairs
    labels = np.array([True, False] * 4 + [True])
    folds = np.array([0, 0, 1, 1, 0, 0, 1, 1, 0])
    groups = np.array([0] * 8 + [1])
    scores = np.where(labels, 0.9, 0.1)
    scores[-1] = 0.6
    grouped = kfold_accuracy_by_group(scores, labels, folds, groups)
    assert grouped.thresholds[0, 1] == best_threshold(scores[folds == 1], labels[folds == 1])
    assert np.isnan(grouped.thresholds[1, 1])  # fold 1 has no pair of group 1
    assert grouped.mean == 1.0
    with pytest.raises(ValueError, match="groups"):
        kfold_accuracy_by_group(scores, labels, folds, groups[:-1])


def test_a_group_of_one_class_on_the_other_folds_uses_all_their_pairs() -> None:
    # group 1 holds positives only outside fold 0 (and one negative in fold 0): its own
    # pairs there cannot place a threshold, so fold 0 takes the one chosen on all pairs
    labels = np.array([True, False] * 6 + [True, True, False])
    folds = np.array([0, 0, 1, 1, 2, 2] * 2 + [1, 2, 0])
    groups = np.array([0] * 12 + [1, 1, 1])
    scores = np.where(labels, 0.9, 0.1)
    scores[12:] = [0.3, 0.35, 0.5]
    grouped = kfold_accuracy_by_group(scores, labels, folds, groups)
    others = folds != 0
    assert grouped.thresholds[0, 1] == best_threshold(scores[others], labels[others])
    assert grouped.thresholds[0, 1] != best_threshold(
        scores[others & (groups == 1)], labels[others & (groups == 1)]
    )


def test_groups_must_be_one_finite_label_per_pair() -> None:
    labels = np.tile([True, False], 10)
    folds = interleaved_folds(labels, 2)
    scores = np.where(labels, 0.9, 0.1)
    with pytest.raises(ValueError, match="NaN"):
        kfold_accuracy_by_group(scores, labels, folds, np.where(labels, 0.0, np.nan))
    with pytest.raises(ValueError, match="shape"):
        kfold_accuracy_by_group(scores, labels, folds, np.zeros((10, 2)))


def test_a_fold_scored_with_its_own_threshold_would_differ() -> None:
    # fold 1 is "hard": inverted; choosing its threshold on itself would flatter it
    labels = np.tile([True, False], 10)
    folds = np.repeat([0, 1], 10)
    scores = np.where(labels, 0.8, 0.2)
    scores[folds == 1] = np.where(labels[folds == 1], 0.45, 0.55)
    result = kfold_accuracy(scores, labels, folds)
    # fold 0's threshold (0.5) gets every pair of fold 1 wrong ...
    assert result.thresholds[1] == pytest.approx(0.5)
    assert result.accuracies[1] == 0.0
    # ... while a threshold picked on fold 1 itself would have scored at least 50 %
    own = best_threshold(scores[folds == 1], labels[folds == 1])
    assert np.mean((scores[folds == 1] >= own) == labels[folds == 1]) >= 0.5
    # fold 1 alone cannot separate anything: accept-all, so fold 0 gets 50 %
    assert result.accuracies[0] == 0.5


def test_interleaved_folds_mix_both_classes() -> None:
    labels = np.array([True] * 23 + [False] * 17)
    folds = interleaved_folds(labels, 10)
    for fold in range(10):
        members = labels[folds == fold]
        assert members.any() and (~members).any()
    assert np.bincount(folds[labels]).max() - np.bincount(folds[labels]).min() <= 1


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_search_ranks_and_cmc() -> None:
    gallery = np.eye(4, dtype=np.float32)
    labels_g = np.array([10, 11, 12, 13])
    probes = _unit(np.array([
        [1.0, 0.1, 0.0, 0.0],  # 10: rank 1
        [0.9, 0.5, 0.0, 0.0],  # 11: rank 2 (10 scores higher)
        [0.5, 0.4, 0.3, 0.0],  # 12: rank 3
        [0.0, 0.0, 0.0, 1.0],  # 99: not enrolled
    ]))
    result = search(probes, np.array([10, 11, 12, 99]), gallery, labels_g)
    np.testing.assert_array_equal(result.mate_rank, [1, 2, 3, 0])
    np.testing.assert_array_equal(result.top_label_correct, [True, False, False, False])
    rates = cmc(result, (1, 2, 5))
    assert rates == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 5: 1.0}


def test_search_is_pessimistic_on_ties_and_can_rank_identities() -> None:
    gallery = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    probe = np.array([[1.0, 0.0]], dtype=np.float32)
    by_image = search(probe, np.array([2]), gallery, np.array([1, 2, 3]))
    assert by_image.mate_rank[0] == 2  # tied with identity 1: counted behind it
    multi = np.array([[0.0, 1.0], [0.8, 0.6], [0.6, 0.8], [1.0, 0.0]], dtype=np.float32)
    labels = np.array([5, 6, 6, 7])
    probe = _unit(np.array([[0.7, 0.71]]))
    assert search(probe, np.array([5]), multi, labels).mate_rank[0] == 3  # two images of 6
    assert search(probe, np.array([5]), multi, labels, by_identity=True).mate_rank[0] == 2


def test_open_set_fnir_at_fpir() -> None:
    rng = np.random.default_rng(2)
    gallery = _unit(rng.normal(size=(200, 64)))
    probes = _unit(gallery + 0.05 * rng.normal(size=gallery.shape))
    labels = np.arange(200)
    result = search(probes, labels, gallery, labels, chunk=37)
    fnir, threshold = fnir_at_fpir(result, 1e-2)
    assert fnir == 0.0 and threshold is not None
    swapped = search(probes, np.roll(labels, 1), gallery, labels)  # every probe mislabelled
    assert fnir_at_fpir(swapped, 1e-2)[0] == 1.0
    assert fnir_at_fpir(result, 1e-3) == (None, None)  # 200 non-mated searches: too few


def test_eval_core_imports_without_torch() -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import training.eval, training.eval.metrics, training.eval.protocols\n"
        "import training.eval.datasets, training.eval.runner, training.eval.report\n"
        "import training.eval.embedding, training.faces, training.degrade\n"
        "assert sys.modules['torch'] is None\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
