"""Softmax margin heads (METHODS §2 and §4) behind a registry.

``create_head("arcface", embedding_size=512, num_classes=C, margin=0.5)`` returns a
:class:`MarginHead`; ``forward(embeddings, labels, quality=None, degraded=None)`` gives the
logits (B, C) for cross-entropy. One head per module; all share :class:`MarginHead`.

Registered: ``cosface``, ``arcface``, ``sphereface``, ``adaface``, ``adalap`` (needs
``quality``), ``approach1`` (needs ``degraded``), ``approach2`` (needs ``quality``).
"""

from __future__ import annotations

from models.heads.adaface import AdaFaceHead
from models.heads.adalap import AdaLaPHead
from models.heads.approach1 import ResolutionAwareMarginHead
from models.heads.approach2 import LaplacianMarginHead
from models.heads.arcface import ArcFaceHead
from models.heads.base import COS_EPS, MarginHead, Signals, arc_margin_target
from models.heads.cosface import CosFaceHead
from models.heads.registry import create_head, head_class, head_params, list_heads, register_head
from models.heads.sphereface import SphereFaceHead, sphere_psi

__all__ = [
    "COS_EPS",
    "AdaFaceHead",
    "AdaLaPHead",
    "ArcFaceHead",
    "CosFaceHead",
    "LaplacianMarginHead",
    "MarginHead",
    "ResolutionAwareMarginHead",
    "Signals",
    "SphereFaceHead",
    "arc_margin_target",
    "create_head",
    "head_class",
    "head_params",
    "list_heads",
    "register_head",
    "sphere_psi",
]
