"""The training engine: one loop for training (margin heads) and fine-tuning.

What it does, per the recipe (METHODS §5, §8):

* SGD with momentum and weight decay (none on BatchNorm/PReLU parameters and biases),
  a per-iteration schedule (linear warm-up, then step or cosine), gradient clipping;
* mixed precision: bf16 autocast where the hardware has it (CUDA with bf16, CPUs with
  AVX512-BF16/AMX), fp16 with a gradient scaler on request, else fp32; channels_last;
* cross-resolution batches planned by the sampler (``training.data``); the Laplacian
  quality q is computed here, on the batch exactly as the network sees it (0-255,
  after degradation and resizing), and reaches the head with the ``degraded`` flags;
* checkpoints (``docs/architecture.md`` keys plus the full training state: optimizer,
  schedule, RNG states, data position), and a resume that continues the same run: the
  data order and every sample's augmentation are functions of (seed, epoch, batch), so
  the resumed run sees the batches the uninterrupted run would have seen;
* DDP through ``torchrun`` (env://; NCCL on CUDA, gloo on CPU), set up when a run
  starts, never at import. The margin head's class centres are **replicated** on every
  rank (the head is part of the DDP module and its gradient is all-reduced), which
  suits CASIA-WebFace's 10,575 classes; sharding them is not implemented;
* a tqdm bar (img/s, loss), TensorBoard scalars (loss, lr, accuracy, margins, quality
  of HR vs LR samples, r), periodic validation through a pluggable validator.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from torch import nn
from tqdm.auto import tqdm

from models.backbones import create_backbone
from models.checkpoint import Checkpoint
from models.quality_torch import laplacian_quality_torch
from training.config import ConfigError, TrainConfig, config_to_dict
from training.data import (
    Augment,
    FaceDataset,
    FaceSource,
    build_source,
    make_loader,
)
from training.distributed import (
    DistContext,
    autocast_dtype,
    init_distributed,
    resolve_device,
    rng_state,
    seed_everything,
    set_rng_state,
)
from training.objectives import Objective, build_objective
from training.optim import LRSchedule, parameter_groups
from training.teacher import resolve_pretrained
from training.train_log import append_jsonl, step_scalars
from training.validation import Validator

logger = logging.getLogger(__name__)

#: Steps at the start of an invocation left out of the throughput (worker start-up).
THROUGHPUT_SKIP = 3


# --------------------------------------------------------------------------- module


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


# --------------------------------------------------------------------------- trainer


def _normalise(pixels: torch.Tensor) -> torch.Tensor:
    return (pixels - 127.5) / 127.5


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


class Trainer:
    """Runs one training or fine-tuning configuration.

    Args:
        config: the run.
        method: the objective (``margin`` for training, ``octuplet``/``derivenet``).
        validator: called as ``validator(backbone, step)`` on rank 0; default: an LFW
            validator when ``config.validation.lfw_dir`` is set, else none.
        source: the training faces (default: built from ``config.data``).
        init_checkpoint: a training checkpoint whose backbone starts the run
            (fine-tuning); ignored when the run resumes from its own checkpoint.
        record_losses: keep every step's loss in the result (one host sync per step).
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        method: str = "margin",
        validator: Validator | None = None,
        source: FaceSource | None = None,
        init_checkpoint: str | Path | None = None,
        record_losses: bool = False,
    ) -> None:
        self.config = config
        self.method = method
        self.validator = validator
        self.source = source
        self.init_checkpoint = init_checkpoint
        self.record_losses = record_losses
        self.out_dir = Path(config.engine.out_dir)

    # ------------------------------------------------------------------ building

    def _backbone(self) -> tuple[nn.Module, str, dict[str, Any], Checkpoint | None]:
        """(backbone, name, kwargs, initial checkpoint or None)."""
        if self.init_checkpoint is not None:
            start = Checkpoint.load(self.init_checkpoint)
            logger.info("fine-tuning %s from %s (step %s)", start.backbone_name,
                        self.init_checkpoint, start.get("step"))
            return start.build_backbone(), start.backbone_name, start.backbone_kwargs, start
        m = self.config.model
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

    def _default_validator(self, device: torch.device) -> Validator | None:
        v = self.config.validation
        if not v.lfw_dir:
            return None
        from training.validation import LFWValidator

        return LFWValidator(
            v.lfw_dir, view=v.view, resolutions=v.resolutions, limit_pairs=v.limit_pairs,
            batch_size=v.batch_size, device=device,
        )

    def _find_resume(self) -> Path | None:
        resume = self.config.engine.resume
        if resume == "none":
            return None
        if resume == "auto":
            last = self.out_dir / "last.pt"
            return last if last.is_file() else None
        path = Path(resume)
        if not path.is_file():
            raise FileNotFoundError(f"engine.resume: checkpoint not found: {path}")
        return path

    # ------------------------------------------------------------------ checkpoints

    def _checkpoint(self, state: Checkpoint, step: int) -> Path:
        """Writes ``last.pt`` and a step checkpoint, pruning old step checkpoints."""
        last = state.save(self.out_dir / "last.pt")
        keep = self.config.engine.keep_checkpoints
        if keep > 0:
            folder = self.out_dir / "checkpoints"
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(last, folder / f"step_{step:08d}.pt")
            for old in sorted(folder.glob("step_*.pt"))[:-keep]:
                old.unlink()
        logger.info("checkpoint at step %d: %s", step, last)
        return last

    # ------------------------------------------------------------------ the loop

    def fit(self) -> TrainResult:
        """Trains until the schedule, ``max_steps`` or ``max_minutes`` ends the run."""
        c = self.config
        started = time.monotonic()
        preliminary = resolve_device(c.engine.device)
        ctx = init_distributed(preliminary.type)
        try:
            return self._fit(ctx, started)
        finally:
            if ctx.owns_group and dist.is_initialized():
                dist.destroy_process_group()

    def _fit(self, ctx: DistContext, started: float) -> TrainResult:
        c = self.config
        e = c.engine
        device = resolve_device(e.device, ctx.local_rank)
        amp_dtype = autocast_dtype(e.precision, device)
        seed_everything(e.seed)

        source = self.source if self.source is not None else build_source(c.data)
        backbone, backbone_name, backbone_kwargs, start = self._backbone()
        embedding_size = int(backbone_kwargs.get("embedding_size", c.model.embedding_size))
        input_size = int(backbone_kwargs.get("input_size", c.model.input_size))
        objective = build_objective(self.method, c, source, embedding_size)
        head_name = objective.recorded_name(start)
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
            input_size=input_size,
            down=c.crossres.down,
            up=c.crossres.up,
            return_hr=objective.needs_hr,
        )
        loader = make_loader(
            dataset, sampler, num_workers=c.data.num_workers,
            prefetch_factor=c.data.prefetch_factor, pin_memory=device.type == "cuda",
        )
        steps_per_epoch = len(sampler)
        schedule = LRSchedule(c.optim.lr, c.schedule, steps_per_epoch)
        total_steps = schedule.total_steps
        if e.max_steps is not None:
            total_steps = min(total_steps, e.max_steps)

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
        scaler = (
            torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
        )

        step, epoch, batch_in_epoch = 0, 0, 0
        resume_path = self._find_resume()
        if resume_path is not None:
            state = Checkpoint.load(resume_path)
            state.load_backbone_into(module.backbone)
            module.objective.load_checkpoint_state(state.training["head_state"])
            optimizer.load_state_dict(state.training["optimizer"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state.get("scaler"))
            step, epoch = int(state.training["step"]), int(state.training["epoch"])
            batch_in_epoch = int(state.get("batch_in_epoch", 0))
            rngs = state.get("rng", {})
            if f"rank{ctx.rank}" in rngs:
                set_rng_state(rngs[f"rank{ctx.rank}"])
            logger.info("resumed from %s at step %d (epoch %d, batch %d)",
                        resume_path, step, epoch, batch_in_epoch)
        else:
            torch.manual_seed(e.seed + ctx.rank)  # dropout differs per rank

        forward_module: nn.Module = module
        if e.compile:
            module.backbone = torch.compile(module.backbone)  # type: ignore[assignment]
        if ctx.distributed:
            forward_module = nn.parallel.DistributedDataParallel(
                module, device_ids=[device.index] if device.type == "cuda" else None
            )
        bare_backbone = backbone  # never the compiled wrapper: its state has clean keys

        validator = self.validator
        if validator is None and ctx.is_main:
            validator = self._default_validator(device)
        writer = None
        if ctx.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.yaml").write_text(
                yaml.safe_dump(config_to_dict(c), sort_keys=False), encoding="utf-8"
            )
            if e.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=step)
        logger.info(
            "%s: %s (%d classes) -> %s + %s on %s x%d, %s precision, batch %d/process, "
            "%d steps/epoch, %d steps in total (from %d)",
            c.name, source.description, source.num_classes, backbone_name, head_name,
            device, ctx.world_size, "fp32" if amp_dtype is None else str(amp_dtype),
            e.batch_size, steps_per_epoch, total_steps, step,
        )

        def checkpoint_state() -> Checkpoint:
            rngs: dict[str, Any] = {f"rank{ctx.rank}": rng_state()}
            if ctx.distributed:
                gathered: list[Any] = [None] * ctx.world_size
                dist.all_gather_object(gathered, rngs)
                rngs = {k: v for part in gathered for k, v in part.items()}
            return Checkpoint(backbone_name, backbone_kwargs, bare_backbone.state_dict(), {
                "head_name": head_name,
                "head_state": module.objective.checkpoint_state(),
                "method": self.method,
                "optimizer": optimizer.state_dict(),
                "scheduler": schedule.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "step": step,
                "epoch": epoch,
                "batch_in_epoch": batch_in_epoch,
                "config": config_to_dict(c),
                "num_classes": source.num_classes,
                "training_data": source.description,
                "rng": rngs,
            })

        def save_checkpoint() -> Path | None:
            state = checkpoint_state()  # every rank takes part in gathering RNG states
            path = self._checkpoint(state, step) if ctx.is_main else None
            if ctx.distributed:
                dist.barrier()
            return path

        result = TrainResult(step=step, epoch=epoch)

        def validate() -> None:
            if validator is not None and ctx.is_main:
                began = time.perf_counter()
                values = validator(bare_backbone, step)
                result.validation.append((step, values))
                append_jsonl(self.out_dir / "validation.jsonl",
                              {"step": step, "epoch": epoch, **values})
                if writer is not None:
                    for key, value in values.items():
                        writer.add_scalar(f"val/{key}", value, step)
                logger.info("validation at step %d (%.1f s): %s", step,
                            time.perf_counter() - began,
                            ", ".join(f"{k}={v:.4f}" for k, v in values.items()))
            if ctx.distributed:
                dist.barrier()

        bar = tqdm(
            total=total_steps, initial=step, desc=c.name, unit="step",
            disable=not (e.progress and ctx.is_main), dynamic_ncols=True,
        )
        params = [p for p in module.parameters() if p.requires_grad]
        clip = c.optim.grad_clip
        last_checkpoint: Path | None = None
        throughput_start: float | None = None
        throughput_images = 0
        window_time, window_images = time.perf_counter(), 0
        stop = False
        steps_this_run = 0
        needs_hr = objective.needs_hr
        if c.validation.at_start and step == 0:
            validate()
        forward_module.train()

        while step < total_steps and not stop:
            if batch_in_epoch >= steps_per_epoch:
                epoch, batch_in_epoch = epoch + 1, 0
            sampler.set_epoch(epoch, batch_in_epoch)
            for batch in loader:
                pixels = batch["image"].to(device, non_blocking=True).float()
                inputs: dict[str, torch.Tensor] = {
                    "quality": laplacian_quality_torch(pixels),
                    "input": _normalise(pixels),
                    "label": batch["label"].to(device, non_blocking=True),
                    "degraded": batch["degraded"].to(device, non_blocking=True),
                    "side": batch["side"].to(device, non_blocking=True),
                    "index": batch["index"].to(device, non_blocking=True),
                }
                if needs_hr:
                    hr = batch["hr"].to(device, non_blocking=True).float()
                    inputs["hr_quality"] = laplacian_quality_torch(hr)
                    inputs["hr_input"] = _normalise(hr)
                if e.channels_last:
                    for key in ("input", "hr_input"):
                        if key in inputs:
                            inputs[key] = inputs[key].contiguous(
                                memory_format=torch.channels_last
                            )
                lr = schedule.apply(optimizer, step)
                with torch.autocast(
                    device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
                ):
                    loss, stats = forward_module(inputs)
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()
                grad_norm = (
                    torch.nn.utils.clip_grad_norm_(params, clip) if clip is not None else None
                )
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                step += 1
                batch_in_epoch += 1
                steps_this_run += 1
                images = inputs["label"].shape[0] * ctx.world_size
                window_images += images
                if steps_this_run == THROUGHPUT_SKIP:
                    throughput_start = time.perf_counter()
                elif throughput_start is not None:
                    throughput_images += images
                if self.record_losses:
                    result.losses.append((step, float(loss.detach())))
                bar.update(1)

                if e.max_minutes is not None:
                    over = time.monotonic() - started >= e.max_minutes * 60
                    if ctx.distributed:
                        flag = torch.tensor([float(over)], device=device)
                        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                        over = bool(flag.item())
                    stop = over
                if step % e.log_every == 0 or step == total_steps or stop:
                    now = time.perf_counter()
                    speed = window_images / max(now - window_time, 1e-9)
                    window_time, window_images = now, 0
                    scalars = step_scalars(inputs, loss, stats, lr, grad_norm, ctx)
                    scalars["speed/images_per_second"] = speed
                    if not math.isfinite(scalars["train/loss"]) and scaler is None:
                        raise FloatingPointError(
                            f"loss is {scalars['train/loss']} at step {step}; lower optim.lr "
                            "or enable optim.grad_clip"
                        )
                    if ctx.is_main:
                        bar.set_postfix(loss=f"{scalars['train/loss']:.3f}",
                                        img_s=f"{speed:.0f}", lr=f"{lr:.2e}")
                        if writer is not None:
                            for key, value in scalars.items():
                                writer.add_scalar(key, value, step)
                        append_jsonl(self.out_dir / "metrics.jsonl", {
                            "step": step, "epoch": epoch,
                            "elapsed_s": round(time.monotonic() - started, 1), **scalars,
                        })

                done = step >= total_steps or stop
                if e.checkpoint_every and step % e.checkpoint_every == 0 and not done:
                    last_checkpoint = save_checkpoint() or last_checkpoint
                if c.validation.every_steps and step % c.validation.every_steps == 0 and not done:
                    validate()
                if done:
                    break
            else:
                # the epoch ran out
                epoch, batch_in_epoch = epoch + 1, 0
                if step < total_steps:
                    last_checkpoint = save_checkpoint() or last_checkpoint
                    if not c.validation.every_steps:
                        validate()
        bar.close()

        if batch_in_epoch >= steps_per_epoch:
            epoch, batch_in_epoch = epoch + 1, 0
        last_checkpoint = save_checkpoint() or last_checkpoint
        validate()
        if writer is not None:
            writer.close()
        elapsed = time.perf_counter() - (throughput_start or time.perf_counter())
        result.step, result.epoch = step, epoch
        result.images_per_second = throughput_images / elapsed if elapsed > 0 else 0.0
        result.checkpoint = last_checkpoint
        result.finished = step >= total_steps
        result.elapsed_s = time.monotonic() - started
        logger.info(
            "%s: stopped at step %d/%d after %.1f min; %.1f img/s%s",
            c.name, step, total_steps, result.elapsed_s / 60, result.images_per_second,
            "" if result.finished else " (time limit; resume continues the run)",
        )
        return result


def train(config: TrainConfig, **kwargs: Any) -> TrainResult:
    """Trains ``config`` with its margin head (see :class:`Trainer` for ``kwargs``)."""
    return Trainer(config, method="margin", **kwargs).fit()


def finetune(config: TrainConfig, **kwargs: Any) -> TrainResult:
    """Fine-tunes ``config.finetune.checkpoint`` with ``config.finetune.method``."""
    if config.finetune is None:
        raise ConfigError("this config has no 'finetune' section")
    if not config.finetune.checkpoint:
        raise ConfigError("finetune.checkpoint is empty: name the trained model to start from")
    kwargs.setdefault("init_checkpoint", config.finetune.checkpoint)
    return Trainer(config, method=config.finetune.method, **kwargs).fit()
