"""What every training objective is: a loss over one batch that owns its trainable parts,
the batches it needs, its checkpoint state and its start from a checkpoint.

A batch is a dict of tensors on the training device (dicts pass through DDP):

* ``input`` float (B, 3, H, W), ``(pixel - 127.5) / 127.5``, what the network sees;
* ``label`` int64 (B,); ``quality`` float (B,), q of ``input`` on the 0-255 scale;
* ``degraded`` bool (B,) and ``side`` int64 (B,) from the cross-resolution sampler;
* for objectives with ``needs_hr``: ``hr_input`` and ``hr_quality``, the same samples
  undegraded;
* ``index`` int64 (B,): the samples' positions in the face source (teacher lookup).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from training.data import (
    CrossResolutionBatchSampler,
    FaceSource,
    MixedBatchSampler,
    MixedSource,
    ResolutionPolicy,
)

if TYPE_CHECKING:
    from models.checkpoint import Checkpoint
    from training.config import TrainConfig

Batch = dict[str, torch.Tensor]
Stats = dict[str, torch.Tensor]
ObjectiveBuilder = Callable[["TrainConfig", int, int], "Objective"]


class Objective(nn.Module, ABC):
    """A loss over one batch; owns its trainable parts (head, decoder ...).

    The engine asks the objective, never names it: which batches it trains on
    (:meth:`sampler`), what a checkpoint keeps of it (:meth:`checkpoint_state`), how it
    starts from the checkpoint it fine-tunes (:meth:`start_from`) and the head name the
    checkpoints record (:meth:`recorded_name`).

    Attributes:
        needs_hr: the batch must carry the undegraded copies (``hr_input``).
        name: recorded as ``head_name`` in checkpoints and as ``head`` in the artifact.
    """

    needs_hr: ClassVar[bool] = False
    name: str = ""

    @abstractmethod
    def forward(self, backbone: nn.Module, batch: Batch) -> tuple[torch.Tensor, Stats]:
        """``(loss, stats)``: a scalar loss and detached scalar or per-sample stats."""

    def sampler(
        self, source: FaceSource, config: TrainConfig, *, rank: int, world_size: int
    ) -> Any:
        """The batch sampler: cross-resolution batches as ``config.crossres`` says."""
        x = config.crossres
        policy = ResolutionPolicy(
            fraction=x.fraction, r_min=x.r_min, r_max=x.r_max,
            sides=tuple(x.sides) if x.sides else None,
        )
        return cross_resolution_sampler(source, config, policy, rank=rank, world_size=world_size)

    def checkpoint_state(self) -> dict[str, Any]:
        """What a checkpoint keeps as ``head_state``."""
        return self.state_dict()

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`checkpoint_state` (resuming a run)."""
        self.load_state_dict(state)

    def start_from(self, start: Checkpoint) -> bool:
        """Initialises from the checkpoint a fine-tuning starts from; ``True`` if it did."""
        return False

    def recorded_name(self, start: Checkpoint | None) -> str:
        """The checkpoints' ``head_name``: a fine-tuning objective's name follows the
        starting checkpoint's head (``arcface+octuplet``)."""
        head = start.get("head_name") if start is not None else None
        return f"{head}+{self.name}" if head else self.name


def cross_resolution_sampler(
    source: FaceSource, config: TrainConfig, policy: ResolutionPolicy, *, rank: int,
    world_size: int,
) -> CrossResolutionBatchSampler | MixedBatchSampler:
    """Batches of ``engine.batch_size`` samples degraded as ``policy`` says; with
    unlabelled faces (a :class:`MixedSource`), ``data.unlabelled.fraction`` of each
    batch is theirs."""
    if isinstance(source, MixedSource):
        if config.data.unlabelled is None:
            raise ValueError("a mixed face source needs data.unlabelled in the config")
        return MixedBatchSampler(
            source.num_labelled, source.num_unlabelled, config.engine.batch_size,
            config.data.unlabelled.fraction, policy,
            seed=config.engine.seed, rank=rank, world_size=world_size,
        )
    return CrossResolutionBatchSampler(
        len(source), config.engine.batch_size, policy,
        seed=config.engine.seed, rank=rank, world_size=world_size,
    )
