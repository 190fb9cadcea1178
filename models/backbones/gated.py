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

Both branches run on every image (a data-dependent branch would not batch); the cost is
the sum of the two.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.backbones.dlib_resnet import DlibResNet
from models.backbones.registry import register_backbone


class QualityGated(nn.Module):
    """``sharp(x)`` where q(x) >= gate, else ``blurred(x)``; unit-length outputs.

    Args:
        sharp: the embedder for sharp inputs.
        blurred: the embedder for blurred inputs (same output space and size).
        gate: the quality threshold (mean |Laplacian| of the input in pixel units).
        input_size: side of the square input.
    """

    laplacian: torch.Tensor

    def __init__(self, sharp: nn.Module, blurred: nn.Module, gate: float,
                 input_size: int = 112) -> None:
        super().__init__()
        if gate < 0:
            raise ValueError(f"gate must be a non-negative quality, got {gate}")
        self.sharp = sharp
        self.blurred = blurred
        self.gate = float(gate)
        self.input_size = input_size
        kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
        # a fixed buffer (not models.quality_torch's kernel built from the input), so the
        # ONNX export sees a constant kernel; not saved in the state
        self.register_buffer("laplacian", kernel.view(1, 1, 3, 3).repeat(3, 1, 1, 1),
                             persistent=False)

    def quality(self, x: torch.Tensor) -> torch.Tensor:
        """q of house-normalised inputs, (N,): ``models.quality``'s mean |Laplacian| in
        pixel units with reflect-101 borders (inputs of at least 2x2 pixels)."""
        padded = F.pad(x * 127.5 + 127.5, (1, 1, 1, 1), mode="reflect")
        return F.conv2d(padded, self.laplacian, groups=3).abs().flatten(1).mean(dim=1)

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
    student) before use; ``experiments/gate.py`` builds it from a training checkpoint.
    """
    if embedding_size != 128 or dropout:
        raise ValueError("dlib-resnet29-gated has a 128-d output and no dropout")
    return QualityGated(DlibResNet(input_size=input_size), DlibResNet(input_size=input_size),
                        gate, input_size=input_size)
