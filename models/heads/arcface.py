"""ArcFace (Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face
Recognition", CVPR 2019)."""

from __future__ import annotations

import torch

from models.heads.base import MarginHead, Signals, arc_margin_target
from models.heads.registry import register_head


@register_head("arcface")
class ArcFaceHead(MarginHead):
    """Additive angular margin.

    logit_y = s cos(θ_y + m) when θ_y + m < π, else s (cos θ_y − m sin m) (the monotonic
    fall-back); logit_j = s cos θ_j for j ≠ y.

    Args:
        scale: s [64].
        margin: m [0.5], in radians.
    """

    def __init__(
        self, embedding_size: int, num_classes: int, scale: float = 64.0, margin: float = 0.5
    ) -> None:
        super().__init__(embedding_size, num_classes, scale)
        self.margin = margin

    def margin_target(self, cos_y: torch.Tensor, signals: Signals) -> torch.Tensor:
        return arc_margin_target(cos_y, self.margin)
