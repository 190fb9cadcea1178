"""How two faces' embeddings of an artifact are compared (its metadata's ``comparison``).

``cosine`` (every artifact before the field): one unit vector per face, compared by the
inner product.

``pair-space`` (a gated artifact; docs/training.md "Where a gated model compares two
faces"): dlib's cosine when both faces are at or above the gate, the students' cosine
otherwise, so a sharp gallery photo and a 14 px probe are compared in the space the
student was trained in instead of across two networks. The graph gives each face a
*stored* vector of three unit blocks (D, B, S) of d values (``embedding_size = 3 d``):

    sharp face (q >= gate):   [g, 0, z]       g: dlib's descriptor, z: the student's
    blurred face:             [0, z, z]

and a face is compared with another through the other's *query* vector:

    sharp face:    [g, z, 0]
    blurred face:  [0, 0, z]

so that ``stored(a) . query(b)`` is g_a . g_b for two sharp faces and z_a . z_b for every
other pair, in either order, and one inner-product index of the stored vectors answers
every probe. This module is numpy only: the service, evaluation and calibration share it.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

import numpy as np

Comparison = Literal["cosine", "pair-space"]
#: Blocks of a pair-space vector: dlib's (sharp faces), the student's (blurred faces),
#: the student's (every face).
PAIR_SPACE_BLOCKS: Final = 3


def _check(comparison: str) -> None:
    if comparison not in get_args(Comparison):
        raise ValueError(f"unknown comparison {comparison!r}; use one of "
                         f"{', '.join(get_args(Comparison))}")


def _sharp(blocks: np.ndarray) -> np.ndarray:
    """(N,) bool of (N, 3, d) pair-space blocks: the dlib block is set."""
    return np.any(blocks[:, 0] != 0, axis=1)


def _blocks(vectors: np.ndarray) -> np.ndarray:
    """(N, 3 d) as (N, 3, d); refuses widths that are not three blocks."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] % PAIR_SPACE_BLOCKS:
        raise ValueError(
            f"pair-space vectors are (N, 3 d), got shape {vectors.shape}"
        )
    return vectors.reshape(len(vectors), PAIR_SPACE_BLOCKS, -1)


def stored_vectors(sharp_branch: np.ndarray, student: np.ndarray, sharp: np.ndarray
                   ) -> np.ndarray:
    """Pair-space stored vectors (N, 3 d) from both branches' unit embeddings (N, d) and
    whether each face is at or above the gate (N,): what a pair-space graph gives, built
    outside it (experiments and tests hold both branches' embeddings)."""
    zero = np.zeros_like(sharp_branch)
    column = np.asarray(sharp, dtype=bool)[:, None]
    return np.concatenate([np.where(column, sharp_branch, zero),
                           np.where(column, zero, student), student], axis=1)


def normalise(raw: np.ndarray, comparison: Comparison = "cosine", eps: float = 1e-12) -> np.ndarray:
    """The stored vectors (N, D) of a graph's raw output: each row L2-normalised, or for
    ``pair-space`` each block (a block of zeros stays zeros)."""
    _check(comparison)
    raw = np.asarray(raw, dtype=np.float32)
    if comparison == "cosine":
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        return (raw / np.maximum(norms, eps)).astype(np.float32)
    blocks = _blocks(raw)
    norms = np.linalg.norm(blocks, axis=2, keepdims=True)
    return (blocks / np.maximum(norms, eps)).reshape(raw.shape).astype(np.float32)


def sharp_rows(stored: np.ndarray) -> np.ndarray:
    """(N,) bool: the pair-space faces at or above the gate (their dlib block is set)."""
    return _sharp(_blocks(stored))


def queries(stored: np.ndarray, comparison: Comparison = "cosine") -> np.ndarray:
    """The vectors (N, D) that stored vectors are searched or compared with: the stored
    ones themselves for ``cosine``; ``[g, z, 0]`` / ``[0, 0, z]`` for ``pair-space``."""
    _check(comparison)
    if comparison == "cosine":
        return np.asarray(stored, dtype=np.float32)
    blocks = _blocks(stored)
    sharp = _sharp(blocks)
    out = np.zeros_like(blocks)
    out[:, 0] = blocks[:, 0]  # zeros for a blurred face
    out[sharp, 1] = blocks[sharp, 2]
    out[~sharp, 2] = blocks[~sharp, 2]
    return out.reshape(len(blocks), -1)


def pair_similarity(
    first: np.ndarray, second: np.ndarray, comparison: Comparison = "cosine"
) -> np.ndarray:
    """(N,) similarity of row-aligned stored vectors under ``comparison``."""
    first = np.asarray(first, dtype=np.float32)
    second = queries(second, comparison)
    if first.shape != second.shape:
        raise ValueError(f"embedding shapes differ: {first.shape} vs {second.shape}")
    return np.einsum("ij,ij->i", first, second).astype(np.float64)
