"""Training checkpoints: the one format, written and read here (docs/architecture.md).

A checkpoint is a ``torch.save``-d dict. Three keys describe the backbone and are all that
evaluation and export read: ``backbone_name``, ``backbone_kwargs`` (for
:func:`models.backbones.create_backbone`) and ``backbone_state`` (its ``state_dict``).
Everything else is training state (``head_name``, ``head_state``, ``optimizer``,
``scheduler``, ``step``, ``epoch``, ``config`` ...), kept as it was written.

Loading unpickles the file: only load checkpoints you trust.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.backbones import create_backbone

#: The keys that describe the backbone; every checkpoint has them.
BACKBONE_KEYS: tuple[str, ...] = ("backbone_name", "backbone_kwargs", "backbone_state")


class CheckpointError(ValueError):
    """A file or dict that is not a training checkpoint, or whose weights do not fit."""


@dataclass(frozen=True)
class Checkpoint:
    """A training checkpoint: the backbone it describes plus the training state.

    Attributes:
        backbone_name: a registered backbone name.
        backbone_kwargs: the keyword arguments the backbone was built with.
        backbone_state: the backbone's ``state_dict``.
        training: every other key of the saved dict (``head_state``, ``step`` ...).
    """

    backbone_name: str
    backbone_kwargs: dict[str, Any]
    backbone_state: Mapping[str, torch.Tensor]
    training: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, state: Mapping[str, Any], *, source: str = "checkpoint") -> Checkpoint:
        """Checks the backbone keys of a checkpoint dict (``source`` names it in errors)."""
        missing = [key for key in BACKBONE_KEYS if key not in state]
        if missing:
            raise CheckpointError(f"{source} lacks {missing}; it needs {list(BACKBONE_KEYS)}")
        return cls(
            backbone_name=str(state["backbone_name"]),
            backbone_kwargs=dict(state["backbone_kwargs"] or {}),
            backbone_state=state["backbone_state"],
            training={k: v for k, v in state.items() if k not in BACKBONE_KEYS},
        )

    @classmethod
    def load(cls, path: str | Path) -> Checkpoint:
        """Unpickles ``path`` onto the CPU and checks it."""
        state = torch.load(Path(path), map_location="cpu", weights_only=False)
        if not isinstance(state, Mapping):
            raise CheckpointError(f"{path} holds a {type(state).__name__}, expected a dict")
        return cls.from_dict(state, source=str(path))

    def get(self, key: str, default: Any = None) -> Any:
        """A training-state value (``step``, ``head_name`` ...), or ``default``."""
        return self.training.get(key, default)

    def to_dict(self) -> dict[str, Any]:
        """The dict that :meth:`save` writes: the backbone keys, then the training state."""
        return {
            "backbone_name": self.backbone_name,
            "backbone_kwargs": self.backbone_kwargs,
            "backbone_state": self.backbone_state,
            **self.training,
        }

    def save(self, path: str | Path) -> Path:
        """Writes the checkpoint atomically (a temporary file, then a rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(self.to_dict(), tmp)
        os.replace(tmp, path)
        return path

    def slim(self) -> Checkpoint:
        """The checkpoint a later session resumes from when the run folder is gone, small
        enough to commit: backbone and objective state in fp16, the position in the run
        (``step``, ``epoch``, ``batch_in_epoch``), config and provenance; without the
        optimiser's momentum, the gradient scaler and the RNG states (a resume from it
        restarts the momentum and reseeds, so it continues the schedule, not bit-exactly
        the same run). Marked ``slim: True``."""
        dropped = {"optimizer", "scaler", "rng"}
        training = {k: v for k, v in self.training.items() if k not in dropped}
        if isinstance(training.get("head_state"), Mapping):
            training["head_state"] = _half(training["head_state"])
        training["slim"] = True
        return Checkpoint(self.backbone_name, self.backbone_kwargs,
                          _half(self.backbone_state), training)

    @property
    def is_slim(self) -> bool:
        """Written by :meth:`slim` (no optimiser state to restore)."""
        return bool(self.training.get("slim", False))

    def load_backbone_into(self, backbone: nn.Module) -> nn.Module:
        """Copies the weights into ``backbone`` (built elsewhere); explains a mismatch."""
        try:
            backbone.load_state_dict(self.backbone_state)
        except RuntimeError as exc:
            raise CheckpointError(
                f"checkpoint weights do not fit {self.backbone_name}: {exc}"
            ) from exc
        return backbone

    def build_backbone(self) -> nn.Module:
        """The backbone this checkpoint describes, with its weights, in training mode."""
        backbone = create_backbone(self.backbone_name, **self.backbone_kwargs)
        return self.load_backbone_into(backbone)


def _half(state: Mapping[str, Any]) -> dict[str, Any]:
    """fp32 tensors as fp16 (``load_state_dict`` casts them back); others unchanged."""
    return {
        key: value.half() if isinstance(value, torch.Tensor) and value.dtype == torch.float32
        else value
        for key, value in state.items()
    }
