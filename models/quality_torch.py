"""The Laplacian quality score (METHODS §3) in torch: batched, on any device.

Same definition as ``models.quality`` (numpy, whose ``LAPLACIAN_KERNEL`` this uses):
q = mean |L| per image over pixels and channels, pixel values in [0, 255],
BORDER_REFLECT_101 borders. The training engine scores its batches with
:func:`laplacian_quality_torch`; graphs that gate on q (``models.backbones.gated``) hold a
:class:`LaplacianQuality` module, whose kernel is a constant of the exported graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.quality import LAPLACIAN_KERNEL


def _kernel(channels: int, dtype: torch.dtype, device: torch.device | None = None) -> torch.Tensor:
    """The 3x3 Laplacian kernel once per channel, (channels, 1, 3, 3), for a grouped conv."""
    kernel = torch.as_tensor(LAPLACIAN_KERNEL, dtype=dtype, device=device)
    return kernel.view(1, 1, 3, 3).expand(channels, 1, 3, 3)


def _reflect101(x: torch.Tensor) -> torch.Tensor:
    """Pads H and W by one pixel, reflect-101 (F.pad's "reflect"); a side of length 1 can
    only repeat itself."""
    h, w = x.shape[-2], x.shape[-1]
    if h > 1 and w > 1:
        return F.pad(x, (1, 1, 1, 1), mode="reflect")
    padded = F.pad(x, (0, 0, 1, 1), mode="reflect" if h > 1 else "replicate")
    return F.pad(padded, (1, 1, 0, 0), mode="reflect" if w > 1 else "replicate")


def laplacian_torch(images: torch.Tensor) -> torch.Tensor:
    """Laplacian response of an (N, C, H, W) batch, same shape and dtype float32 or wider."""
    if images.ndim != 4:
        raise ValueError(f"expected an (N, C, H, W) batch, got shape {tuple(images.shape)}")
    x = images if images.is_floating_point() else images.float()
    channels = x.shape[1]
    return F.conv2d(_reflect101(x), _kernel(channels, x.dtype, x.device), groups=channels)


def laplacian_quality_torch(images: torch.Tensor) -> torch.Tensor:
    """Per-image q = mean |L| of an (N, C, H, W) batch in [0, 255]; returns shape (N,)."""
    return laplacian_torch(images).abs().flatten(1).mean(dim=1)


def laplacian_variance_torch(images: torch.Tensor) -> torch.Tensor:
    """Per-image var(L) (population variance, as numpy's) of an (N, C, H, W) batch."""
    return laplacian_torch(images).flatten(1).var(dim=1, unbiased=False)


class LaplacianQuality(nn.Module):
    """q = mean |L| per image of float (N, ``channels``, H >= 2, W >= 2) pixels in [0, 255].

    The kernel is a fixed buffer (not part of the saved state), so an ONNX export sees a
    constant rather than a kernel built from the input.
    """

    kernel: torch.Tensor

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.register_buffer("kernel", _kernel(channels, torch.float32).contiguous(),
                             persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # one reflect-101 pad: sides of at least 2 pixels, and no shape test in the graph
        padded = F.pad(images, (1, 1, 1, 1), mode="reflect")
        response = F.conv2d(padded, self.kernel, groups=self.kernel.shape[0])
        return response.abs().flatten(1).mean(dim=1)
