"""What the service's decisions realise: FAR and TAR of ``models.decision.DecisionRule``.

Accuracy with a threshold chosen per fold says how well a model *ranks* pairs; an
operator acts on the service's ``match``. This module applies the service's own rule
(the same code) to a protocol's pairs and counts:

* **TAR**: genuine pairs (the protocol's matched pairs) answered ``match``;
* **FAR**: impostor pairs answered ``match``, over **all** pairs of images of different
  people in the protocol (a published list of 300-3,000 mismatched pairs cannot measure
  a FAR of 1e-3);
* how many of each were ``undecidable`` (neither accepted nor rejected; they count as
  not accepted in FAR and TAR).

Both-degraded: both images at r. Cross-resolution: the first image of a genuine pair at
112 px and the second at r; impostors are every (image i at 112, image j at r) pair of
different people, both orders.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from models.decision import DecisionRule


def realised_rates(
    rule: DecisionRule,
    *,
    fars: Sequence[str],
    embeddings_a: np.ndarray,
    quality_a: np.ndarray,
    embeddings_b: np.ndarray,
    quality_b: np.ndarray,
    identities: np.ndarray,
    genuine_left: np.ndarray,
    genuine_right: np.ndarray,
    same_side: bool,
    uncalibrated: bool = False,
    chunk: int = 1024,
) -> dict[str, dict[str, Any]]:
    """FAR / TAR of ``rule`` at each of ``fars``.

    Args:
        rule: the service's decision rule of the model.
        fars: FAR keys to decide at.
        embeddings_a, quality_a: every protocol image as the first image of a pair
            (the model's stored vectors, ``models.comparison``, and Laplacian q).
        embeddings_b, quality_b: every image as the second image of a pair (its query
            vectors: the stored ones for a cosine model).
        identities: (N,) person of each image.
        genuine_left, genuine_right: image indices of the matched pairs.
        same_side: both images come from the same set (a == b): impostor pairs i < j
            once; otherwise every ordered (i, j), i != j.
        uncalibrated: the faces were located by a box, not landmarks (the service's
            rule then answers 'undecidable').
        chunk: rows of the impostor score matrix per block.

    Returns:
        ``{far: {"far", "tar", "impostors", "genuine", "false_accepts", "undecidable_genuine",
        "undecidable_impostors"}}`` (rates in [0, 1]).
    """
    identities = np.asarray(identities)
    n = len(identities)
    genuine_sims = np.einsum(
        "ij,ij->i", embeddings_a[genuine_left], embeddings_b[genuine_right]
    ).astype(np.float64)
    out: dict[str, dict[str, Any]] = {}
    for far in fars:
        key = rule.check_far(far)
        genuine = rule.decide_many(
            genuine_sims, quality_a[genuine_left], quality_b[genuine_right], far=key,
            uncalibrated=uncalibrated,
        )
        accepted = undecided = total = 0
        for start in range(0, n, chunk):
            rows = np.arange(start, min(start + chunk, n))
            sims = embeddings_a[rows] @ embeddings_b.T
            cols = np.arange(n)[None, :]
            valid = cols > rows[:, None] if same_side else cols != rows[:, None]
            valid &= identities[rows][:, None] != identities[None, :]
            qa = np.broadcast_to(quality_a[rows][:, None], sims.shape)[valid]
            qb = np.broadcast_to(quality_b[None, :], sims.shape)[valid]
            decided = rule.decide_many(sims[valid], qa, qb, far=key, uncalibrated=uncalibrated)
            accepted += int(decided.accepted.sum())
            undecided += int(decided.undecidable.sum())
            total += int(valid.sum())
        out[key] = {
            "far": accepted / total if total else None,
            "tar": float(genuine.accepted.mean()) if len(genuine_sims) else None,
            "impostors": total,
            "genuine": len(genuine_sims),
            "false_accepts": accepted,
            "undecidable_impostors": undecided / total if total else None,
            "undecidable_genuine": (
                float(genuine.undecidable.mean()) if len(genuine_sims) else None
            ),
        }
    return out
