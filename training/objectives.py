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
  undegraded;
* ``index`` int64 (B,): the samples' positions in the face source (teacher lookup).

:class:`DistillObjective` wraps another objective and adds the distillation term of
``config.distill`` (a projection of the student embedding onto cached teacher
descriptors of the sharp images).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.heads import create_head
from training.config import ConfigError

if TYPE_CHECKING:
    from training.config import TrainConfig

Batch = dict[str, torch.Tensor]
Stats = dict[str, torch.Tensor]
logger = logging.getLogger(__name__)

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

    def init_weight_from(self, weight: torch.Tensor) -> bool:
        """Starts the class centres from a trained head's ``weight``; ``False``: not used."""
        return False


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
    """

    def __init__(
        self,
        base: Objective,
        table: torch.Tensor,
        found: torch.Tensor,
        embedding_size: int,
        weight: float = 1.0,
        base_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if table.ndim != 2 or table.shape[0] != found.shape[0]:
            raise ValueError(f"teacher table {tuple(table.shape)} does not match {found.shape}")
        self.base = base
        self.projection = nn.Linear(embedding_size, table.shape[1], bias=False)
        self.weight = float(weight)
        self.base_weight = float(base_weight)
        self.name = f"{base.name}+distill"
        self.needs_hr = base.needs_hr  # type: ignore[misc]
        # plain attributes, not buffers: DDP would broadcast them every step, and the
        # checkpoint need not carry them (the cache file does)
        self.table = table.float()
        self.found = found.bool()

    def forward(self, backbone: nn.Module, batch: Batch) -> tuple[torch.Tensor, Stats]:
        recorder = _Recorder(backbone)
        loss, stats = self.base(recorder, batch)
        if not recorder.outputs:
            raise RuntimeError(f"objective {self.base.name!r} did not call the backbone")
        embeddings = recorder.outputs[0]  # the first pass is over batch["input"]
        index = batch["index"]
        if embeddings.shape[0] != index.shape[0]:
            raise RuntimeError("distillation needs one backbone pass over the batch's input")
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
            degraded = batch["degraded"]
            for part, chosen in (("hr", mask & ~degraded), ("lr", mask & degraded)):
                weights = chosen.float()
                stats[f"distill_cos_{part}"] = (cosine * weights).sum() / weights.sum().clamp_min(1)
        return self.base_weight * loss + self.weight * distill, stats


def _class_mean_descriptors(
    table: np.ndarray, found: np.ndarray, labels: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """(C, T) mean of each class's L2-normalised teacher descriptors, and which classes
    have any."""
    unit = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-12)
    sums = np.zeros((num_classes, table.shape[1]), dtype=np.float64)
    np.add.at(sums, labels[found], unit[found])
    counts = np.bincount(labels[found], minlength=num_classes)
    has = counts > 0
    sums[has] /= counts[has, None]
    return sums.astype(np.float32), has


def build_distillation(
    base: Objective,
    config: TrainConfig,
    sample_keys: list[str],
    embedding_size: int,
    labels: np.ndarray | None = None,
) -> DistillObjective:
    """Wraps ``base`` with ``config.distill``, descriptors ordered like ``sample_keys``.

    ``labels`` (the samples' identities) are needed for ``distill.init_centres``.
    """
    from training.teacher import TeacherCache, lookup_table

    assert config.distill is not None
    cache = TeacherCache.load(config.distill.cache, teacher=config.distill.teacher)
    table, found = lookup_table(cache, sample_keys)
    if not found.any():
        raise ValueError(
            f"teacher cache {config.distill.cache} has no descriptor for any training image "
            f"(e.g. {sample_keys[0]!r}); was it built over data.root?"
        )
    logger.info("distillation: %d/%d training images have a %s descriptor (λ = %g)",
                int(found.sum()), len(found), cache.teacher, config.distill.weight)
    objective = DistillObjective(
        base, torch.from_numpy(table), torch.from_numpy(found), embedding_size,
        weight=config.distill.weight, base_weight=config.distill.base_weight,
    )
    d = config.distill
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
        if head is None or labels is None:
            raise ConfigError("distill.init_centres needs a margin head and the sample labels")
        centres, has = _class_mean_descriptors(table, found, np.asarray(labels),
                                               head.weight.shape[1])
        with torch.no_grad():
            columns = torch.from_numpy(centres[has].T.copy())
            head.weight[:, torch.from_numpy(np.flatnonzero(has))] = columns.to(head.weight)
        logger.info("class centres of %d/%d identities start at their mean teacher descriptor",
                    int(has.sum()), len(has))
    return objective


#: Prefix of the distillation projection's entries in a checkpoint's ``head_state``.
DISTILL_PREFIX = "distill."


def objective_state(objective: Objective) -> dict[str, Any]:
    """The objective's state for a checkpoint (the head's, for margin objectives).

    A :class:`DistillObjective` stores its base's state plus ``distill.*`` entries
    (the projection), so ``head_state["weight"]`` stays the class centres.
    """
    if isinstance(objective, DistillObjective):
        state = objective_state(objective.base)
        for key, value in objective.projection.state_dict().items():
            state[f"{DISTILL_PREFIX}projection.{key}"] = value
        return state
    if isinstance(objective, MarginObjective):
        return objective.head.state_dict()
    return objective.state_dict()


def load_objective_state(objective: Objective, state: dict[str, Any]) -> None:
    """Inverse of :func:`objective_state`."""
    if isinstance(objective, DistillObjective):
        prefix = f"{DISTILL_PREFIX}projection."
        objective.projection.load_state_dict(
            {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        )
        load_objective_state(
            objective.base, {k: v for k, v in state.items() if not k.startswith(DISTILL_PREFIX)}
        )
    elif isinstance(objective, MarginObjective):
        objective.head.load_state_dict(state)
    else:
        objective.load_state_dict(state)
