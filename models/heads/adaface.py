"""AdaFace (Kim et al., "AdaFace: Quality Adaptive Margin for Face Recognition",
CVPR 2022)."""

from __future__ import annotations

import math

import torch

from models.heads.base import MarginHead, Signals
from models.heads.registry import register_head


@register_head("adaface")
class AdaFaceHead(MarginHead):
    """Quality-adaptive margin with the embedding norm as the quality proxy.

    n = clip(||z||, 0.001, 100), detached. Running statistics (buffers, updated without
    gradient in training forwards): μ ← t_α mean(n) + (1 − t_α) μ,
    σ ← t_α std(n) + (1 − t_α) σ. Then ẑ = clip(h (n − μ) / (σ + ε), −1, 1),
    g_angle = −m ẑ, g_add = m + m ẑ and

    logit_y = s (cos(clip(θ_y + g_angle, ε, π − ε)) − g_add); logit_j = s cos θ_j.

    ẑ = −1 (low quality) is ArcFace(m), ẑ = 0 is CosFace(m), ẑ = 1 (high quality)
    shrinks the angle and adds 2m. Subclasses change the quality signal n only
    (:meth:`quality_signal`).

    Args:
        scale: s [64].
        margin: m [0.4].
        h: concentration of ẑ [0.333].
        t_alpha: momentum of the running statistics [0.01].
        eps: ε of the ẑ denominator and of the angle clip [1e-3].
        init_mean: initial μ [20].
        init_std: initial σ [100]; large, so ẑ ≈ 0 (CosFace) until the statistics settle.

    ``last_stats`` holds ``z_hat``, ``g_angle`` and ``g_add`` per sample.
    """

    running_mean: torch.Tensor
    running_std: torch.Tensor

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        scale: float = 64.0,
        margin: float = 0.4,
        h: float = 0.333,
        t_alpha: float = 0.01,
        eps: float = 1e-3,
        init_mean: float = 20.0,
        init_std: float = 100.0,
    ) -> None:
        super().__init__(embedding_size, num_classes, scale)
        if not 0.0 <= t_alpha <= 1.0:
            raise ValueError(f"t_alpha must be in [0, 1], got {t_alpha}")
        if init_std < 0:
            raise ValueError(f"init_std must be non-negative, got {init_std}")
        self.margin = margin
        self.h = h
        self.t_alpha = t_alpha
        self.eps = eps
        self.register_buffer("running_mean", torch.tensor(float(init_mean)))
        self.register_buffer("running_std", torch.tensor(float(init_std)))

    def quality_signal(self, norms: torch.Tensor, quality: torch.Tensor | None) -> torch.Tensor:
        """n (B,): the clipped embedding norm."""
        return norms.clamp(0.001, 100.0)

    @torch.no_grad()
    def _update_statistics(self, signal: torch.Tensor) -> None:
        self.running_mean.mul_(1.0 - self.t_alpha).add_(self.t_alpha * signal.mean())
        if signal.numel() > 1:  # the spread of a single sample is undefined
            self.running_std.mul_(1.0 - self.t_alpha).add_(self.t_alpha * signal.std())

    def margin_target(self, cos_y: torch.Tensor, signals: Signals) -> torch.Tensor:
        signal = self.quality_signal(signals.norms, signals.quality).detach().float()
        if self.training:
            self._update_statistics(signal)
        z_hat = self.h * (signal - self.running_mean) / (self.running_std + self.eps)
        z_hat = z_hat.clamp(-1.0, 1.0)
        g_angle = -self.margin * z_hat
        g_add = self.margin + self.margin * z_hat
        shifted = (torch.acos(cos_y) + g_angle).clamp(self.eps, math.pi - self.eps)
        self.last_stats = {"z_hat": z_hat, "g_angle": g_angle, "g_add": g_add}
        return torch.cos(shifted) - g_add
