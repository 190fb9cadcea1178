"""The objective registry: ``create_objective(name, ...)`` instead of an if/elif factory,
and :func:`build_objective`, the objective of a run (with distillation when configured)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from models.registry import Registry
from training.objectives.base import Objective, ObjectiveBuilder
from training.objectives.distill import build_distillation

if TYPE_CHECKING:
    from training.config import TrainConfig
    from training.data import FaceSource

_OBJECTIVES: Registry[ObjectiveBuilder] = Registry("objective")

#: ``@register_objective(name)`` registers ``builder(config, num_classes, embedding_size)``.
register_objective = _OBJECTIVES.decorator
#: The names :func:`create_objective` accepts, in registration order.
list_objectives = _OBJECTIVES.names


def create_objective(
    name: str, config: TrainConfig, num_classes: int, embedding_size: int
) -> Objective:
    """Builds objective ``name``; fails with the list of valid names."""
    return _OBJECTIVES.get(name)(config, num_classes, embedding_size)


def build_objective(
    name: str, config: TrainConfig, source: FaceSource, embedding_size: int,
    backbone: nn.Module | None = None,
) -> Objective:
    """The objective ``name`` of a run over ``source``, wrapped with ``config.distill``
    when the config has it (beside a margin head, or a fine-tuning objective that keeps
    the student in its teacher's space); ``backbone`` is the student (feature hints copy
    its architecture for their teacher)."""
    objective = create_objective(name, config, source.num_classes, embedding_size)
    if config.distill is None:
        return objective
    return build_distillation(objective, config, source, embedding_size, backbone)
