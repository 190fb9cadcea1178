"""Training objectives: what a step computes from the backbone and a batch.

The engine is objective-agnostic: it prepares the batch (normalised input, Laplacian
quality, the sampler's ``degraded`` flags and sides) and asks an :class:`Objective` for
the loss. Training uses :class:`MarginObjective` (a margin head + cross-entropy);
fine-tuning registers its own (``training.finetune``). Objectives live in a registry
keyed by method name; each builder takes the run config and the number of classes.

A batch is a dict of tensors on the training device (dicts pass through DDP):

* ``input`` float (B, 3, H, W), ``(pixel - 127.5) / 127.5``, what the network sees;
* ``label`` int64 (B,); ``quality`` float (B,), q of ``input`` on the 0-255 scale;
* ``degraded`` bool (B,) and ``side`` int64 (B,) from the cross-resolution sampler;
* for objectives with ``needs_hr``: ``hr_input`` and ``hr_quality``, the same samples
  undegraded.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from models.heads import create_head

if TYPE_CHECKING:
    from training.config import TrainConfig

Batch = dict[str, torch.Tensor]
Stats = dict[str, torch.Tensor]
ObjectiveBuilder = Callable[["TrainConfig", int, int], "Objective"]

_OBJECTIVES: dict[str, ObjectiveBuilder] = {}


class Objective(nn.Module, ABC):
    """A loss over one batch; owns its trainable parts (head, decoder ...).

    Attributes:
        needs_hr: the batch must carry the undegraded copies (``hr_input``).
        name: recorded as ``head_name`` in checkpoints and as ``head`` in the artifact.
    """

    needs_hr: ClassVar[bool] = False
    name: str = ""

    @abstractmethod
    def forward(self, backbone: nn.Module, batch: Batch) -> tuple[torch.Tensor, Stats]:
        """``(loss, stats)``: a scalar loss and detached scalar or per-sample stats."""


def register_objective(name: str) -> Callable[[ObjectiveBuilder], ObjectiveBuilder]:
    """Decorator registering ``builder(config, num_classes, embedding_size)``."""

    def decorator(builder: ObjectiveBuilder) -> ObjectiveBuilder:
        if name in _OBJECTIVES:
            raise ValueError(f"objective {name!r} is already registered")
        _OBJECTIVES[name] = builder
        return builder

    return decorator


def list_objectives() -> list[str]:
    _load_builtin()
    return list(_OBJECTIVES)


def create_objective(
    name: str, config: TrainConfig, num_classes: int, embedding_size: int
) -> Objective:
    """Builds objective ``name``; fails with the list of valid names."""
    _load_builtin()
    try:
        builder = _OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"unknown objective {name!r}; valid: {list(_OBJECTIVES)}") from None
    return builder(config, num_classes, embedding_size)


def _load_builtin() -> None:
    # the fine-tuning objectives register themselves on import
    import training.finetune  # noqa: F401


class MarginObjective(Objective):
    """A softmax margin head (``models.heads``) and cross-entropy over its logits.

    The head gets the Laplacian quality and the ``degraded`` flags of every sample; its
    per-sample stats (margins ...) and the top-1 accuracy of the logits are reported.

    Args:
        head: the margin head.
    """

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head
        self.name = str(getattr(head, "registered_name", "") or type(head).__name__)

    def forward(self, backbone: nn.Module, batch: Batch) -> tuple[torch.Tensor, Stats]:
        embeddings = backbone(batch["input"])
        labels = batch["label"]
        logits = self.head(
            embeddings.float(), labels, quality=batch["quality"], degraded=batch["degraded"]
        )
        loss = F.cross_entropy(logits.float(), labels)
        with torch.no_grad():
            stats: Stats = {
                "accuracy": (logits.argmax(dim=1) == labels).float().mean(),
                "embedding_norm": embeddings.float().norm(dim=1),
            }
            for key, value in getattr(self.head, "last_stats", {}).items():
                stats[key] = value.detach()
            fixed = getattr(self.head, "margin", None)
            if "margin" not in stats and isinstance(fixed, int | float):
                # constant-margin heads: log m so runs of all heads share the scalar
                stats["margin"] = torch.full_like(labels, float(fixed), dtype=torch.float32)
        return loss, stats


@register_objective("margin")
def _build_margin(config: TrainConfig, num_classes: int, embedding_size: int) -> Objective:
    head = create_head(config.head.name, embedding_size, num_classes, **config.head.params)
    return MarginObjective(head)


def objective_state(objective: Objective) -> dict[str, Any]:
    """The objective's state for a checkpoint (the head's, for margin objectives)."""
    if isinstance(objective, MarginObjective):
        return objective.head.state_dict()
    return objective.state_dict()


def load_objective_state(objective: Objective, state: dict[str, Any]) -> None:
    """Inverse of :func:`objective_state`."""
    if isinstance(objective, MarginObjective):
        objective.head.load_state_dict(state)
    else:
        objective.load_state_dict(state)
