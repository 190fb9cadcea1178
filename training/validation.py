"""Periodic validation during training, through the evaluation module (``training.eval``).

A validator is any callable ``validator(backbone, step) -> {name: value}``; the engine
calls it on rank 0 with the bare backbone and writes the values to TensorBoard and the
log. :class:`LFWValidator` scores LFW verification at chosen resolutions with the same
code as ``lrfr eval lfw``: the protocol from ``training.eval.datasets``, the degradation
and embedding cache of ``training.eval.runner``, the metrics of ``training.eval``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from training.eval.datasets import load_lfw
from training.eval.embedding import TorchModuleModel
from training.eval.protocols import PairProtocol, score_pairs
from training.eval.runner import EmbeddingStore, EvalSettings, load_faces
from training.faces import FaceLoader

logger = logging.getLogger(__name__)

Validator = Callable[[nn.Module, int], dict[str, float]]


class LFWValidator:
    """LFW verification accuracy of the current backbone at several resolutions.

    The pair images are decoded and cropped once, at construction; every call embeds
    them at each resolution (both images of a pair degraded to r, METHODS §7).

    Args:
        lfw_dir: the LFW folder.
        view: 1 (``pairsDevTest.txt``) or 2 (``pairs.txt``).
        resolutions: sides r (112 = untouched).
        limit_pairs: a balanced subset of this many pairs (``None``: all).
        batch_size: images per forward.
        device: where the backbone runs.
        protocol: use this protocol instead of loading LFW (tests, other pair sets).
        faces: the face loader (default: the LFW deep-funneled crop).
    """

    def __init__(
        self,
        lfw_dir: str | Path | None,
        *,
        view: int = 1,
        resolutions: Sequence[int] = (112, 28, 14, 7),
        limit_pairs: int | None = None,
        batch_size: int = 128,
        device: str | torch.device = "cpu",
        protocol: PairProtocol | None = None,
        faces: FaceLoader | None = None,
    ) -> None:
        if protocol is None:
            if lfw_dir is None:
                raise ValueError("LFWValidator needs lfw_dir or a protocol")
            protocol = load_lfw(lfw_dir, view)
        self.protocol = protocol.subset(limit_pairs)
        self.resolutions = tuple(int(r) for r in resolutions)
        self.settings = EvalSettings(
            resolutions=self.resolutions, batch_size=batch_size, progress=False
        )
        self.device = torch.device(device)
        started = time.perf_counter()
        self.faces = load_faces(
            self.protocol.images, faces or FaceLoader("lfw"), workers=2, progress=False
        )
        logger.info(
            "validation: %s, %d pairs, %d images decoded in %.1f s",
            self.protocol.name, self.protocol.pairs, len(self.faces),
            time.perf_counter() - started,
        )

    def __call__(self, backbone: nn.Module, step: int) -> dict[str, float]:
        was_training = backbone.training
        input_size = int(getattr(backbone, "input_size", 112))
        model = TorchModuleModel(
            backbone, name="validation", device=str(self.device), input_size=input_size
        )
        store = EmbeddingStore(model, self.faces, self.settings)
        values: dict[str, float] = {}
        try:
            for side in self.resolutions:
                left = store.get(side, self.protocol.left)
                summary, _ = score_pairs(self.protocol, left, store.get(side, self.protocol.right))
                values[f"lfw_{side}/accuracy"] = float(summary["accuracy"])  # type: ignore[arg-type]
                values[f"lfw_{side}/auc"] = float(summary["auc"])  # type: ignore[arg-type]
        finally:
            backbone.train(was_training)
        return values
