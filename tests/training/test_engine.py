"""The training engine: every head learns, resume continues the same run, schedules,
optimiser groups, precision, quality and flags reaching the head, validation hook."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from models.heads import list_heads
from tests.support.training import SyntheticSource
from training import distributed
from training.config import ConfigError, ScheduleConfig, TrainConfig
from training.distributed import autocast_dtype
from training.engine import Trainer, train
from training.optim import LRSchedule, parameter_groups

HEAD_PARAMS: dict[str, dict[str, float]] = {
    # a small scale suits 6 classes and 20 steps; the formulas are the heads' own
    "sphereface": {},
    "cosface": {"scale": 16.0},
    "arcface": {"scale": 16.0},
    "adaface": {"scale": 16.0},
    "adalap": {"scale": 16.0},
    "approach1": {"scale": 16.0},
    "approach2": {"scale": 16.0},
}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _mean(values: list[tuple[int, float]]) -> float:
    return sum(v for _, v in values) / len(values)


@pytest.mark.parametrize("head", list_heads())
def test_a_few_dozen_steps_lower_the_loss(
    head: str, tiny_config: Callable[..., TrainConfig]
) -> None:
    config = tiny_config(
        head={"name": head, "params": HEAD_PARAMS.get(head, {})},
        engine={"max_steps": 24, "checkpoint_every": 0, "keep_checkpoints": 0},
    )
    result = train(config, source=SyntheticSource(), record_losses=True)
    assert result.step == 24 and len(result.losses) == 24
    first, last = _mean(result.losses[:4]), _mean(result.losses[-4:])
    assert all(torch.isfinite(torch.tensor(v)) for _, v in result.losses)
    assert last < 0.6 * first, f"{head}: loss {first:.3f} -> {last:.3f}"


def test_resume_gives_the_same_next_losses(
    tiny_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    common = {"name": "approach2", "params": {"scale": 16.0}}
    straight = tiny_config(
        head=common,
        engine={"out_dir": str(tmp_path / "a"), "max_steps": 10, "resume": "none"},
        data={"num_workers": 0, "flip": True, "crop_scale": [0.8, 1.0], "colour_jitter": 0.2},
        model={"dropout": 0.2},
    )
    uninterrupted = train(straight, source=SyntheticSource(), record_losses=True)

    def run(max_steps: int):
        config = tiny_config(
            head=common,
            engine={"out_dir": str(tmp_path / "b"), "max_steps": max_steps, "resume": "auto"},
            data={"num_workers": 0, "flip": True, "crop_scale": [0.8, 1.0],
                  "colour_jitter": 0.2},
            model={"dropout": 0.2},
        )
        return train(config, source=SyntheticSource(), record_losses=True)

    first = run(4)  # stops mid-epoch (3 steps per epoch)
    assert first.step == 4 and (tmp_path / "b" / "last.pt").is_file()
    second = run(10)
    assert [s for s, _ in second.losses] == list(range(5, 11))
    expected = [loss for _, loss in uninterrupted.losses]
    got = [loss for _, loss in first.losses + second.losses]
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)
    saved = torch.load(tmp_path / "b" / "last.pt", weights_only=False)
    assert saved["step"] == 10 and saved["epoch"] == 3 and saved["batch_in_epoch"] == 1


def test_checkpoint_has_the_contract_keys(tiny_config: Callable[..., TrainConfig]) -> None:
    config = tiny_config(engine={"max_steps": 3})
    result = train(config, source=SyntheticSource())
    assert result.checkpoint is not None
    state = torch.load(result.checkpoint, weights_only=False)
    for key in ("backbone_name", "backbone_kwargs", "backbone_state", "head_name",
                "head_state", "optimizer", "scheduler", "step", "epoch", "config"):
        assert key in state
    assert state["backbone_name"] == "ir-tiny" and state["head_name"] == "arcface"
    assert state["backbone_kwargs"]["input_size"] == 32
    assert state["head_state"]["weight"].shape == (32, 6)
    from models.export import backbone_from_checkpoint

    backbone, name = backbone_from_checkpoint(state)
    assert name == "ir-tiny" and backbone(torch.zeros(2, 3, 32, 32)).shape == (2, 32)


class _Spy(nn.Module):
    """Wraps a head and records what reaches it."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head
        self.calls: list[dict[str, torch.Tensor]] = []
        self.last_stats = {}

    def forward(self, embeddings, labels, quality=None, degraded=None):
        self.calls.append({"quality": quality.detach().clone(), "degraded": degraded.clone()})
        out = self.head(embeddings, labels, quality=quality, degraded=degraded)
        self.last_stats = self.head.last_stats
        return out


def test_quality_and_flags_reach_the_head(
    tiny_config: Callable[..., TrainConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.objectives.margin as objectives

    spies: list[_Spy] = []
    original = objectives.create_head

    def spy_head(*args, **kwargs):
        spies.append(_Spy(original(*args, **kwargs)))
        return spies[-1]

    monkeypatch.setattr(objectives, "create_head", spy_head)
    # κ = 2: m = clip(2 / q, 0.35, 0.5) separates the degraded (q ≈ 3.5) from the sharp
    # (q > 15) synthetic faces at 32 px
    config = tiny_config(head={"name": "approach2", "params": {"kappa": 2.0}},
                         engine={"max_steps": 3},
                         crossres={"fraction": 0.5, "r_min": 7, "r_max": 12})
    train(config, source=SyntheticSource())
    (spy,) = spies
    assert len(spy.calls) == 3
    for call in spy.calls:
        flags, quality = call["degraded"], call["quality"]
        assert flags.sum() == 6  # half of 12
        # degraded to 7..11 px: far blurrier than the sharp half, as the network sees it
        assert quality[flags].max() < quality[~flags].min()
    margins = spy.head.last_stats["margin"]
    expected = (2.0 / (quality + 1e-6)).clamp(0.35, 0.5)
    torch.testing.assert_close(margins, expected)
    assert margins[flags].mean() > margins[~flags].mean()


def test_validator_is_called_with_the_backbone(tiny_config: Callable[..., TrainConfig]) -> None:
    calls: list[tuple[int, bool]] = []

    def validator(backbone: nn.Module, step: int) -> dict[str, float]:
        calls.append((step, backbone.training))
        return {"score": float(step)}

    config = tiny_config(engine={"max_steps": 6}, validation={"every_steps": 4})
    result = train(config, source=SyntheticSource(), validator=validator)
    assert [s for s, _ in calls] == [4, 6]
    assert result.validation == [(4, {"score": 4.0}), (6, {"score": 6.0})]


def test_bf16_autocast_on_cpu_trains(tiny_config: Callable[..., TrainConfig]) -> None:
    config = tiny_config(engine={"max_steps": 3, "precision": "bf16", "channels_last": True})
    result = train(config, source=SyntheticSource(), record_losses=True)
    assert all(torch.isfinite(torch.tensor(v)) for _, v in result.losses)


def test_time_limit_stops_with_a_checkpoint(tiny_config: Callable[..., TrainConfig]) -> None:
    config = tiny_config(engine={"max_steps": 1000, "max_minutes": 0.0})
    result = train(config, source=SyntheticSource())
    assert result.step == 1 and not result.finished
    assert torch.load(result.checkpoint, weights_only=False)["step"] == 1


def _poison_steps(monkeypatch: pytest.MonkeyPatch, bad: set[int]) -> None:
    """Makes the loss NaN on the given (1-based) forward calls of the run."""
    from training.setup import TrainModule

    original = TrainModule.forward
    calls = itertools.count(1)

    def forward(self: TrainModule, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        loss, stats = original(self, inputs)
        return (loss * float("nan") if next(calls) in bad else loss), stats

    monkeypatch.setattr(TrainModule, "forward", forward)


def test_a_non_finite_step_stops_the_run_by_default(
    tiny_config: Callable[..., TrainConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    _poison_steps(monkeypatch, {2})
    config = tiny_config(engine={"max_steps": 4, "log_every": 4})
    with pytest.raises(FloatingPointError, match="loss is nan at step 2"):
        train(config, source=SyntheticSource())


def test_skip_nonfinite_skips_bad_steps_and_keeps_the_weights_finite(
    tiny_config: Callable[..., TrainConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    _poison_steps(monkeypatch, {2, 3, 5})
    config = tiny_config(engine={"max_steps": 6, "log_every": 1, "skip_nonfinite": 2})
    result = train(config, source=SyntheticSource(), record_losses=True)
    assert result.finished and result.step == 6
    losses = dict(result.losses)
    assert [s for s, v in losses.items() if not torch.isfinite(torch.tensor(v))] == [2, 3, 5]
    assert torch.isfinite(torch.tensor(losses[6]))  # the weights were never updated with NaN
    state = torch.load(result.checkpoint, weights_only=False)["backbone_state"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    rows = [json.loads(line) for line in
            (Path(config.engine.out_dir) / "metrics.jsonl").read_text().splitlines()]
    assert [r["train/skipped_steps"] for r in rows] == [0, 1, 2, 2, 3, 3]


def test_skip_nonfinite_stops_after_too_many_in_a_row(
    tiny_config: Callable[..., TrainConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    _poison_steps(monkeypatch, {2, 3, 4})
    config = tiny_config(engine={"max_steps": 6, "skip_nonfinite": 2})
    with pytest.raises(FloatingPointError, match="3 non-finite steps in a row at step 4"):
        train(config, source=SyntheticSource())


def test_precision_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    assert autocast_dtype("fp32", cpu) is None
    assert autocast_dtype("bf16", cpu) == torch.bfloat16
    # "auto" on the CPU: bf16 only where the CPU computes it natively
    monkeypatch.setattr(distributed, "cpu_supports_bf16", lambda: True)
    assert autocast_dtype("auto", cpu) == torch.bfloat16
    monkeypatch.setattr(distributed, "cpu_supports_bf16", lambda: False)
    assert autocast_dtype("auto", cpu) is None
    with pytest.raises(ConfigError, match="fp16 needs CUDA"):
        autocast_dtype("fp16", cpu)


def test_no_weight_decay_on_norms_and_biases() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.PReLU(4), nn.Flatten(),
                          nn.Linear(4, 2))
    decay, no_decay = parameter_groups([model], 5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert {p.ndim for p in decay["params"]} == {2, 4}
    assert len(decay["params"]) == 2  # conv and linear weights
    assert len(no_decay["params"]) == 5  # conv bias, BN weight + bias, PReLU, linear bias
    (everything,) = parameter_groups([model], 5e-4, decay_norm_and_bias=True)
    assert len(everything["params"]) == 7


def test_warmup_then_step_and_cosine_schedules() -> None:
    step = LRSchedule(0.1, ScheduleConfig(epochs=4, warmup_epochs=1, warmup_start=0.0,
                                          kind="step", milestones=[2, 3], gamma=0.1), 10)
    assert step.total_steps == 40 and step.warmup_steps == 10
    assert step.lr(0) == 0.0 and step.lr(5) == pytest.approx(0.05)
    assert step.lr(10) == pytest.approx(0.1) and step.lr(19) == pytest.approx(0.1)
    assert step.lr(20) == pytest.approx(0.01) and step.lr(35) == pytest.approx(0.001)
    cosine = LRSchedule(1.0, ScheduleConfig(epochs=2, warmup_epochs=0, kind="cosine",
                                            min_lr_factor=0.1), 50)
    assert cosine.lr(0) == pytest.approx(1.0)
    assert cosine.lr(50) == pytest.approx(0.55)
    assert cosine.lr(100) == pytest.approx(0.1)
    lrs = [cosine.lr(s) for s in range(100)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))


def test_trainer_rejects_an_empty_data_root(tiny_config: Callable[..., TrainConfig]) -> None:
    config = tiny_config(data={"root": ""})
    with pytest.raises(ValueError, match=r"data\.root is empty"):
        Trainer(config).fit()
