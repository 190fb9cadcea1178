"""Building a training run: the backbone (from the config, a checkpoint or released
weights), the objective, the data, the optimiser, and the state a resume restores.
:class:`training.engine.Trainer` then runs it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from models.backbones import create_backbone
from models.checkpoint import Checkpoint
from training.config import ConfigError, TrainConfig, config_to_dict
from training.data import Augment, FaceDataset, FaceSource, build_source, make_loader
from training.distributed import (
    DistContext,
    autocast_dtype,
    resolve_device,
    seed_everything,
    set_rng_state,
)
from training.objectives import Objective, build_objective
from training.optim import LRSchedule, parameter_groups
from training.teacher import resolve_pretrained
from training.validation import Validator

logger = logging.getLogger(__name__)


class TrainModule(nn.Module):
    """Backbone + objective in one module, so DDP sees (and syncs) every parameter."""

    def __init__(self, backbone: nn.Module, objective: Objective) -> None:
        super().__init__()
        self.backbone = backbone
        self.objective = objective

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        return self.objective(self.backbone, batch)


@dataclass
class TrainResult:
    """What a run did.

    Attributes:
        step: iterations completed in total (this invocation and earlier ones).
        epoch: the epoch the next step belongs to.
        losses: ``(step, loss)`` of every step of this invocation, when recorded.
        validation: ``(step, values)`` of every validation of this invocation.
        images_per_second: training throughput of this invocation (all processes).
        checkpoint: the last checkpoint written.
        finished: the schedule (or ``max_steps``) was completed, not cut by time.
        elapsed_s: wall time of this invocation.
    """

    step: int
    epoch: int
    losses: list[tuple[int, float]] = field(default_factory=list)
    validation: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    images_per_second: float = 0.0
    checkpoint: Path | None = None
    finished: bool = True
    elapsed_s: float = 0.0


@dataclass
class RunState:
    """The state of one invocation of :meth:`training.engine.Trainer.fit`, shared by
    its steps (setup, step, log, validate, checkpoint)."""

    ctx: DistContext
    device: torch.device
    amp_dtype: torch.dtype | None
    started: float
    source: FaceSource
    backbone: nn.Module  # never the compiled wrapper: its state has clean keys
    backbone_name: str
    backbone_kwargs: dict[str, Any]
    head_name: str
    module: TrainModule
    forward_module: nn.Module  # the module, or its DDP wrapper
    sampler: Any
    loader: Any
    schedule: LRSchedule
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    total_steps: int
    params: list[nn.Parameter]
    result: TrainResult = field(default_factory=lambda: TrainResult(step=0, epoch=0))
    validator: Validator | None = None
    writer: Any = None
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    steps_this_run: int = 0
    throughput_start: float | None = None
    throughput_images: int = 0
    window_time: float = 0.0
    window_images: int = 0
    skipped_steps: int = 0  # non-finite steps skipped in this invocation
    nonfinite_in_a_row: int = 0
    last_checkpoint: Path | None = None

    @property
    def steps_per_epoch(self) -> int:
        return len(self.sampler)


def build_backbone(
    config: TrainConfig, init_checkpoint: str | Path | None
) -> tuple[nn.Module, str, dict[str, Any], Checkpoint | None]:
    """(backbone, name, kwargs, initial checkpoint or None): the checkpoint's backbone when
    fine-tuning, else ``config.model`` (from ``model.init_weights`` when set)."""
    if init_checkpoint is not None:
        start = Checkpoint.load(init_checkpoint)
        logger.info("fine-tuning %s from %s (step %s)", start.backbone_name,
                    init_checkpoint, start.get("step"))
        return start.build_backbone(), start.backbone_name, start.backbone_kwargs, start
    m = config.model
    kwargs = {
        "embedding_size": m.embedding_size,
        "dropout": m.dropout,
        "input_size": m.input_size,
        **m.kwargs,
    }
    backbone = create_backbone(m.backbone, **kwargs)
    if m.init_weights and Path(m.init_weights).suffix in (".pt", ".pth"):
        # a training checkpoint of the same backbone: a second stage of a recipe
        start = Checkpoint.load(m.init_weights)
        if start.backbone_name != m.backbone:
            raise ConfigError(f"model.init_weights {m.init_weights} holds a "
                              f"{start.backbone_name!r}, not {m.backbone!r}")
        start.load_backbone_into(backbone)
        logger.info("%s initialised from the checkpoint %s (step %s)", m.backbone,
                    m.init_weights, start.get("step"))
    elif m.init_weights:
        load_pretrained = getattr(backbone, "load_pretrained", None)
        if load_pretrained is None:
            raise ConfigError(f"model.init_weights: backbone {m.backbone!r} has no "
                              "released weights to start from (use dlib-resnet29)")
        path = resolve_pretrained(m.init_weights)
        load_pretrained(path)
        logger.info("%s initialised from %s", m.backbone, path)
    return backbone, m.backbone, kwargs, None

def default_validator(config: TrainConfig, device: torch.device) -> Validator | None:
    """LFW validation when ``validation.lfw_dir`` is set, else none."""
    v = config.validation
    if not v.lfw_dir:
        return None
    from training.validation import LFWValidator

    return LFWValidator(
        v.lfw_dir, view=v.view, resolutions=v.resolutions, limit_pairs=v.limit_pairs,
        batch_size=v.batch_size, device=device,
    )

def find_resume(config: TrainConfig) -> Path | None:
    """The checkpoint ``engine.resume`` names (``auto``: the run's own ``last.pt``)."""
    resume = config.engine.resume
    if resume == "none":
        return None
    if resume == "auto":
        last = Path(config.engine.out_dir) / "last.pt"
        return last if last.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"engine.resume: checkpoint not found: {path}")
    return path


def setup_run(
    config: TrainConfig,
    method: str,
    ctx: DistContext,
    started: float,
    *,
    source: FaceSource | None = None,
    validator: Validator | None = None,
    init_checkpoint: str | Path | None = None,
) -> RunState:
    """Builds the data, the model, the objective and the optimiser of a run; resumes it
    (see :class:`training.engine.Trainer` for the arguments)."""
    c, e = config, config.engine
    out_dir = Path(e.out_dir)
    device = resolve_device(e.device, ctx.local_rank)
    amp_dtype = autocast_dtype(e.precision, device)
    seed_everything(e.seed)

    source = source if source is not None else build_source(c.data)
    backbone, backbone_name, backbone_kwargs, start = build_backbone(c, init_checkpoint)
    embedding_size = int(backbone_kwargs.get("embedding_size", c.model.embedding_size))
    input_size = int(backbone_kwargs.get("input_size", c.model.input_size))
    objective = build_objective(method, c, source, embedding_size, backbone)
    if start is not None:
        objective.start_from(start)
    sampler = objective.sampler(source, c, rank=ctx.rank, world_size=ctx.world_size)
    dataset = FaceDataset(
        source,
        augment=Augment(
            flip=c.data.flip,
            crop_scale=tuple(c.data.crop_scale) if c.data.crop_scale else None,  # type: ignore[arg-type]
            colour_jitter=c.data.colour_jitter,
        ),
        input_size=input_size, down=c.crossres.down, up=c.crossres.up,
        camera=c.crossres.camera, return_hr=objective.needs_hr,
    )
    loader = make_loader(
        dataset, sampler, num_workers=c.data.num_workers,
        prefetch_factor=c.data.prefetch_factor, pin_memory=device.type == "cuda",
    )
    schedule = LRSchedule(c.optim.lr, c.schedule, len(sampler))

    module = TrainModule(backbone, objective)
    if e.sync_batchnorm and ctx.distributed:
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    module.to(device)
    if e.channels_last:
        # Module.to takes memory_format; torch's stubs leave it out
        module.backbone.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = torch.optim.SGD(
        parameter_groups([module], c.optim.weight_decay, c.optim.decay_norm_and_bias),
        lr=c.optim.lr, momentum=c.optim.momentum, nesterov=c.optim.nesterov,
    )
    run = RunState(
        ctx=ctx, device=device, amp_dtype=amp_dtype, started=started, source=source,
        backbone=backbone, backbone_name=backbone_name, backbone_kwargs=backbone_kwargs,
        head_name=objective.recorded_name(start), module=module, forward_module=module,
        sampler=sampler, loader=loader, schedule=schedule, optimizer=optimizer,
        scaler=torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None,
        total_steps=schedule.total_steps if e.max_steps is None
        else min(schedule.total_steps, e.max_steps),
        params=[p for p in module.parameters() if p.requires_grad],
    )
    resume(run, c)
    if e.compile:
        module.backbone = torch.compile(module.backbone)  # type: ignore[assignment]
    if ctx.distributed:
        run.forward_module = nn.parallel.DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None
        )
    run.result = TrainResult(step=run.step, epoch=run.epoch)
    run.validator = validator
    if ctx.is_main:
        if run.validator is None:
            run.validator = default_validator(c, device)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(
            yaml.safe_dump(config_to_dict(c), sort_keys=False), encoding="utf-8"
        )
        if e.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            run.writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=run.step)
    logger.info(
        "%s: %s (%d classes) -> %s + %s on %s x%d, %s precision, batch %d/process, "
        "%d steps/epoch, %d steps in total (from %d)",
        c.name, source.description, source.num_classes, backbone_name, run.head_name,
        device, ctx.world_size, "fp32" if amp_dtype is None else str(amp_dtype),
        e.batch_size, run.steps_per_epoch, run.total_steps, run.step,
    )
    return run

def resume(run: RunState, config: TrainConfig) -> None:
    """Continues from the run's own checkpoint (``engine.resume``), else seeds dropout."""
    resume_path = find_resume(config)
    if resume_path is None:
        torch.manual_seed(config.engine.seed + run.ctx.rank)  # dropout differs per rank
        return
    state = Checkpoint.load(resume_path)
    state.load_backbone_into(run.module.backbone)
    run.module.objective.load_checkpoint_state(state.training["head_state"])
    if state.is_slim:
        # a committed fp16 checkpoint (Checkpoint.slim): no momentum, no RNG states
        logger.warning("resuming from the slim checkpoint %s: the optimiser's momentum "
                       "restarts and the RNGs are reseeded", resume_path)
        torch.manual_seed(config.engine.seed + run.ctx.rank + int(state.training["step"]))
    else:
        run.optimizer.load_state_dict(state.training["optimizer"])
    if run.scaler is not None and state.get("scaler"):
        run.scaler.load_state_dict(state.get("scaler"))
    run.step, run.epoch = int(state.training["step"]), int(state.training["epoch"])
    run.batch_in_epoch = int(state.get("batch_in_epoch", 0))
    rngs = state.get("rng", {})
    if f"rank{run.ctx.rank}" in rngs:
        set_rng_state(rngs[f"rank{run.ctx.rank}"])
    logger.info("resumed from %s at step %d (epoch %d, batch %d)",
                resume_path, run.step, run.epoch, run.batch_in_epoch)
