"""Fine-tuning objectives for low resolution (METHODS §6): Octuplet and DeriveNet.

Importing this package registers ``octuplet`` and ``derivenet`` in the objective
registry (``training.objectives``); :func:`training.engine.finetune` runs them.
"""

from __future__ import annotations

from training.finetune.derivenet import DeriveNetObjective
from training.finetune.octuplet import (
    OctupletObjective,
    batch_hard_triplet,
    octuplet_loss,
    pairwise_distance,
)

__all__ = [
    "DeriveNetObjective",
    "OctupletObjective",
    "batch_hard_triplet",
    "octuplet_loss",
    "pairwise_distance",
]
