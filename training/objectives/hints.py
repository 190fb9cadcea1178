"""Feature-map hints: the student's inner feature maps of a degraded face pulled towards a
frozen teacher's maps of the same face sharp (FitNets-style hints, beside the
descriptor distillation of :mod:`training.objectives.distill`).

The teacher is a network of the student's own architecture (dlib's released weights
for the dlib student), so its maps at a named module have the student's shape there and
no adapter is needed. Per hint layer l and sample i, with S the student's map and T the
teacher's:

    h_l(i) = ||S_l(x̃_i) − T_l(x_i)||² / ||T_l(x_i)||²

(relative squared error, so layers of different scale weigh alike); the hint loss is
the mean over layers and samples. Sharp samples compare the same input: for them the
term only keeps the student's maps near the teacher's.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from training.config import ConfigError

logger = logging.getLogger(__name__)


def relative_hint_error(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """(N,) ``||s − t||² / ||t||²`` per sample of two (N, ...) maps of the same shape."""
    if student.shape != teacher.shape:
        raise ValueError(f"hint maps differ in shape: student {tuple(student.shape)}, "
                         f"teacher {tuple(teacher.shape)}")
    s, t = student.float().flatten(1), teacher.float().flatten(1)
    return (s - t).pow(2).sum(dim=1) / t.pow(2).sum(dim=1).clamp_min(1e-6)


@contextmanager
def recorded(module: nn.Module, layers: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Records the outputs of ``module``'s submodules ``layers`` (first call each) while
    the context is open."""
    maps: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for name in layers:
            def keep(_: nn.Module, __: object, output: torch.Tensor, name: str = name) -> None:
                maps.setdefault(name, output)

            handles.append(module.get_submodule(name).register_forward_hook(keep))
        yield maps
    finally:
        for handle in handles:
            handle.remove()


class FeatureHints:
    """A frozen teacher network and the layers whose maps the student should match.

    Not an ``nn.Module`` on purpose: the teacher is neither trained nor checkpointed
    (its weights come from ``teacher`` every run).

    Args:
        teacher: the frozen network, of the student's architecture.
        layers: names of submodules (``units.9``), in both networks.
    """

    def __init__(self, teacher: nn.Module, layers: Sequence[str]) -> None:
        if not layers:
            raise ConfigError("distill.hints.layers is empty: name at least one layer")
        known = {name for name, _ in teacher.named_modules() if name}
        missing = [name for name in layers if name not in known]
        if missing:
            stages = sorted(name for name in known if name.count(".") <= 1)
            raise ConfigError(f"distill.hints.layers: {missing} are not layers of "
                              f"{type(teacher).__name__}; e.g. {stages[:24]}")
        self.teacher = teacher.eval().requires_grad_(False)
        self.layers = tuple(layers)

    @torch.no_grad()
    def teacher_maps(self, sharp: torch.Tensor) -> dict[str, torch.Tensor]:
        """The teacher's maps of the sharp input (B, 3, H, W), as float."""
        parameter = next(self.teacher.parameters())
        if parameter.device != sharp.device:
            self.teacher.to(sharp.device)
        with recorded(self.teacher, self.layers) as maps:
            self.teacher(sharp)
        return {name: value.float() for name, value in maps.items()}

    def loss(
        self, student_maps: dict[str, torch.Tensor], teacher_maps: dict[str, torch.Tensor],
        rows: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean hint error, per-row mean over layers)``; row r of the student's maps is
        the sample ``rows[r]`` of the teacher's."""
        per_row = torch.stack([
            relative_hint_error(student_maps[name], teacher_maps[name][rows])
            for name in self.layers
        ]).mean(dim=0)
        return per_row.mean(), per_row


def hint_teacher(student: nn.Module, spec: str) -> nn.Module:
    """A frozen copy of ``student``'s architecture with the teacher's weights: ``dlib``
    or a weights file (the backbone's ``load_pretrained``), or a training checkpoint
    (``.pt``/``.pth``) of the same backbone."""
    from models.checkpoint import Checkpoint
    from training.teacher import resolve_pretrained

    teacher = copy.deepcopy(student)
    if Path(spec).suffix in (".pt", ".pth"):
        Checkpoint.load(spec).load_backbone_into(teacher)
    else:
        load_pretrained = getattr(teacher, "load_pretrained", None)
        if load_pretrained is None:
            raise ValueError(f"distill.hints.teacher {spec!r}: the backbone has no released "
                             "weights; name a training checkpoint (.pt) of it")
        load_pretrained(resolve_pretrained(spec))
    logger.info("feature hints: teacher %s", spec)
    return teacher
