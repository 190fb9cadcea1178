"""Distillation: another objective plus a term towards a teacher's cached descriptors.

:class:`DistillObjective` wraps the objective of ``config.distill`` runs and adds the
distillation term (a projection of the student embedding onto cached teacher descriptors
of the sharp images); :func:`build_distillation` builds it from the config.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.config import ConfigError
from training.data import FaceSource, MixedSource
from training.data.sources import UNLABELLED
from training.objectives.base import Batch, Objective, Stats
from training.objectives.hints import FeatureHints, hint_teacher, recorded
from training.objectives.triplet import batch_hard_triplet, pairwise_distance
from training.teacher import TeacherCache, lookup_table

if TYPE_CHECKING:
    from models.checkpoint import Checkpoint
    from training.config import TeacherTripletConfig, TrainConfig

logger = logging.getLogger(__name__)

#: Prefix of the distillation projection's entries in a checkpoint's ``head_state``.
DISTILL_PREFIX = "distill."


def distillation_loss(
    projected: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean over masked samples of 1 - cos(p_i, t_i), per-sample 1 - cos)``.

    Cosine rather than MSE: the teacher's descriptors are compared by distance, their
    norms are nearly constant (dlib: 1.42 ± 0.07 on LFW), so the direction carries
    identity; 1 - cos equals half the squared distance of the normalised vectors.
    A batch with no masked-in sample gives 0 (with a graph, so DDP sees every parameter).
    """
    per_sample = 1.0 - F.cosine_similarity(projected.float(), teacher.float(), dim=1, eps=1e-8)
    weights = mask.float()
    return (per_sample * weights).sum() / weights.sum().clamp_min(1.0), per_sample


class _Recorder(nn.Module):
    """Calls the backbone and keeps its output, so the wrapped objective's forward is
    shared with the distillation term (one backbone pass per step)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.outputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.backbone(x)
        self.outputs.append(z)
        return z


class DistillObjective(Objective):
    """Another objective plus λ (1 - cos(P z_i, t_i)) towards a teacher's descriptors.

    z_i is the student's raw embedding of sample i as the network sees it (degraded or
    not), P a learned linear projection (D -> teacher dimension, no bias; trained with
    the backbone), t_i the teacher's descriptor of sample i's **sharp** image, looked up
    by the batch's ``index``. Samples without a descriptor are masked out.

    Args:
        base: the objective that owns the head (its backbone pass is reused).
        table: (N, T) teacher descriptors in the face source's sample order.
        found: (N,) bool, which rows hold a descriptor.
        embedding_size: D.
        weight: λ.
        base_weight: factor on the base objective's loss.
        hints: feature-map hints from a frozen teacher network (``None``: none).
        hint_weight: the hints' weight.
        triplet: a batch-hard triplet term of P z_i against the teacher's descriptors of
            the batch's images (``None``: none; :meth:`teacher_triplet`).
    """

    def __init__(
        self,
        base: Objective,
        table: torch.Tensor,
        found: torch.Tensor,
        embedding_size: int,
        weight: float = 1.0,
        base_weight: float = 1.0,
        hints: FeatureHints | None = None,
        hint_weight: float = 1.0,
        triplet: TeacherTripletConfig | None = None,
    ) -> None:
        super().__init__()
        if table.ndim != 2 or table.shape[0] != found.shape[0]:
            raise ValueError(f"teacher table {tuple(table.shape)} does not match {found.shape}")
        self.base = base
        self.projection = nn.Linear(embedding_size, table.shape[1], bias=False)
        self.weight = float(weight)
        self.base_weight = float(base_weight)
        self.name = f"{base.name}+distill"
        self.hints = hints
        self.hint_weight = float(hint_weight)
        self.triplet = triplet
        # the hints' teacher sees the sharp copies
        self.needs_hr = base.needs_hr or hints is not None  # type: ignore[misc]
        # plain attributes, not buffers: DDP would broadcast them every step, and the
        # checkpoint need not carry them (the cache file does)
        self.table = table.float()
        self.found = found.bool()

    def forward(self, backbone: nn.Module, batch: Batch) -> tuple[torch.Tensor, Stats]:
        recorder = _Recorder(backbone)
        with recorded(backbone, self.hints.layers if self.hints else ()) as student_maps:
            loss, stats = self.base(recorder, batch)
        if not recorder.outputs:
            raise RuntimeError(f"objective {self.base.name!r} did not call the backbone")
        embeddings = recorder.outputs[0]
        rows, degraded = _rows_of_first_pass(batch, embeddings.shape[0], self.base.needs_hr)
        index = batch["index"][rows]
        if self.table.device != index.device:
            self.table, self.found = self.table.to(index.device), self.found.to(index.device)
        teacher = self.table[index]
        mask = self.found[index]
        projected = self.projection(embeddings.float())
        distill, per_sample = distillation_loss(projected, teacher, mask)
        stats = dict(stats)
        with torch.no_grad():
            stats["base_loss"] = loss.detach().float()
            stats["distill_loss"] = distill.detach()
            stats["distill_coverage"] = mask.float().mean()
            cosine = 1.0 - per_sample.detach()
            for part, chosen in (("hr", mask & ~degraded), ("lr", mask & degraded)):
                weights = chosen.float()
                stats[f"distill_cos_{part}"] = (cosine * weights).sum() / weights.sum().clamp_min(1)
        total = self.base_weight * loss + self.weight * distill
        if self.hints is not None:
            hint, _ = self.hints.loss(student_maps, self.hints.teacher_maps(batch["hr_input"]),
                                      rows)
            stats["hint_loss"] = hint.detach()
            total = total + self.hint_weight * hint
        if self.triplet is not None:
            triplet = self.teacher_triplet(projected, batch, rows, mask)
            stats["triplet_loss"] = triplet.detach()
            total = total + float(self.triplet.weight) * triplet
        return total, stats

    def teacher_triplet(
        self, projected: torch.Tensor, batch: Batch, rows: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """The mean batch-hard triplet term of the projected embeddings (row r is the
        sample ``rows[r]``) against the teacher's descriptors of the batch's images, each
        once: positives are the anchor's identity (its own image included), negatives
        the others. The comparison a gated model makes between a face through the
        student and a sharp one through the teacher. Unlabelled samples and samples
        without a descriptor take no part."""
        assert self.triplet is not None
        labels = batch["label"]
        row_labels = labels[rows]
        images = self.found[batch["index"]] & (labels != UNLABELLED)
        anchors = mask & (row_labels != UNLABELLED)
        if not bool(anchors.any()) or not bool(images.any()):
            return projected.sum() * 0.0
        candidates = F.normalize(self.table[batch["index"][images]], dim=1)
        distances = pairwise_distance(
            F.normalize(projected[anchors].float(), dim=1), candidates, self.triplet.distance
        )
        terms = batch_hard_triplet(distances, row_labels[anchors], float(self.triplet.margin),
                                   column_labels=labels[images])
        return terms.mean()

    def sampler(
        self, source: FaceSource, config: TrainConfig, *, rank: int, world_size: int
    ) -> Any:
        return self.base.sampler(source, config, rank=rank, world_size=world_size)

    def checkpoint_state(self) -> dict[str, Any]:
        """The base's state plus ``distill.*`` entries (the projection), so
        ``head_state["weight"]`` stays the class centres."""
        state = self.base.checkpoint_state()
        for key, value in self.projection.state_dict().items():
            state[f"{DISTILL_PREFIX}projection.{key}"] = value
        return state

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        prefix = f"{DISTILL_PREFIX}projection."
        self.projection.load_state_dict(
            {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        )
        self.base.load_checkpoint_state(
            {k: v for k, v in state.items() if not k.startswith(DISTILL_PREFIX)}
        )

    def start_from(self, start: Checkpoint) -> bool:
        """The base starts as it would alone; the projection continues the starting
        checkpoint's when that was a distilled run with the same shapes (else it keeps
        ``distill.projection_init``)."""
        prefix = f"{DISTILL_PREFIX}projection."
        state = {k[len(prefix):]: v for k, v in (start.get("head_state") or {}).items()
                 if k.startswith(prefix)}
        own = self.projection.state_dict()
        projected = bool(state) and state.keys() == own.keys() and all(
            state[k].shape == own[k].shape for k in own
        )
        if projected:
            self.projection.load_state_dict(state)
            logger.info("distillation projection continues the starting checkpoint's")
        return self.base.start_from(start) or projected

    def recorded_name(self, start: Checkpoint | None) -> str:
        """The base's name with ``+distill`` unless its lineage already says so
        (``approach2+distill``, fine-tuned: ``approach2+distill+octuplet``)."""
        name = self.base.recorded_name(start)
        return name if "distill" in name.split("+") else f"{name}+distill"


def _rows_of_first_pass(
    batch: Batch, rows: int, needs_hr: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch positions and ``degraded`` flags of the base objective's first backbone
    pass: ``batch["input"]``, or ``[hr_input; input]`` (2B rows) for the fine-tuning
    objectives that embed both copies in one pass (Octuplet, DeriveNet)."""
    degraded = batch["degraded"]
    positions = torch.arange(degraded.shape[0], device=degraded.device)
    if rows == degraded.shape[0]:
        return positions, degraded
    if needs_hr and rows == 2 * degraded.shape[0]:
        return torch.cat([positions, positions]), torch.cat([torch.zeros_like(degraded),
                                                             degraded])
    raise RuntimeError(
        f"distillation needs the first backbone pass over the batch's input "
        f"({degraded.shape[0]} rows{', or [hr_input; input]' if needs_hr else ''}), got {rows}"
    )


def _class_mean_descriptors(
    table: np.ndarray, found: np.ndarray, labels: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """(C, T) mean of each class's L2-normalised teacher descriptors, and which classes
    have any (unlabelled samples count for none)."""
    unit = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-12)
    use = found & (labels != UNLABELLED)
    sums = np.zeros((num_classes, table.shape[1]), dtype=np.float64)
    np.add.at(sums, labels[use], unit[use])
    counts = np.bincount(labels[use], minlength=num_classes)
    has = counts > 0
    sums[has] /= counts[has, None]
    return sums.astype(np.float32), has


def teacher_table(source: FaceSource, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """(N, T) teacher descriptors in ``source``'s sample order and (N,) which exist.

    A :class:`MixedSource` looks its labelled part up in ``distill.cache`` and its
    unlabelled part in ``data.unlabelled.cache`` (each keyed relative to its own root).

    Raises:
        ValueError: a cache holds no descriptor for any sample of its part.
    """
    assert config.distill is not None
    parts: list[tuple[FaceSource, str]] = [(source, config.distill.cache)]
    if isinstance(source, MixedSource):
        if config.data.unlabelled is None:
            raise ConfigError("a mixed face source needs data.unlabelled.cache")
        parts = [(source.labelled, config.distill.cache),
                 (source.unlabelled, config.data.unlabelled.cache)]
    tables, founds = [], []
    for part, path in parts:
        cache = TeacherCache.load(path, teacher=config.distill.teacher)
        keys = [part.sample_key(i) for i in range(len(part))]
        table, found = lookup_table(cache, keys)
        if not found.any():
            raise ValueError(
                f"teacher cache {path} has no descriptor for any image of {part.description} "
                f"(e.g. {keys[0]!r}); was it built over that folder?"
            )
        logger.info("distillation: %d/%d images of %s have a %s descriptor",
                    int(found.sum()), len(found), part.description, cache.teacher)
        tables.append(table)
        founds.append(found)
    return np.concatenate(tables), np.concatenate(founds)


def build_distillation(
    base: Objective, config: TrainConfig, source: FaceSource, embedding_size: int,
    backbone: nn.Module | None = None,
) -> DistillObjective:
    """Wraps ``base`` with ``config.distill``, descriptors in ``source``'s order
    (:func:`teacher_table`); the sample labels serve ``distill.init_centres``; the
    student ``backbone`` gives ``distill.hints`` its teacher's architecture."""
    assert config.distill is not None
    table, found = teacher_table(source, config)
    d = config.distill
    logger.info("distillation: λ = %g over %d/%d samples", d.weight, int(found.sum()), len(found))
    hints = None
    if d.hints is not None:
        if backbone is None:
            raise ConfigError("distill.hints needs the student backbone")
        hints = FeatureHints(hint_teacher(backbone, d.hints.teacher), d.hints.layers)
        logger.info("feature hints at %s, weight %g", ", ".join(hints.layers), d.hints.weight)
    if d.triplet is not None:
        logger.info("triplet against the teacher's descriptors: weight %g, margin %g (%s)",
                    d.triplet.weight, d.triplet.margin, d.triplet.distance)
    objective = DistillObjective(
        base, torch.from_numpy(table), torch.from_numpy(found), embedding_size,
        weight=d.weight, base_weight=d.base_weight, hints=hints,
        hint_weight=d.hints.weight if d.hints else 1.0, triplet=d.triplet,
    )
    if (d.projection_init == "identity" or d.init_centres) and embedding_size != table.shape[1]:
        raise ConfigError(
            f"distill.projection_init=identity and distill.init_centres need an embedding "
            f"of the teacher's size {table.shape[1]}, got {embedding_size}"
        )
    if d.projection_init == "identity":
        with torch.no_grad():
            objective.projection.weight.copy_(torch.eye(embedding_size))
    if d.init_centres:
        head = getattr(base, "head", None)
        if head is None:
            raise ConfigError("distill.init_centres needs a margin head")
        centres, has = _class_mean_descriptors(table, found, np.asarray(source.labels),
                                               head.weight.shape[1])
        with torch.no_grad():
            columns = torch.from_numpy(centres[has].T.copy())
            head.weight[:, torch.from_numpy(np.flatnonzero(has))] = columns.to(head.weight)
        logger.info("class centres of %d/%d identities start at their mean teacher descriptor",
                    int(has.sum()), len(has))
    return objective
