"""Approach 2, Laplacian-adaptive margin (the seed deck's "Proposed method 2",
METHODS §4), in the ArcFace form of Deng et al., CVPR 2019."""

from __future__ import annotations

import torch

from models.heads.base import MarginHead, Signals, arc_margin_target
from models.heads.registry import register_head


@register_head("approach2")
class LaplacianMarginHead(MarginHead):
    """ArcFace with a margin that grows as the image gets blurrier.

    m_i = clip(κ / (q_i + ε), m_min, m_max), q_i the Laplacian score (detached);
    logit_y = s cos(θ_y + m_i) (with ArcFace's fall-back past π); logit_j = s cos θ_j.
    The clip is required: unclipped, a flat image (q = 0) gets an unbounded margin and a
    sharp one almost none.

    Args:
        scale: s [64].
        kappa: κ [1].
        eps: ε [1e-6].
        margin_min: m_min [0.35].
        margin_max: m_max [0.5].

    ``last_stats["margin"]`` (also ``last_margins``) holds m_i.
    """

    needs_quality = True

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        scale: float = 64.0,
        kappa: float = 1.0,
        eps: float = 1e-6,
        margin_min: float = 0.35,
        margin_max: float = 0.5,
    ) -> None:
        super().__init__(embedding_size, num_classes, scale)
        if margin_min > margin_max:
            raise ValueError(f"margin_min {margin_min} exceeds margin_max {margin_max}")
        if kappa < 0 or eps <= 0:
            raise ValueError(f"need kappa >= 0 and eps > 0, got {kappa}, {eps}")
        self.kappa = kappa
        self.eps = eps
        self.margin_min = margin_min
        self.margin_max = margin_max

    def sample_margins(self, quality: torch.Tensor) -> torch.Tensor:
        """m_i (B,) for the qualities q (B,)."""
        q = quality.detach().float().clamp_min(0.0)
        return (self.kappa / (q + self.eps)).clamp(self.margin_min, self.margin_max)

    def margin_target(self, cos_y: torch.Tensor, signals: Signals) -> torch.Tensor:
        quality = signals.quality
        assert quality is not None  # guaranteed by forward(); narrows the type
        margins = self.sample_margins(quality.to(cos_y.device))
        self.last_stats = {"margin": margins}
        return arc_margin_target(cos_y, margins)
