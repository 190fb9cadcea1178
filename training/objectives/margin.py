"""The training objective: a softmax margin head (``models.heads``) and cross-entropy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from models.heads import create_head
from training.data.sources import UNLABELLED
from training.objectives.base import Batch, Objective, Stats
from training.objectives.registry import register_objective

if TYPE_CHECKING:
    from models.checkpoint import Checkpoint
    from training.config import TrainConfig


class MarginObjective(Objective):
    """A softmax margin head (``models.heads``) and cross-entropy over its logits.

    The head gets the Laplacian quality and the ``degraded`` flags of every sample; its
    per-sample stats (margins ...) and the top-1 accuracy of the logits are reported.
    Samples without an identity (label :data:`~training.data.sources.UNLABELLED`, from
    ``data.unlabelled``) are left out of the head and the loss; a batch without any
    labelled sample gives a zero loss (still a graph over the backbone, for DDP).

    Args:
        head: the margin head.
    """

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head
        self.name = str(getattr(head, "registered_name", "") or type(head).__name__)

    def forward(self, backbone: nn.Module, batch: Batch) -> tuple[torch.Tensor, Stats]:
        all_embeddings = backbone(batch["input"])
        labelled = batch["label"] != UNLABELLED
        if not bool(labelled.any()):
            zero = all_embeddings.float().sum() * 0.0
            return zero, {"embedding_norm": all_embeddings.detach().float().norm(dim=1)}
        every = bool(labelled.all())
        embeddings = all_embeddings if every else all_embeddings[labelled]
        labels = batch["label"] if every else batch["label"][labelled]
        quality = batch["quality"] if every else batch["quality"][labelled]
        degraded = batch["degraded"] if every else batch["degraded"][labelled]
        logits = self.head(embeddings.float(), labels, quality=quality, degraded=degraded)
        loss = F.cross_entropy(logits.float(), labels)
        with torch.no_grad():
            stats: Stats = {
                "accuracy": (logits.argmax(dim=1) == labels).float().mean(),
                "embedding_norm": all_embeddings.float().norm(dim=1),
            }
            for key, value in getattr(self.head, "last_stats", {}).items():
                stats[key] = value.detach()
            fixed = getattr(self.head, "margin", None)
            if "margin" not in stats and isinstance(fixed, int | float):
                # constant-margin heads: log m so runs of all heads share the scalar
                stats["margin"] = torch.full_like(labels, float(fixed), dtype=torch.float32)
        return loss, stats

    def checkpoint_state(self) -> dict[str, Any]:
        """The head's state: ``head_state["weight"]`` is the class centres."""
        return self.head.state_dict()

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        self.head.load_state_dict(state)

    def recorded_name(self, start: Checkpoint | None) -> str:
        return self.name


@register_objective("margin")
def _build_margin(config: TrainConfig, num_classes: int, embedding_size: int) -> Objective:
    head = create_head(config.head.name, embedding_size, num_classes, **config.head.params)
    return MarginObjective(head)
