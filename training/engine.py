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

The loop (:meth:`Trainer._fit`) is made of named steps: setup (``training.setup``), one
optimiser step, log, validate, checkpoint. What is trained is the objective's business
(``training.objectives``): the engine never names one.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from models.checkpoint import Checkpoint
from models.quality_torch import laplacian_quality_torch
from training.config import ConfigError, TrainConfig, config_to_dict
from training.data import FaceSource
from training.distributed import init_distributed, resolve_device, rng_state
from training.setup import RunState, TrainResult, setup_run
from training.train_log import append_jsonl, step_scalars
from training.validation import Validator

logger = logging.getLogger(__name__)

#: Steps at the start of an invocation left out of the throughput (worker start-up).
THROUGHPUT_SKIP = 3


def _normalise(pixels: torch.Tensor) -> torch.Tensor:
    return (pixels - 127.5) / 127.5


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
        started = time.monotonic()
        ctx = init_distributed(resolve_device(self.config.engine.device).type)
        try:
            return self._fit(setup_run(
                self.config, self.method, ctx, started, source=self.source,
                validator=self.validator, init_checkpoint=self.init_checkpoint,
            ))
        finally:
            if ctx.owns_group and dist.is_initialized():
                dist.destroy_process_group()

    def _fit(self, run: RunState) -> TrainResult:
        c, e = self.config, self.config.engine
        bar = tqdm(
            total=run.total_steps, initial=run.step, desc=c.name, unit="step",
            disable=not (e.progress and run.ctx.is_main), dynamic_ncols=True,
        )
        run.window_time = time.perf_counter()
        if c.validation.at_start and run.step == 0:
            self._validate(run)
        run.forward_module.train()
        stop = False
        while run.step < run.total_steps and not stop:
            if run.batch_in_epoch >= run.steps_per_epoch:
                run.epoch, run.batch_in_epoch = run.epoch + 1, 0
            run.sampler.set_epoch(run.epoch, run.batch_in_epoch)
            for batch in run.loader:
                inputs = self._inputs(run, batch)
                loss, stats, lr, grad_norm = self._step(run, inputs)
                bar.update(1)
                stop = self._out_of_time(run)
                if run.step % e.log_every == 0 or run.step == run.total_steps or stop:
                    self._log(run, bar, inputs, loss, stats, lr, grad_norm)
                done = run.step >= run.total_steps or stop
                if e.checkpoint_every and run.step % e.checkpoint_every == 0 and not done:
                    self._save(run)
                if c.validation.every_steps and run.step % c.validation.every_steps == 0 \
                        and not done:
                    self._validate(run)
                if done:
                    break
            else:  # the epoch ran out
                run.epoch, run.batch_in_epoch = run.epoch + 1, 0
                if run.step < run.total_steps:
                    self._save(run)
                    if not c.validation.every_steps:
                        self._validate(run)
        bar.close()
        return self._finish(run)

    # ------------------------------------------------------------------ one step

    def _inputs(self, run: RunState, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The objective's batch on the device: normalised input, its quality q, flags."""
        device = run.device
        pixels = batch["image"].to(device, non_blocking=True).float()
        inputs: dict[str, torch.Tensor] = {
            "quality": laplacian_quality_torch(pixels),
            "input": _normalise(pixels),
            **{key: batch[key].to(device, non_blocking=True)
               for key in ("label", "degraded", "side", "index")},
        }
        if run.module.objective.needs_hr:
            hr = batch["hr"].to(device, non_blocking=True).float()
            inputs["hr_quality"] = laplacian_quality_torch(hr)
            inputs["hr_input"] = _normalise(hr)
        if self.config.engine.channels_last:
            for key in ("input", "hr_input"):
                if key in inputs:
                    inputs[key] = inputs[key].contiguous(memory_format=torch.channels_last)
        return inputs

    def _step(
        self, run: RunState, inputs: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, Any], float, torch.Tensor | None]:
        """One optimiser step; returns ``(loss, stats, lr, grad_norm)``."""
        lr = run.schedule.apply(run.optimizer, run.step)
        amp_dtype, scaler, optimizer = run.amp_dtype, run.scaler, run.optimizer
        with torch.autocast(
            run.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
        ):
            loss, stats = run.forward_module(inputs)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        clip = self.config.optim.grad_clip
        grad_norm = torch.nn.utils.clip_grad_norm_(run.params, clip) if clip is not None else None
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        elif self._finite(run, loss, grad_norm):
            optimizer.step()
        run.step += 1
        run.batch_in_epoch += 1
        run.steps_this_run += 1
        images = inputs["label"].shape[0] * run.ctx.world_size
        run.window_images += images
        if run.steps_this_run == THROUGHPUT_SKIP:
            run.throughput_start = time.perf_counter()
        elif run.throughput_start is not None:
            run.throughput_images += images
        if self.record_losses:
            run.result.losses.append((run.step, float(loss.detach())))
        return loss, stats, lr, grad_norm

    def _finite(self, run: RunState, loss: torch.Tensor, grad_norm: torch.Tensor | None) -> bool:
        """Whether this step may update the weights, checked before the update so that no
        checkpoint holds non-finite weights. A step is non-finite when its loss or its
        gradient norm is; under DDP only the norm decides (the same on every rank, since
        DDP averages the gradients), so all ranks stop or skip together. Without
        ``engine.skip_nonfinite`` the first such step stops the run; with it, the step is
        skipped (gradients dropped) and the run stops after that many in a row."""
        limit = self.config.engine.skip_nonfinite
        distributed = run.ctx.distributed
        norm = grad_norm
        if norm is None and (limit or distributed):
            norm = torch.nn.utils.clip_grad_norm_(run.params, float("inf"))
        if (norm is None or bool(torch.isfinite(norm))) and \
                (distributed or bool(torch.isfinite(loss))):
            run.nonfinite_in_a_row = 0
            return True
        run.nonfinite_in_a_row += 1
        if not limit:
            raise FloatingPointError(
                f"loss is {float(loss)} at step {run.step + 1} (gradient norm "
                f"{None if norm is None else float(norm)}); lower optim.lr, enable "
                "optim.grad_clip or engine.skip_nonfinite, or use engine.precision=fp32"
            )
        run.optimizer.zero_grad(set_to_none=True)
        run.skipped_steps += 1
        logger.warning("step %d: non-finite loss or gradients, skipped (%d in a row, %d "
                       "in this run)", run.step + 1, run.nonfinite_in_a_row, run.skipped_steps)
        if run.nonfinite_in_a_row > limit:
            raise FloatingPointError(
                f"{run.nonfinite_in_a_row} non-finite steps in a row at step {run.step + 1} "
                f"(engine.skip_nonfinite={limit}); lower optim.lr, enable optim.grad_clip "
                "or use engine.precision=fp32"
            )
        return False

    def _out_of_time(self, run: RunState) -> bool:
        """``engine.max_minutes`` has passed (on any rank)."""
        if self.config.engine.max_minutes is None:
            return False
        over = time.monotonic() - run.started >= self.config.engine.max_minutes * 60
        if run.ctx.distributed:
            flag = torch.tensor([float(over)], device=run.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            over = bool(flag.item())
        return over

    # ------------------------------------------------------------------ log, validate, save

    def _log(
        self, run: RunState, bar: Any, inputs: dict[str, torch.Tensor], loss: torch.Tensor,
        stats: dict[str, Any], lr: float, grad_norm: torch.Tensor | None,
    ) -> None:
        """Scalars to the bar, TensorBoard and metrics.jsonl."""
        now = time.perf_counter()
        speed = run.window_images / max(now - run.window_time, 1e-9)
        run.window_time, run.window_images = now, 0
        scalars = step_scalars(inputs, loss, stats, lr, grad_norm, run.ctx)
        scalars["speed/images_per_second"] = speed
        if self.config.engine.skip_nonfinite:
            scalars["train/skipped_steps"] = run.skipped_steps
        if not run.ctx.is_main:
            return
        bar.set_postfix(loss=f"{scalars['train/loss']:.3f}", img_s=f"{speed:.0f}", lr=f"{lr:.2e}")
        if run.writer is not None:
            for key, value in scalars.items():
                run.writer.add_scalar(key, value, run.step)
        append_jsonl(self.out_dir / "metrics.jsonl", {
            "step": run.step, "epoch": run.epoch,
            "elapsed_s": round(time.monotonic() - run.started, 1), **scalars,
        })

    def _validate(self, run: RunState) -> None:
        if run.validator is not None and run.ctx.is_main:
            began = time.perf_counter()
            values = run.validator(run.backbone, run.step)
            run.result.validation.append((run.step, values))
            append_jsonl(self.out_dir / "validation.jsonl",
                         {"step": run.step, "epoch": run.epoch, **values})
            if run.writer is not None:
                for key, value in values.items():
                    run.writer.add_scalar(f"val/{key}", value, run.step)
            logger.info("validation at step %d (%.1f s): %s", run.step,
                        time.perf_counter() - began,
                        ", ".join(f"{k}={v:.4f}" for k, v in values.items()))
        if run.ctx.distributed:
            dist.barrier()

    def _save(self, run: RunState) -> None:
        state = self._checkpoint_state(run)  # every rank takes part in gathering RNG states
        if run.ctx.is_main:
            run.last_checkpoint = self._checkpoint(state, run.step)
        if run.ctx.distributed:
            dist.barrier()

    def _checkpoint_state(self, run: RunState) -> Checkpoint:
        rngs: dict[str, Any] = {f"rank{run.ctx.rank}": rng_state()}
        if run.ctx.distributed:
            gathered: list[Any] = [None] * run.ctx.world_size
            dist.all_gather_object(gathered, rngs)
            rngs = {k: v for part in gathered for k, v in part.items()}
        return Checkpoint(run.backbone_name, run.backbone_kwargs, run.backbone.state_dict(), {
            "head_name": run.head_name,
            "head_state": run.module.objective.checkpoint_state(),
            "method": self.method,
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.schedule.state_dict(),
            "scaler": run.scaler.state_dict() if run.scaler is not None else None,
            "step": run.step,
            "epoch": run.epoch,
            "batch_in_epoch": run.batch_in_epoch,
            "config": config_to_dict(self.config),
            "num_classes": run.source.num_classes,
            "training_data": run.source.description,
            "rng": rngs,
        })

    def _finish(self, run: RunState) -> TrainResult:
        """The final checkpoint and validation; what the run did."""
        if run.batch_in_epoch >= run.steps_per_epoch:
            run.epoch, run.batch_in_epoch = run.epoch + 1, 0
        self._save(run)
        self._validate(run)
        if run.writer is not None:
            run.writer.close()
        result = run.result
        elapsed = time.perf_counter() - (run.throughput_start or time.perf_counter())
        result.step, result.epoch = run.step, run.epoch
        result.images_per_second = run.throughput_images / elapsed if elapsed > 0 else 0.0
        result.checkpoint = run.last_checkpoint
        result.finished = run.step >= run.total_steps
        result.elapsed_s = time.monotonic() - run.started
        logger.info(
            "%s: stopped at step %d/%d after %.1f min; %.1f img/s%s",
            self.config.name, run.step, run.total_steps, result.elapsed_s / 60,
            result.images_per_second,
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
