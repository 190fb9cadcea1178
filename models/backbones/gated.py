"""A quality-gated pair of embedders: one for sharp faces, one for blurred ones.

The Laplacian quality q of the input crop (METHODS §3, the score the adaptive margin
uses in training) picks, per image, which network embeds it: ``sharp`` when
q >= ``gate``, else ``blurred``. Both must embed into the same space — here the
teacher (dlib's released network, untouched) and its resolution-robust student, which
was trained so that its embedding of a degraded face predicts the teacher's
descriptor of the sharp one. Comparisons across the gate (a sharp gallery photo against
a blurred probe) are therefore exactly the cross-resolution comparisons the student was
trained for, while sharp faces keep the teacher's accuracy. Each output is
L2-normalised before the choice, since the two networks' norms differ.

In torch both branches run on every image (a data-dependent branch would not batch);
the cost is the sum of the two. The exported ONNX graph does not pay it: ``lrfr export``
rewrites it so each image runs only its branch (``models.branch_only``, same outputs).
"""

from __future__ import annotations

import torch
from torch import nn

from models.backbones.dlib_resnet import DlibResNet
from models.backbones.registry import register_backbone
from models.quality_torch import LaplacianQuality


class QualityGated(nn.Module):
    """``sharp(x)`` where q(x) >= gate, else ``blurred(x)``; unit-length outputs.

    Args:
        sharp: the embedder for sharp inputs.
        blurred: the embedder for blurred inputs (same output space and size).
        gate: the quality threshold (mean |Laplacian| of the input in pixel units).
        input_size: side of the square input.
    """


    def __init__(self, sharp: nn.Module, blurred: nn.Module, gate: float,
                 input_size: int = 112) -> None:
        super().__init__()
        if gate < 0:
            raise ValueError(f"gate must be a non-negative quality, got {gate}")
        self.sharp = sharp
        self.blurred = blurred
        self.gate = float(gate)
        self.input_size = input_size
        self.laplacian = LaplacianQuality(channels=3)  # its kernel is not saved in the state

    def quality(self, x: torch.Tensor) -> torch.Tensor:
        """q of house-normalised inputs, (N,): ``models.quality``'s mean |Laplacian| in
        pixel units with reflect-101 borders (inputs of at least 2x2 pixels)."""
        return self.laplacian(x * 127.5 + 127.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sharp = nn.functional.normalize(self.sharp(x), dim=1)
        blurred = nn.functional.normalize(self.blurred(x), dim=1)
        use_sharp = (self.quality(x) >= self.gate).unsqueeze(1)
        return torch.where(use_sharp, sharp, blurred)


@register_backbone("dlib-resnet29-gated")
def dlib_resnet29_gated(
    *,
    embedding_size: int = 128,
    dropout: float = 0.0,
    input_size: int = 112,
    gate: float = 4.0,
) -> QualityGated:
    """dlib's network for sharp crops, a fine-tuned copy for blurred ones (q < ``gate``).

    Load the state of both (``sharp.*``: dlib's released weights, ``blurred.*``: the
    student) before use; ``lrfr gate`` (``training.gate``) builds it from a training checkpoint.
    """
    if embedding_size != 128 or dropout:
        raise ValueError("dlib-resnet29-gated has a 128-d output and no dropout")
    return QualityGated(DlibResNet(input_size=input_size), DlibResNet(input_size=input_size),
                        gate, input_size=input_size)
