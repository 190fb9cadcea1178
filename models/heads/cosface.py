"""CosFace (Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face Recognition",
CVPR 2018)."""

from __future__ import annotations

import torch

from models.heads.base import MarginHead, Signals
from models.heads.registry import register_head


@register_head("cosface")
class CosFaceHead(MarginHead):
    """Additive cosine margin.

    logit_y = s (cos θ_y − m); logit_j = s cos θ_j for j ≠ y.

    Args:
        scale: s [64].
        margin: m [0.35].
    """

    def __init__(
        self, embedding_size: int, num_classes: int, scale: float = 64.0, margin: float = 0.35
    ) -> None:
        super().__init__(embedding_size, num_classes, scale)
        self.margin = margin

    def margin_target(self, cos_y: torch.Tensor, signals: Signals) -> torch.Tensor:
        return cos_y - self.margin
