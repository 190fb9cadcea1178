"""The base of every softmax margin head (METHODS §2 and §4).

It owns what all heads share, so a new head is a few dozen lines: the class centres
W (D x C), the normalisation of embeddings and centres, the clamped cosine and the
scale s. A head only says how the target logit (and, rarely, the others) is formed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

#: cos θ is clamped to [-1 + COS_EPS, 1 - COS_EPS] so acos and its gradient stay finite.
COS_EPS = 1e-7


def arc_margin_target(cos_target: torch.Tensor, margin: float | torch.Tensor) -> torch.Tensor:
    """ArcFace-form target cosine: cos(θ + m) while θ + m < π, else cos θ − m sin m.

    The fall-back keeps the target logit monotonically decreasing in θ past π − m,
    where cos(θ + m) would start to increase again. ``margin`` may be per sample.
    """
    margin = torch.as_tensor(margin, dtype=cos_target.dtype, device=cos_target.device)
    theta = torch.acos(cos_target)
    return torch.where(
        theta + margin < math.pi,
        torch.cos(theta + margin),
        cos_target - margin * torch.sin(margin),
    )


@dataclass(frozen=True)
class Signals:
    """Per-sample signals a margin may use besides the cosines, each (B,).

    Attributes:
        norms: the embedding norms ||z||.
        quality: the image quality q (given to every head, required by ``needs_quality``).
        degraded: the sampler's flags (required by ``needs_degraded``).
    """

    norms: torch.Tensor
    quality: torch.Tensor | None = None
    degraded: torch.Tensor | None = None


class MarginHead(nn.Module):
    """Class centres plus a margin on the target logit; the loss is CE over the logits.

    Subclasses implement :meth:`margin_target` (the target cosine after the margin), or
    :meth:`margin_logits` when the other logits change too. Heads that need the image quality q or
    the "degraded" flags set ``needs_quality`` / ``needs_degraded``; :meth:`forward`
    then refuses to run without them.

    Args:
        embedding_size: D.
        num_classes: C.
        scale: s, the logit scale (``None`` for heads scaled by ||z||, e.g. SphereFace).

    Attributes:
        weight: the class centres, (D, C); columns are L2-normalised at use.
        last_stats: detached per-sample tensors of the last forward for logging, e.g.
            ``{"margin": m_i}``; empty for heads with nothing to report.
    """

    needs_quality: ClassVar[bool] = False
    needs_degraded: ClassVar[bool] = False
    registered_name: ClassVar[str] = ""

    def __init__(self, embedding_size: int, num_classes: int, scale: float | None = 64.0) -> None:
        super().__init__()
        if embedding_size < 1 or num_classes < 2:
            raise ValueError(
                f"need embedding_size >= 1 and num_classes >= 2, got {embedding_size}, "
                f"{num_classes}"
            )
        if scale is not None and scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.embedding_size = embedding_size
        self.num_classes = num_classes
        self.scale = scale
        self.weight = nn.Parameter(torch.empty(embedding_size, num_classes))
        nn.init.normal_(self.weight, std=0.01)
        self.last_stats: dict[str, torch.Tensor] = {}

    def scaled(self, logits: torch.Tensor) -> torch.Tensor:
        """s · logits, for heads with a fixed scale s."""
        if self.scale is None:
            raise TypeError(f"{type(self).__name__} has no fixed scale")
        return self.scale * logits

    @property
    def last_margins(self) -> torch.Tensor | None:
        """Per-sample margins m_i of the last forward (heads with one), else ``None``."""
        return self.last_stats.get("margin")

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """cos θ (B, C) between the embeddings and the class centres, clamped."""
        # float32 even under autocast: the clamp margin 1e-7 is below half precision
        unit = F.normalize(embeddings.float(), dim=1)
        centres = F.normalize(self.weight.float(), dim=0)
        return (unit @ centres).clamp(-1.0 + COS_EPS, 1.0 - COS_EPS)

    @staticmethod
    def with_target(
        others: torch.Tensor, labels: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        """``others`` (B, C) with column ``labels[i]`` of row i replaced by ``target[i]``."""
        return others.scatter(1, labels.view(-1, 1), target.view(-1, 1).to(others.dtype))

    @staticmethod
    def target_column(cosine: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """cos θ_y (B,): the cosine of each sample to its own class."""
        return cosine.gather(1, labels.view(-1, 1)).squeeze(1)

    def _check_inputs(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        quality: torch.Tensor | None,
        degraded: torch.Tensor | None,
    ) -> None:
        name = type(self).__name__
        if embeddings.ndim != 2 or embeddings.shape[1] != self.embedding_size:
            raise ValueError(
                f"{name}: embeddings must be (B, {self.embedding_size}), "
                f"got {tuple(embeddings.shape)}"
            )
        batch = embeddings.shape[0]
        if labels.shape != (batch,) or labels.dtype != torch.long:
            raise ValueError(
                f"{name}: labels must be an int64 tensor of shape ({batch},), "
                f"got {labels.dtype} {tuple(labels.shape)}"
            )
        if self.needs_quality and quality is None:
            raise ValueError(
                f"{name} needs the per-sample image quality: call forward(embeddings, labels, "
                "quality=q) with q the Laplacian score (models.quality_torch)"
            )
        if self.needs_degraded and degraded is None:
            raise ValueError(
                f"{name} needs the per-sample 'degraded' flags of the cross-resolution "
                "sampler: call forward(embeddings, labels, degraded=flags)"
            )
        for field, value in (("quality", quality), ("degraded", degraded)):
            if value is not None and value.shape != (batch,):
                raise ValueError(
                    f"{name}: {field} must have shape ({batch},), got {tuple(value.shape)}"
                )

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        quality: torch.Tensor | None = None,
        degraded: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, C) for cross-entropy.

        Args:
            embeddings: raw backbone embeddings z (B, D), not normalised.
            labels: class indices y (B,), int64.
            quality: per-sample image quality q (B,), for quality-aware heads.
            degraded: per-sample bool flags of the cross-resolution sampler (B,).
        """
        self._check_inputs(embeddings, labels, quality, degraded)
        cosine = self.cosine(embeddings)
        norms = embeddings.float().norm(dim=1)
        return self.margin_logits(cosine, labels, Signals(norms, quality, degraded))

    def margin_logits(
        self, cosine: torch.Tensor, labels: torch.Tensor, signals: Signals
    ) -> torch.Tensor:
        """Logits from the clamped cosines (B, C) and the per-sample ``signals``.

        By default s cos θ_j, with the target column replaced by :meth:`margin_target`;
        heads that form the other logits differently (SphereFace) override this instead.
        """
        target = self.margin_target(self.target_column(cosine, labels), signals)
        return self.scaled(self.with_target(cosine, labels, target))

    def margin_target(self, cos_y: torch.Tensor, signals: Signals) -> torch.Tensor:
        """The target cosine (B,) after the margin, from cos θ_y (B,)."""
        raise NotImplementedError(
            f"{type(self).__name__} implements neither margin_target nor margin_logits"
        )

    def extra_repr(self) -> str:
        return f"embedding_size={self.embedding_size}, num_classes={self.num_classes}"
