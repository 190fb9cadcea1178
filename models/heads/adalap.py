"""AdaLaP: AdaFace driven by the Laplacian image quality (ours, METHODS §4 "Beyond the
deck"); formulas of Kim et al., "AdaFace: Quality Adaptive Margin for Face
Recognition", CVPR 2022."""

from __future__ import annotations

import torch

from models.heads.adaface import AdaFaceHead
from models.heads.registry import register_head


@register_head("adalap")
class AdaLaPHead(AdaFaceHead):
    """AdaFace with n = log(q_i + ε_q), q the Laplacian score (``models.quality_torch``).

    Everything else is AdaFace's: running μ, σ of n (own buffers),
    ẑ = clip(h (n − μ) / (σ + ε), −1, 1), g_angle = −m ẑ, g_add = m + m ẑ,
    logit_y = s (cos(clip(θ_y + g_angle, ε, π − ε)) − g_add), logit_j = s cos θ_j.
    Sharp images (large q) get ẑ > 0, blurred ones ẑ < 0 (the ArcFace end).

    Initial statistics: on 112 px LFW centre crops, log q is about 2.0 ± 0.2 for the
    originals and 0.0 to 1.5 for crops degraded to 7 to 56 px; a batch half degraded
    has log q ≈ 1.3 ± 0.8. Hence ``init_mean=1.3``; ``init_std=5`` is deliberately wide
    so that ẑ ≈ 0 (CosFace) until the running statistics settle (a few hundred steps
    at t_α = 0.01), as AdaFace's own wide start (σ = 100 for norms near 20) does.

    Args:
        init_mean: initial μ [1.3].
        init_std: initial σ [5].
        quality_eps: ε_q inside the log [1e-6]; keeps a flat image (q = 0) finite.
        **adaface: ``scale``, ``margin``, ``h``, ``t_alpha`` and ``eps``, as
            :class:`AdaFaceHead` (same defaults).
    """

    needs_quality = True

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        *,
        init_mean: float = 1.3,
        init_std: float = 5.0,
        quality_eps: float = 1e-6,
        **adaface: float,
    ) -> None:
        super().__init__(
            embedding_size, num_classes, init_mean=init_mean, init_std=init_std, **adaface
        )
        if quality_eps <= 0:
            raise ValueError(f"quality_eps must be positive, got {quality_eps}")
        self.quality_eps = quality_eps

    def quality_signal(self, norms: torch.Tensor, quality: torch.Tensor | None) -> torch.Tensor:
        """n (B,) = log(q + ε_q)."""
        if quality is None:  # forward() already refuses this; kept for direct callers
            raise ValueError("AdaLaPHead needs the per-sample Laplacian quality q")
        return torch.log(quality.detach().float().clamp_min(0.0) + self.quality_eps)
