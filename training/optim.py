"""The optimiser's parameter groups and the per-iteration learning-rate schedule
(METHODS §5: linear warm-up, then step or cosine)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from training.config import ScheduleConfig


def parameter_groups(
    modules: Iterable[nn.Module], weight_decay: float, decay_norm_and_bias: bool = False
) -> list[dict[str, Any]]:
    """Two SGD groups: matrices/kernels with weight decay, vectors (BN, PReLU, biases)
    without (unless ``decay_norm_and_bias``)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in modules:
        for parameter in module.parameters():
            if not parameter.requires_grad or id(parameter) in seen:
                continue
            seen.add(id(parameter))
            (decay if decay_norm_and_bias or parameter.ndim > 1 else no_decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


@dataclass
class LRSchedule:
    """Per-iteration learning rate: linear warm-up, then step decay or cosine.

    Args:
        base_lr: the peak learning rate.
        config: the schedule section.
        steps_per_epoch: iterations of one epoch (per process).
    """

    base_lr: float
    config: ScheduleConfig
    steps_per_epoch: int

    @property
    def total_steps(self) -> int:
        return max(1, math.ceil(self.config.epochs * self.steps_per_epoch))

    @property
    def warmup_steps(self) -> int:
        return round(self.config.warmup_epochs * self.steps_per_epoch)

    def factor(self, step: int) -> float:
        """The multiplier of ``base_lr`` for iteration ``step`` (0-based)."""
        c = self.config
        warm = self.warmup_steps
        if step < warm:
            return c.warmup_start + (1.0 - c.warmup_start) * step / warm
        if c.kind == "step":
            passed = sum(step >= round(m * self.steps_per_epoch) for m in c.milestones)
            return c.gamma**passed
        progress = min(1.0, (step - warm) / max(1, self.total_steps - warm))
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return c.min_lr_factor + (1.0 - c.min_lr_factor) * cosine

    def lr(self, step: int) -> float:
        return self.base_lr * self.factor(step)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        lr = self.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def state_dict(self) -> dict[str, Any]:
        """What defines the schedule (the position is the checkpoint's ``step``)."""
        return {"base_lr": self.base_lr, "steps_per_epoch": self.steps_per_epoch,
                "config": self.config.model_dump()}
