"""The training objective: a softmax margin head (``models.heads``) and cross-entropy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from models.heads import create_head
from training.objectives.base import Batch, Objective, Stats
from training.objectives.registry import register_objective

if TYPE_CHECKING:
    from models.checkpoint import Checkpoint
    from training.config import TrainConfig


class MarginObjective(Objective):
    """A softmax margin head (``models.heads``) and cross-entropy over its logits.

    The head gets the Laplacian quality and the ``degraded`` flags of every sample; its
    per-sample stats (margins ...) and the top-1 accuracy of the logits are reported.

    Args:
        head: the margin head.
    """

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head
        self.name = str(getattr(head, "registered_name", "") or type(head).__name__)

    def forward(self, backbone: nn.Module, batch: Batch) -> tuple[torch.Tensor, Stats]:
        embeddings = backbone(batch["input"])
        labels = batch["label"]
        logits = self.head(
            embeddings.float(), labels, quality=batch["quality"], degraded=batch["degraded"]
        )
        loss = F.cross_entropy(logits.float(), labels)
        with torch.no_grad():
            stats: Stats = {
                "accuracy": (logits.argmax(dim=1) == labels).float().mean(),
                "embedding_norm": embeddings.float().norm(dim=1),
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
