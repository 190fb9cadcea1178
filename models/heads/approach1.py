"""Approach 1, resolution-aware margin (the seed deck's "Proposed method 1", METHODS §4),
in the ArcFace form of Deng et al., CVPR 2019."""

from __future__ import annotations

import torch

from models.heads.base import MarginHead, Signals, arc_margin_target
from models.heads.registry import register_head


@register_head("approach1")
class ResolutionAwareMarginHead(MarginHead):
    """ArcFace with a larger margin on the samples the cross-resolution sampler degraded.

    m_i = m_lr if sample i was degraded else m_hr;
    logit_y = s cos(θ_y + m_i) (with ArcFace's fall-back past π); logit_j = s cos θ_j.

    Args:
        scale: s [64].
        margin_hr: m_hr [0.35], for untouched (high-resolution) samples.
        margin_lr: m_lr [0.5], for degraded samples.

    ``last_stats["margin"]`` (also ``last_margins``) holds m_i.
    """

    needs_degraded = True

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        scale: float = 64.0,
        margin_hr: float = 0.35,
        margin_lr: float = 0.5,
    ) -> None:
        super().__init__(embedding_size, num_classes, scale)
        self.margin_hr = margin_hr
        self.margin_lr = margin_lr

    def margin_target(self, cos_y: torch.Tensor, signals: Signals) -> torch.Tensor:
        degraded = signals.degraded
        assert degraded is not None  # guaranteed by forward(); narrows the type
        flags = degraded.to(device=cos_y.device, dtype=torch.bool)
        margins = torch.where(
            flags, cos_y.new_tensor(self.margin_lr), cos_y.new_tensor(self.margin_hr)
        )
        self.last_stats = {"margin": margins.detach()}
        return arc_margin_target(cos_y, margins)
