"""IR-ResNets for faces (METHODS §1): IR-18/34/50/100 from one code path.

Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face Recognition", CVPR 2019
(the "improved residual" unit and the BN-Dropout-FC-BN output block); He et al.,
"Identity Mappings in Deep Residual Networks", ECCV 2016 (pre-activation ordering).

Unit: BN -> Conv3x3 -> BN -> PReLU -> Conv3x3(stride) -> BN, plus a shortcut that is the
identity, MaxPool(1, stride) when only the resolution changes, or Conv1x1(stride) + BN
when the channels change. Stages of widths 64/128/256/512, stride 2 in the first unit of
each. Stem: Conv3x3 (stride 1) -> BN -> PReLU. Output: BN2d -> Dropout -> Flatten ->
FC(512 * 7 * 7 -> D) -> BN1d. The forward returns the raw embedding z, not normalised,
so ||z|| stays available to norm-aware heads (AdaFace, SphereFace).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from models.backbones.registry import register_backbone

STAGE_WIDTHS: tuple[int, int, int, int] = (64, 128, 256, 512)


class IRBlock(nn.Module):
    """One improved residual unit; ``stride`` applies to its second convolution."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, out_channels, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.PReLU(out_channels),
            nn.Conv2d(out_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut: nn.Module
        if in_channels == out_channels:
            # a 1x1 max-pool with stride s is plain subsampling: no parameters
            self.shortcut = nn.MaxPool2d(1, stride) if stride > 1 else nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(x) + self.shortcut(x)


def _output_side(input_size: int, stages: int) -> int:
    """Feature-map side after ``stages`` stride-2 3x3 convolutions with padding 1."""
    side = input_size
    for _ in range(stages):
        side = (side - 1) // 2 + 1
    return side


class IResNet(nn.Module):
    """An IR-ResNet returning raw embeddings.

    Args:
        blocks: units per stage, e.g. ``(3, 4, 14, 3)`` for IR-50.
        embedding_size: D, the size of the output embedding.
        dropout: dropout probability before the FC layer.
        input_size: side of the square input (112 gives a 7x7 final feature map).
        widths: channels of the four stages.
    """

    def __init__(
        self,
        blocks: Sequence[int],
        *,
        embedding_size: int = 512,
        dropout: float = 0.0,
        input_size: int = 112,
        widths: Sequence[int] = STAGE_WIDTHS,
    ) -> None:
        super().__init__()
        if len(blocks) != len(widths) or any(b < 1 for b in blocks):
            raise ValueError(f"need one positive block count per stage, got {list(blocks)}")
        if embedding_size < 1:
            raise ValueError(f"embedding_size must be positive, got {embedding_size}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if input_size < 16:
            raise ValueError(f"input_size must be at least 16, got {input_size}")
        self.embedding_size = embedding_size
        self.input_size = input_size
        stem_width = widths[0]
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem_width, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.PReLU(stem_width),
        )
        units: list[nn.Module] = []
        in_channels = stem_width
        for count, width in zip(blocks, widths, strict=True):
            for index in range(count):
                units.append(IRBlock(in_channels, width, stride=2 if index == 0 else 1))
                in_channels = width
        self.body = nn.Sequential(*units)
        side = _output_side(input_size, len(widths))
        self.output = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Dropout(dropout),
            nn.Flatten(),
            nn.Linear(in_channels * side * side, embedding_size),
            nn.BatchNorm1d(embedding_size),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw embeddings z (N, D) of a normalised (N, 3, H, W) batch."""
        return self.output(self.body(self.stem(x)))


def _scaled_widths(width_multiplier: float) -> tuple[int, ...]:
    if width_multiplier <= 0:
        raise ValueError(f"width_multiplier must be positive, got {width_multiplier}")
    return tuple(max(1, round(w * width_multiplier)) for w in STAGE_WIDTHS)


def _builder(blocks: tuple[int, int, int, int], doc: str, widths: float = 1.0):
    def build(
        *,
        embedding_size: int = 512,
        dropout: float = 0.0,
        input_size: int = 112,
        width_multiplier: float = widths,
    ) -> IResNet:
        return IResNet(
            blocks,
            embedding_size=embedding_size,
            dropout=dropout,
            input_size=input_size,
            widths=_scaled_widths(width_multiplier),
        )

    build.__doc__ = doc + " ``width_multiplier`` scales the stage widths (1.0 = paper)."
    return build


ir18 = register_backbone("ir18")(_builder((2, 2, 2, 2), "IR-18: blocks [2, 2, 2, 2]."))
ir34 = register_backbone("ir34")(_builder((3, 4, 6, 3), "IR-34: blocks [3, 4, 6, 3]."))
ir50 = register_backbone("ir50")(_builder((3, 4, 14, 3), "IR-50: blocks [3, 4, 14, 3]."))
ir100 = register_backbone("ir100")(_builder((3, 13, 30, 3), "IR-100: blocks [3, 13, 30, 3]."))
ir_tiny = register_backbone("ir-tiny")(_builder(
    (1, 1, 1, 1),
    "A test-sized IR net: one unit per stage, widths 8/16/32/64 (about 0.2 M parameters at "
    "112x112 and D=32). Same code path as IR-50, so it exercises the real layers; use it "
    "for fast tests and smoke runs, never for results.",
    widths=0.125,
))
