"""How two faces' vectors are compared (models.comparison): the pair's space gives dlib's
cosine for two sharp faces and the students' for every other pair, in either order, from
one stored vector per face and its query vector."""

from __future__ import annotations

import numpy as np
import pytest

from models.comparison import normalise, pair_similarity, queries, sharp_rows, stored_vectors


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    v = rng.normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_the_pair_space_rule_for_every_pair_in_either_order() -> None:
    rng = np.random.default_rng(0)
    g, z = _unit(rng, 6, 8), _unit(rng, 6, 8)
    sharp = np.array([True, False, True, False, True, False])
    stored = stored_vectors(g, z, sharp)
    np.testing.assert_array_equal(stored[0], np.concatenate([g[0], np.zeros(8), z[0]]))
    np.testing.assert_array_equal(stored[1], np.concatenate([np.zeros(8), z[1], z[1]]))
    np.testing.assert_array_equal(sharp_rows(stored), sharp)
    scores = stored @ queries(stored, "pair-space").T
    expected = np.where(sharp[:, None] & sharp[None, :], g @ g.T, z @ z.T)
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    np.testing.assert_allclose(scores, scores.T, atol=1e-6)
    left, right = np.arange(6), np.roll(np.arange(6), 1)
    np.testing.assert_allclose(
        pair_similarity(stored[left], stored[right], "pair-space"),
        expected[left, right], atol=1e-6,
    )


def test_cosine_vectors_are_their_own_queries() -> None:
    vectors = _unit(np.random.default_rng(1), 4, 5)
    np.testing.assert_array_equal(queries(vectors), vectors)
    np.testing.assert_allclose(pair_similarity(vectors, vectors), np.ones(4), atol=1e-6)
    with pytest.raises(ValueError, match="shapes differ"):
        pair_similarity(vectors, vectors[:, :4])


def test_blocks_are_normalised_one_by_one_and_zero_blocks_stay_zero() -> None:
    raw = np.array([[3.0, 4.0, 0.0, 0.0, 0.0, 2.0], [0.0, 0.0, 5.0, 0.0, 0.0, 7.0]])
    stored = normalise(raw, "pair-space")
    np.testing.assert_allclose(stored, [[0.6, 0.8, 0, 0, 0, 1], [0, 0, 1, 0, 0, 1]])
    np.testing.assert_allclose(normalise(raw[:, :2]), [[0.6, 0.8], [0.0, 0.0]])


def test_an_unknown_comparison_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown comparison 'euclidean'"):
        queries(np.zeros((1, 6), np.float32), "euclidean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown comparison"):
        normalise(np.zeros((1, 6), np.float32), "dot")  # type: ignore[arg-type]


def test_a_width_that_is_not_three_blocks_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\(N, 3 d\)"):
        queries(np.zeros((2, 7), np.float32), "pair-space")
    with pytest.raises(ValueError, match=r"\(N, 3 d\)"):
        normalise(np.zeros(6, np.float32), "pair-space")
