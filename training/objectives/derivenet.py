"""DeriveNet (Singh, Nagpal, Singh, Vatsa: "Derivenet for (Very) Low Resolution Image
Classification", TPAMI 2022), METHODS §6.

**Reconstruction**: the paper's full text was not available; this follows the
reconstruction fixed in METHODS §6, not the authors' code.

* (a) Derived-Margin softmax over the L2-normalised embeddings e and class weights W:
  logit_y = s cos θ_y; logit_j = s cos θ_j + α max(0, cos(C_y, C_j)) for j ≠ y, with
  C_c per-class centres of the reconstruction space (EMA, detached). Classes whose
  reconstructions look alike get a larger inter-class margin.
* (b) ReCent loss λ (||HR_i − g(z_i)||² + ||g(z_i) − C_{y_i}||²), g a small decoder from
  the embedding z_i of the low-resolution image to its high-resolution target: the HR
  embedding (``target="embedding"``, L2-normalised, detached) or a small HR thumbnail
  (``target="image"``).
* (c) A multi-resolution pyramid: each sample's low-resolution copy is drawn from
  sides such as 8/16/24/32 px, upsampled to the input (planned by the batch sampler).

The softmax sees both the HR and the LR embeddings. Every trainable part (backbone,
W, decoder) is in the optimiser; the centres C are buffers updated without gradient.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from training.config import DeriveNetConfig
from training.data import FaceSource, ResolutionPolicy
from training.objectives.base import Batch, Objective, Stats, cross_resolution_sampler
from training.objectives.registry import register_objective

if TYPE_CHECKING:
    from models.checkpoint import Checkpoint
    from training.config import TrainConfig

logger = logging.getLogger(__name__)


class DeriveNetObjective(Objective):
    """Derived-Margin softmax + ReCent loss over HR and pyramid-LR copies.

    Args:
        embedding_size: D.
        num_classes: C.
        settings: s, α, the centre momentum μ (of the EMA
            ``C_c ← μ C_c + (1 − μ) mean g(z_i)`` over class c), λ, the hidden width of g,
            the target and the thumbnail side (the config's ``finetune.derivenet``; its
            defaults when not given).
    """

    centres: torch.Tensor
    centre_seen: torch.Tensor

    needs_hr = True

    def __init__(
        self, embedding_size: int, num_classes: int, settings: DeriveNetConfig | None = None
    ) -> None:
        super().__init__()
        self.name = "derivenet"
        self.settings = settings = settings or DeriveNetConfig()
        side = settings.image_side
        out = embedding_size if settings.target == "embedding" else 3 * side * side
        self.weight = nn.Parameter(torch.empty(embedding_size, num_classes))
        nn.init.normal_(self.weight, std=0.01)
        hidden = settings.decoder_hidden
        self.decoder = nn.Sequential(
            nn.Linear(embedding_size, hidden),
            nn.BatchNorm1d(hidden),
            nn.PReLU(hidden),
            nn.Linear(hidden, out),
        )
        self.register_buffer("centres", torch.zeros(num_classes, out))
        self.register_buffer("centre_seen", torch.zeros(num_classes, dtype=torch.bool))

    def derived_logits(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Derived-Margin softmax logits (B, C)."""
        cosine = F.normalize(embeddings.float(), dim=1) @ F.normalize(self.weight.float(), dim=0)
        centres = F.normalize(self.centres, dim=1)  # unseen classes: zero rows -> cos 0
        similarity = (centres[labels] @ centres.T).clamp_min(0.0)
        not_target = torch.ones_like(similarity).scatter(1, labels.view(-1, 1), 0.0)
        return self.settings.scale * cosine + self.settings.alpha * similarity * not_target

    def _targets(self, batch: Batch, hr_embeddings: torch.Tensor) -> torch.Tensor:
        if self.settings.target == "embedding":
            return F.normalize(hr_embeddings.detach().float(), dim=1)
        side = self.settings.image_side
        thumbs = F.interpolate(batch["hr_input"].float(), size=(side, side), mode="area")
        return thumbs.flatten(1)

    @torch.no_grad()
    def _update_centres(self, reconstructions: torch.Tensor, labels: torch.Tensor) -> None:
        sums = torch.zeros_like(self.centres).index_add_(0, labels, reconstructions)
        counts = torch.bincount(labels, minlength=self.centres.shape[0]).to(sums.dtype)
        present = counts > 0
        means = sums[present] / counts[present].unsqueeze(1)
        momentum = torch.where(self.centre_seen[present], self.settings.centre_momentum, 0.0)
        self.centres[present] = momentum.unsqueeze(1) * self.centres[present] + (
            1.0 - momentum.unsqueeze(1)
        ) * means
        self.centre_seen[present] = True

    def forward(self, backbone: nn.Module, batch: Batch) -> tuple[torch.Tensor, Stats]:
        labels = batch["label"]
        batch_size = labels.shape[0]
        embeddings = backbone(torch.cat([batch["hr_input"], batch["input"]])).float()
        hr, lr = embeddings[:batch_size], embeddings[batch_size:]
        both_labels = torch.cat([labels, labels])
        logits = self.derived_logits(embeddings, both_labels)
        softmax_loss = F.cross_entropy(logits, both_labels)
        reconstructions = self.decoder(lr)
        if self.settings.target == "embedding":
            reconstructions = F.normalize(reconstructions, dim=1)
        targets = self._targets(batch, hr)
        reconstruction = (reconstructions - targets).pow(2).sum(dim=1)
        centre = (reconstructions - self.centres[labels]).pow(2).sum(dim=1)
        centre = torch.where(self.centre_seen[labels], centre, torch.zeros_like(centre))
        recent_loss = (reconstruction + centre).mean()
        if self.training:
            self._update_centres(reconstructions.detach(), labels)
        loss = softmax_loss + self.settings.recent_weight * recent_loss
        with torch.no_grad():
            stats: Stats = {
                "softmax_loss": softmax_loss.detach(),
                "recent_loss": recent_loss.detach(),
                "accuracy": (logits.argmax(dim=1) == both_labels).float().mean(),
                "hr_lr_cosine": F.cosine_similarity(hr, lr, dim=1),
            }
        return loss, stats

    def sampler(
        self, source: FaceSource, config: TrainConfig, *, rank: int, world_size: int
    ) -> Any:
        """Every sample degraded to a side of the pyramid (``finetune.derivenet.pyramid``)."""
        assert config.finetune is not None
        policy = ResolutionPolicy(fraction=1.0, sides=tuple(config.finetune.derivenet.pyramid))
        return cross_resolution_sampler(source, config, policy, rank=rank, world_size=world_size)

    def start_from(self, start: Checkpoint) -> bool:
        """W starts from the class centres of the checkpoint's head, when they fit."""
        weight = (start.get("head_state") or {}).get("weight")
        if weight is None or not self.init_weight_from(weight):
            return False
        logger.info("class centres initialised from the checkpoint's head")
        return True

    def init_weight_from(self, weight: torch.Tensor) -> bool:
        """Starts W from a trained head's class centres when the shapes agree."""
        if weight.shape != self.weight.shape:
            return False
        with torch.no_grad():
            self.weight.copy_(weight)
        return True


@register_objective("derivenet")
def _build_derivenet(config: TrainConfig, num_classes: int, embedding_size: int) -> Objective:
    assert config.finetune is not None
    return DeriveNetObjective(embedding_size, num_classes, config.finetune.derivenet)
