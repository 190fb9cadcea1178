"""Training objectives behind a registry: what a step computes from the backbone and a batch.

The engine is objective-agnostic: it prepares the batch (normalised input, Laplacian
quality, the sampler's ``degraded`` flags and sides) and asks an :class:`Objective` for
the loss, its batch sampler, its checkpoint state and its start from a checkpoint.
One objective per module, all on :class:`Objective` (``base``):

* ``margin``: a margin head (``models.heads``) + cross-entropy, for training;
* ``octuplet`` and ``derivenet``: the fine-tuning objectives (METHODS §6);
* ``distill``: wraps another objective with a term towards a teacher's descriptors
  (``config.distill``; :func:`build_objective` adds it).

``create_objective(name, config, num_classes, embedding_size)`` fails with the list of
valid names.
"""

from __future__ import annotations

from training.objectives.base import Batch, Objective, ObjectiveBuilder, Stats
from training.objectives.derivenet import DeriveNetObjective
from training.objectives.distill import (
    DISTILL_PREFIX,
    DistillObjective,
    build_distillation,
    distillation_loss,
)
from training.objectives.margin import MarginObjective
from training.objectives.octuplet import OctupletObjective, octuplet_loss
from training.objectives.registry import (
    build_objective,
    create_objective,
    list_objectives,
    register_objective,
)
from training.objectives.triplet import batch_hard_triplet, pairwise_distance

__all__ = [
    "DISTILL_PREFIX",
    "Batch",
    "DeriveNetObjective",
    "DistillObjective",
    "MarginObjective",
    "Objective",
    "ObjectiveBuilder",
    "OctupletObjective",
    "Stats",
    "batch_hard_triplet",
    "build_distillation",
    "build_objective",
    "create_objective",
    "distillation_loss",
    "list_objectives",
    "octuplet_loss",
    "pairwise_distance",
    "register_objective",
]
