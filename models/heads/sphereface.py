"""SphereFace / A-Softmax (Liu et al., "SphereFace: Deep Hypersphere Embedding for Face
Recognition", CVPR 2017)."""

from __future__ import annotations

import math

import torch

from models.heads.base import MarginHead, Signals
from models.heads.registry import register_head


def sphere_psi(theta: torch.Tensor, margin: int) -> torch.Tensor:
    """ψ(θ) = (−1)^k cos(mθ) − 2k with k = floor(mθ/π): continuous and decreasing on [0, π]."""
    k = torch.floor(margin * theta / math.pi)
    sign = 1.0 - 2.0 * torch.remainder(k, 2.0)
    return sign * torch.cos(margin * theta) - 2.0 * k


@register_head("sphereface")
class SphereFaceHead(MarginHead):
    """Multiplicative angular margin, scaled by the embedding norm.

    logit_y = ||z|| (λ cos θ_y + ψ(θ_y)) / (1 + λ), ψ as in :func:`sphere_psi`;
    logit_j = ||z|| cos θ_j for j ≠ y. The annealing weight
    λ = max(λ_min, λ_base / (1 + γ · iteration)) starts near pure softmax and decays to
    λ_min; ``iteration`` is a buffer (saved with the checkpoint) that every training
    forward increments after use. Evaluation forwards use the current λ.

    Args:
        margin: m [4], a positive integer (m = 1 is plain ||z||-scaled softmax).
        lambda_min: λ_min [5].
        lambda_base: λ_base [1500].
        gamma: γ [0.1].
    """

    iteration: torch.Tensor

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        margin: int = 4,
        lambda_min: float = 5.0,
        lambda_base: float = 1500.0,
        gamma: float = 0.1,
    ) -> None:
        super().__init__(embedding_size, num_classes, scale=None)
        if int(margin) != margin or margin < 1:
            raise ValueError(f"SphereFace margin must be a positive integer, got {margin}")
        if lambda_min < 0 or lambda_base < 0 or gamma < 0:
            raise ValueError("lambda_min, lambda_base and gamma must be non-negative")
        self.margin = int(margin)
        self.lambda_min = lambda_min
        self.lambda_base = lambda_base
        self.gamma = gamma
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))

    def current_lambda(self) -> float:
        """λ at the current iteration count."""
        annealed = self.lambda_base / (1.0 + self.gamma * float(self.iteration))
        return max(self.lambda_min, annealed)

    def margin_logits(
        self, cosine: torch.Tensor, labels: torch.Tensor, signals: Signals
    ) -> torch.Tensor:
        lam = self.current_lambda()
        cos_y = self.target_column(cosine, labels)
        psi = sphere_psi(torch.acos(cos_y), self.margin)
        target = (lam * cos_y + psi) / (1.0 + lam)
        if self.training:
            self.iteration += 1
        self.last_stats = {"lambda": torch.tensor(lam)}
        return signals.norms.view(-1, 1) * self.with_target(cosine, labels, target)
