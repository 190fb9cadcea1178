"""Octuplet loss (Knoche, Teepe, Hörmann, Rigoll: "Octuplet Loss: Make Face Recognition
Robust to Image Resolution", FG 2023), METHODS §6.

A batch holds P identities x K >= 2 images; every image x is present twice, as itself
and as its degraded copy x̃. With E = [f(x); f(x̃)] (2B rows, L2-normalised) and D the
pairwise distance, each of the four combinations (A, B) in
{(HR, HR), (HR, LR), (LR, HR), (LR, LR)} contributes, per anchor a in A, the batch-hard
triplet term

    ℓ_AB(a) = max(max_{p ∈ B, y_p = y_a, p ≠ a's own image} D(a, p)
                  − min_{n ∈ B, y_n ≠ y_a} D(a, n) + margin, 0),

and the loss is the mean over images i of ℓ_HH(i) + ℓ_HL(i) + ℓ_LH(i) + ℓ_LL(i).
"Own image" means the same source image, in either resolution: an anchor is never its
own positive, neither as itself nor as its degraded copy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from training.data import FaceSource, IdentityBatchSampler, ResolutionPolicy
from training.objectives.base import Batch, Objective, Stats
from training.objectives.registry import register_objective
from training.objectives.triplet import batch_hard_triplet, pairwise_distance

if TYPE_CHECKING:
    from training.config import TrainConfig

COMBINATIONS: tuple[tuple[str, str], ...] = (("hr", "hr"), ("hr", "lr"), ("lr", "hr"), ("lr", "lr"))


def octuplet_loss(
    hr: torch.Tensor,
    lr: torch.Tensor,
    labels: torch.Tensor,
    *,
    margin: float = 0.25,
    distance: str = "euclidean",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The Octuplet loss of row-aligned HR and LR embeddings (B, D) of the same images.

    Returns:
        ``(loss, terms)``: the mean over images of the four summed terms, and the mean
        of each term (keys ``hr_hr``, ``hr_lr``, ``lr_hr``, ``lr_lr``), detached.
    """
    if hr.shape != lr.shape or hr.shape[0] != labels.shape[0]:
        raise ValueError(
            f"hr {tuple(hr.shape)}, lr {tuple(lr.shape)} and labels {tuple(labels.shape)} "
            "must be row-aligned"
        )
    sets = {"hr": F.normalize(hr.float(), dim=1), "lr": F.normalize(lr.float(), dim=1)}
    total = hr.new_zeros(hr.shape[0], dtype=torch.float32)
    terms: dict[str, torch.Tensor] = {}
    for anchor, other in COMBINATIONS:
        term = batch_hard_triplet(
            pairwise_distance(sets[anchor], sets[other], distance), labels, margin
        )
        total = total + term
        terms[f"{anchor}_{other}"] = term.detach().mean()
    return total.mean(), terms


class OctupletObjective(Objective):
    """Octuplet fine-tuning: one backbone forward over [x; x̃].

    Args:
        margin: the triplet margin.
        distance: ``euclidean`` or ``cosine``.
    """

    needs_hr = True

    def __init__(self, margin: float = 0.25, distance: str = "euclidean") -> None:
        super().__init__()
        if margin < 0:
            raise ValueError(f"margin must be non-negative, got {margin}")
        self.margin = margin
        self.distance = distance
        self.name = "octuplet"

    def forward(self, backbone: nn.Module, batch: Batch) -> tuple[torch.Tensor, Stats]:
        batch_size = batch["input"].shape[0]
        embeddings = backbone(torch.cat([batch["hr_input"], batch["input"]]))
        hr, lr = embeddings[:batch_size], embeddings[batch_size:]
        loss, terms = octuplet_loss(
            hr, lr, batch["label"], margin=self.margin, distance=self.distance
        )
        with torch.no_grad():
            cosine = F.cosine_similarity(hr.float(), lr.float(), dim=1)
        return loss, {**terms, "hr_lr_cosine": cosine}

    def sampler(
        self, source: FaceSource, config: TrainConfig, *, rank: int, world_size: int
    ) -> Any:
        """P identities x K images per batch, every image also degraded (``finetune.octuplet``)."""
        assert config.finetune is not None
        o = config.finetune.octuplet
        policy = ResolutionPolicy(
            fraction=1.0, r_min=o.r_min, r_max=o.r_max,
            sides=tuple(o.sides) if o.sides else None,
            same_side_per_batch=o.same_side_per_batch,
        )
        return IdentityBatchSampler(
            source.labels, o.identities, o.images_per_identity, policy,
            seed=config.engine.seed, rank=rank, world_size=world_size,
        )


@register_objective("octuplet")
def _build_octuplet(config: TrainConfig, num_classes: int, embedding_size: int) -> Objective:
    assert config.finetune is not None
    settings = config.finetune.octuplet
    return OctupletObjective(margin=settings.margin, distance=settings.distance)
