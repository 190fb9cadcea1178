"""The Laplacian quality score (METHODS §3) in torch: batched, on any device.

Same definition as ``models.quality`` (numpy): q = mean |L| per image over pixels and
channels, pixel values in [0, 255], BORDER_REFLECT_101 borders.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def laplacian_torch(images: torch.Tensor) -> torch.Tensor:
    """Laplacian response of an (N, C, H, W) batch, same shape and dtype float32 or wider."""
    if images.ndim != 4:
        raise ValueError(f"expected an (N, C, H, W) batch, got shape {tuple(images.shape)}")
    x = images if images.is_floating_point() else images.float()
    _, c, h, w = x.shape
    kernel = x.new_tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
    kernel = kernel.view(1, 1, 3, 3).expand(c, 1, 3, 3)
    # F.pad's "reflect" is reflect-101; a side of length 1 can only repeat itself.
    padded = F.pad(x, (0, 0, 1, 1), mode="reflect" if h > 1 else "replicate")
    padded = F.pad(padded, (1, 1, 0, 0), mode="reflect" if w > 1 else "replicate")
    return F.conv2d(padded, kernel, groups=c)


def laplacian_quality_torch(images: torch.Tensor) -> torch.Tensor:
    """Per-image q = mean |L| of an (N, C, H, W) batch in [0, 255]; returns shape (N,)."""
    return laplacian_torch(images).abs().flatten(1).mean(dim=1)


def laplacian_variance_torch(images: torch.Tensor) -> torch.Tensor:
    """Per-image var(L) (population variance, as numpy's) of an (N, C, H, W) batch."""
    return laplacian_torch(images).flatten(1).var(dim=1, unbiased=False)
