"""Batch-hard triplet terms over a distance matrix, shared by the Octuplet loss (anchors
and candidates are the same images) and the teacher-anchored term of distillation
(anchors are the student's embeddings, candidates the teacher's descriptors of the
batch's sharp images)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_distance(a: torch.Tensor, b: torch.Tensor, kind: str = "euclidean") -> torch.Tensor:
    """(N, M) distances between rows of L2-normalised ``a`` and ``b``.

    ``euclidean``: ||a − b|| = sqrt(2 − 2 a·b) (clamped so the gradient stays finite at 0);
    ``cosine``: 1 − a·b.
    """
    cos = a @ b.T
    if kind == "cosine":
        return 1.0 - cos
    if kind == "euclidean":
        return (2.0 - 2.0 * cos).clamp_min(1e-12).sqrt()
    raise ValueError(f"unknown distance {kind!r}; use euclidean or cosine")


def batch_hard_triplet(
    distances: torch.Tensor,
    labels: torch.Tensor,
    margin: float,
    column_labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-anchor batch-hard triplet terms (N,) of an (N, M) distance matrix:
    ``max(hardest positive − hardest negative + margin, 0)``.

    Row i is anchor i, column j candidate j. Without ``column_labels`` the columns are the
    rows' own images (N = M, labels ``labels``) and the diagonal (the anchor's own image)
    is never a positive; with them the columns are another set (labels ``column_labels``)
    and every column of the anchor's identity is a positive. Anchors without a positive
    or a negative contribute 0.
    """
    if column_labels is None:
        same = labels.view(-1, 1) == labels.view(1, -1)
        positive = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    else:
        same = labels.view(-1, 1) == column_labels.view(1, -1)
        positive = same
    negative = ~same
    # masked max/min: fill excluded entries with values that never win
    hardest_positive = distances.masked_fill(~positive, float("-inf")).amax(dim=1)
    hardest_negative = distances.masked_fill(~negative, float("inf")).amin(dim=1)
    valid = positive.any(dim=1) & negative.any(dim=1)
    terms = F.relu(hardest_positive - hardest_negative + margin)
    return torch.where(valid, terms, torch.zeros_like(terms))
