"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``) in PyTorch.

The network of King's dlib face recogniser (public domain weights, PyPI
``face-recognition-models``), rebuilt so it can be fine-tuned as a student: a
29-convolution ResNet on a 150x150 face chip giving a 128-d descriptor (5.6 M parameters).
Facts of the architecture (dlib's published network definition and file format):

* input: RGB, ``(pixel - channel_mean) / 256`` with the channel means stored in the file;
* stem: Conv7x7/2 (no padding, with bias) -> affine -> ReLU -> MaxPool3x3/2 (no padding);
* residual unit: Conv3x3/s -> affine -> ReLU -> Conv3x3/1 -> affine, added to the
  shortcut, then ReLU. "affine" is a frozen batch norm (per-channel scale and shift).
  A stride-1 convolution pads 1; a stride-2 one pads 0. In a down-sampling unit the
  shortcut is AvgPool2x2/2 of the input; the sum takes the larger size in every
  dimension and zero-fills what one operand lacks (channels 32 -> 64, and the 3x3 vs 4x4
  maps of the 256-wide stage);
* stages (input side first): 3 units of 32; 1 down + 3 units of 64; 1 down + 2 of 128;
  1 down + 2 of 256; 1 down of 256; global average pool; FC 256 -> 128 without bias.

This module adds the house contract around it: the input is a 112x112 crop aligned like
every other backbone's (``(pixel - 127.5) / 127.5``, RGB), and a fixed framing step cuts
the region dlib's own alignment would chip out of such a crop (:data:`CHIP_BOX`, measured)
and resizes it to 150x150 before the network. Weights are read from dlib's ``.dat`` file
by :mod:`models.backbones.dlib_format`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from models.backbones.dlib_format import DlibFormatError, conv_weights, read_dlib_resnet
from models.backbones.registry import register_backbone

#: Side of dlib's face chip.
CHIP_SIZE = 150
#: dlib's channel means (red, green, blue), as stored in the released model file.
DLIB_MEAN: tuple[float, float, float] = (122.782, 117.001, 104.298)
#: Scale dlib divides by after subtracting the means.
DLIB_SCALE = 256.0
#: dlib's 150x150 chip (padding 0.25) as a box in the coordinates of a 112 crop of the
#: house alignment: mean of dlib's own chip rectangles on 300 random LFW images
#: (5-point landmarks from its rectangle rule in ``training.teacher``), mapped from the
#: deep-funneled 250x250 image through the LFW crop box (57, 49, 193, 185); angle
#: -1.5 +- 3.3 degrees, left out. It ends 6 px below the crop, filled by edge replication.
CHIP_BOX: tuple[int, int, int, int] = (10, 24, 104, 118)
#: Residual stages from the input side: (width, units, first unit down-samples).
STAGES: tuple[tuple[int, int, bool], ...] = (
    (32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True),
)


def _padded_sum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a + b`` over the larger size in every dimension, zero-filling the smaller operand."""
    if a.shape == b.shape:
        return a + b
    channels = max(a.shape[1], b.shape[1])
    height = max(a.shape[2], b.shape[2])
    width = max(a.shape[3], b.shape[3])

    def grow(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, width - t.shape[3], 0, height - t.shape[2], 0, channels - t.shape[1]))

    return grow(a) + grow(b)


class Affine(nn.Module):
    """Per-channel ``gamma * x + beta`` (dlib's inference form of batch norm)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1) + self.beta.view(1, -1, 1, 1)


class DlibUnit(nn.Module):
    """One residual unit; ``down`` halves the map (stride-2 conv, avg-pooled shortcut)."""

    def __init__(self, in_channels: int, out_channels: int, down: bool) -> None:
        super().__init__()
        stride, padding = (2, 0) if down else (1, 1)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=padding)
        self.affine1 = Affine(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1)
        self.affine2 = Affine(out_channels)
        self.down = down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(_padded_sum(out, shortcut))


class DlibResNet(nn.Module):
    """dlib's ResNet behind the house input contract (see the module docstring).

    Args:
        embedding_size: must be 128 (the released network's descriptor size).
        input_size: side of the aligned input crop (the framing scales with it).
        chip_box: the chip in 112-crop coordinates; ``None`` feeds the input to the
            network as it is (it must then be a dlib chip, e.g. for parity checks).
    """

    mean: torch.Tensor

    def __init__(
        self,
        embedding_size: int = 128,
        input_size: int = 112,
        chip_box: tuple[int, int, int, int] | None = CHIP_BOX,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.chip_box = None if chip_box is None else tuple(
            round(v * input_size / 112) for v in chip_box
        )
        self.register_buffer("mean", torch.tensor(DLIB_MEAN).view(1, 3, 1, 1))
        self.stem = nn.Conv2d(3, 32, 7, stride=2, padding=0)
        self.stem_affine = Affine(32)
        units: list[nn.Module] = []
        channels = 32
        for width, count, down in STAGES:
            for i in range(count):
                units.append(DlibUnit(channels, width, down and i == 0))
                channels = width
        self.units = nn.Sequential(*units)
        self.fc = nn.Linear(channels, embedding_size, bias=False)

    def frame(self, x: torch.Tensor) -> torch.Tensor:
        """Cuts :attr:`chip_box` out of aligned crops and resizes it to the chip size."""
        if self.chip_box is None:
            return x
        left, top, right, bottom = self.chip_box
        side_y, side_x = x.shape[2], x.shape[3]
        pad = (max(0, -left), max(0, right - side_x), max(0, -top), max(0, bottom - side_y))
        if any(pad):
            x = F.pad(x, pad, mode="replicate")
        x = x[:, :, top + pad[2] : bottom + pad[2], left + pad[0] : right + pad[0]]
        return F.interpolate(x, size=(CHIP_SIZE, CHIP_SIZE), mode="bilinear", align_corners=False)

    def features(self, chips: torch.Tensor) -> torch.Tensor:
        """The 128-d descriptor of dlib-normalised (N, 3, 150, 150) chips."""
        x = F.relu(self.stem_affine(self.stem(chips)))
        x = F.max_pool2d(x, 3, 2)
        x = self.units(x)
        return self.fc(x.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixels = x * 127.5 + 127.5  # back from the house normalisation
        chips = self.frame((pixels - self.mean) / DLIB_SCALE)
        return self.features(chips)

    def load_pretrained(self, path: str | Path) -> None:
        """Copies the weights of a dlib ``.dat`` model file into this network."""
        load_dlib_resnet(self, path)


@register_backbone("dlib-resnet29")
def dlib_resnet29(
    *,
    embedding_size: int = 128,
    dropout: float = 0.0,
    input_size: int = 112,
    framing: bool = True,
) -> DlibResNet:
    """dlib's face-recognition ResNet (29 convolutions, 128-d) on 112 aligned crops.

    ``framing=False`` takes 150x150 dlib chips instead (no crop, no resize).
    Initialise from dlib's released weights with ``load_pretrained`` (training config
    ``model.init_weights``).
    """
    if embedding_size != 128:
        raise ValueError(
            f"dlib-resnet29 has a 128-d descriptor, got embedding_size={embedding_size}"
        )
    if dropout:
        raise ValueError("dlib-resnet29 has no dropout layer; set dropout to 0")
    return DlibResNet(input_size=input_size, chip_box=CHIP_BOX if framing else None)


def load_dlib_resnet(network: DlibResNet, path: str | Path) -> None:
    """Copies a dlib ``.dat`` file's weights into a ``DlibResNet`` (in place).

    Raises:
        DlibFormatError: the file does not hold the expected layers and sizes.
    """
    mean, layers = read_dlib_resnet(path)
    convs = [m for m in network.modules() if isinstance(m, torch.nn.Conv2d)]
    affines = [m for m in network.modules() if isinstance(m, Affine)]
    found = {kind: [layer for layer in layers if layer.kind == kind]
             for kind in ("con", "affine", "fc")}
    if (len(found["con"]), len(found["affine"]), len(found["fc"])) != (len(convs), len(affines), 1):
        raise DlibFormatError(
            f"{path}: {len(found['con'])} conv / {len(found['affine'])} affine / "
            f"{len(found['fc'])} fc layers, the network has {len(convs)} / {len(affines)} / 1"
        )
    with torch.no_grad():
        network.mean.copy_(torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        for layer, conv in zip(found["con"], convs, strict=True):
            weights = conv_weights(layer, conv)
            conv.weight.copy_(weights["weight"])
            assert conv.bias is not None  # every conv of the network has a bias
            conv.bias.copy_(weights["bias"])
        for layer, affine in zip(found["affine"], affines, strict=True):
            channels = affine.gamma.numel()
            if layer.params.size != 2 * channels:
                raise DlibFormatError(
                    f"dlib affine has {layer.params.size} values, expected {2 * channels}"
                )
            affine.gamma.copy_(torch.from_numpy(layer.params[:channels].copy()))
            affine.beta.copy_(torch.from_numpy(layer.params[channels:].copy()))
        fc = found["fc"][0]
        outputs, inputs = fc.settings
        if (outputs, inputs) != (network.fc.out_features, network.fc.in_features) or \
                fc.params.size != outputs * inputs:
            raise DlibFormatError(f"dlib fc {fc.settings} with {fc.params.size} values does not "
                                  f"match {network.fc.in_features} -> {network.fc.out_features}")
        network.fc.weight.copy_(torch.from_numpy(fc.params.reshape(inputs, outputs).T.copy()))
