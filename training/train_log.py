"""What a training run logs: per-step scalars (averaged over ranks) and JSON lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from training.distributed import DistContext


def step_scalars(
    inputs: dict[str, torch.Tensor],
    loss: torch.Tensor,
    stats: dict[str, Any],
    lr: float,
    grad_norm: torch.Tensor | None,
    ctx: DistContext,
) -> dict[str, float]:
    """Loss, accuracy, margins and quality split by HR/LR, averaged over ranks."""
    degraded = inputs["degraded"]
    hr, lr_mask = ~degraded, degraded
    quality = inputs["quality"].float()

    def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        values = values.float().reshape(-1)
        if values.numel() != mask.numel():
            return values.mean()
        return (values * mask).sum() / mask.sum().clamp_min(1)

    names = ["train/loss", "data/degraded_fraction", "quality/hr", "quality/lr",
             "data/side_lr"]
    values = [
        loss.detach().float(),
        degraded.float().mean(),
        masked_mean(quality, hr),
        masked_mean(quality, lr_mask),
        masked_mean(inputs["side"], lr_mask),
    ]
    for key, value in stats.items():
        value = torch.as_tensor(value).detach()
        if value.numel() == degraded.numel() and value.numel() > 1:
            names += [f"train/{key}_hr", f"train/{key}_lr"]
            values += [masked_mean(value, hr), masked_mean(value, lr_mask)]
        else:
            names.append(f"train/{key}")
            values.append(value.float().mean())
    if grad_norm is not None:
        names.append("train/grad_norm")
        values.append(grad_norm.detach().float())
    vector = torch.stack([v.to(loss.device) for v in values])
    if ctx.distributed:
        dist.all_reduce(vector)
        vector /= ctx.world_size
    scalars = dict(zip(names, vector.tolist(), strict=True))
    scalars["train/lr"] = lr
    return scalars


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """One JSON line per logged step or validation: plain-text history beside TensorBoard."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
