"""Reads dlib's serialised ResNet (``dlib_face_recognition_resnet_model_v1.dat``).

dlib's serialisation format (facts of the format, read with numpy only):

* integers: a control byte (low 4 bits: how many little-endian bytes follow; bit 7: the
  value is negative), then those bytes;
* scalars of type float: two integers, mantissa and exponent (value = m * 2**e);
* strings: an integer length, then the bytes;
* tensors: version (2), num_samples, k, nr, nc, then the values as little-endian float32.

Every layer of the network is written as its type name followed by its parameters; the
layers appear from the input side to the loss. This reader walks the file from one layer
name to the next and keeps what the network needs: the input's channel means, every
``con_`` (parameters, filter count and size, strides, padding), every ``affine_``
(gamma then beta) and the final ``fc_`` (output and input counts, then an
inputs x outputs matrix, no bias).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


class DlibFormatError(ValueError):
    """The file is not dlib's face-recognition ResNet in the expected format."""


@dataclass
class DlibLayer:
    """One parsed layer: its type, its parameter vector and its integer settings."""

    kind: str
    params: np.ndarray
    settings: tuple[int, ...] = ()


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def integer(self) -> int:
        if self.pos >= len(self.data):
            raise DlibFormatError("unexpected end of file")
        control = self.data[self.pos]
        size = control & 0x0F
        if size > 8:
            raise DlibFormatError(f"bad integer control byte {control:#x} at {self.pos}")
        raw = self.data[self.pos + 1 : self.pos + 1 + size]
        self.pos += 1 + size
        value = int.from_bytes(raw, "little")
        return -value if control & 0x80 else value

    def real(self) -> float:
        mantissa = self.integer()
        exponent = self.integer()
        return float(mantissa) * 2.0**exponent

    def tensor(self) -> np.ndarray:
        version = self.integer()
        if version != 2:
            raise DlibFormatError(f"tensor format version {version} is not supported (want 2)")
        shape = [self.integer() for _ in range(4)]
        count = int(np.prod(shape))
        end = self.pos + 4 * count
        if count < 0 or end > len(self.data):
            raise DlibFormatError(f"tensor of shape {shape} runs past the end of the file")
        values = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos)
        self.pos = end
        return values.astype(np.float32)


#: Layer names this reader understands (as written, with their format version suffix).
_NAMES = (b"input_rgb_image_sized", b"con_4", b"affine_", b"fc_2")
_NAME_PATTERN = re.compile(b"|".join(bytes([len(n)]) + re.escape(n) for n in _NAMES))


def read_dlib_resnet(path: str | Path) -> tuple[tuple[float, float, float], list[DlibLayer]]:
    """``(channel means, layers)`` of a dlib ResNet file, layers from the input side."""
    path = Path(path)
    data = path.read_bytes()
    if b"loss_metric_" not in data[:64]:
        raise DlibFormatError(f"{path} is not a dlib metric-learning network (no loss_metric_)")
    reader = _Reader(data)
    mean: tuple[float, float, float] | None = None
    layers: list[DlibLayer] = []
    while (match := _NAME_PATTERN.search(data, reader.pos)) is not None:
        name = match.group()[1:].decode()
        reader.pos = match.end()
        if name == "input_rgb_image_sized":
            mean = (reader.real(), reader.real(), reader.real())
        elif name == "con_4":
            params = reader.tensor()
            # num_filters, nr, nc, stride_y, stride_x, padding_y, padding_x
            settings = tuple(reader.integer() for _ in range(7))
            layers.append(DlibLayer("con", params, settings))
        elif name == "affine_":
            layers.append(DlibLayer("affine", reader.tensor()))
        else:
            settings = (reader.integer(), reader.integer())  # num_outputs, num_inputs
            layers.append(DlibLayer("fc", reader.tensor(), settings))
    if mean is None:
        raise DlibFormatError(f"{path} has no input_rgb_image_sized layer")
    return mean, layers


def conv_weights(layer: DlibLayer, conv: torch.nn.Conv2d) -> dict[str, torch.Tensor]:
    filters, rows, cols, stride_y, stride_x, pad_y, pad_x = layer.settings
    expected = (conv.out_channels, *conv.kernel_size, *conv.stride, *conv.padding)
    if (filters, rows, cols, stride_y, stride_x, pad_y, pad_x) != expected:
        raise DlibFormatError(
            f"dlib conv {layer.settings} does not match the network's conv {expected}"
        )
    weight_count = filters * conv.in_channels * rows * cols
    if layer.params.size != weight_count + filters:
        raise DlibFormatError(
            f"dlib conv has {layer.params.size} values, expected {weight_count + filters}"
        )
    weight = layer.params[:weight_count].reshape(filters, conv.in_channels, rows, cols)
    return {"weight": torch.from_numpy(weight.copy()),
            "bias": torch.from_numpy(layer.params[weight_count:].copy())}
