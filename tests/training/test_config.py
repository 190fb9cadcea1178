"""Typed YAML configs: shipped files load, bases merge, unknown keys and bad types fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.heads import list_heads
from training.config import (
    ConfigError,
    TrainConfig,
    config_from_dict,
    load_config,
    merge_overrides,
    parse_override,
)

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path: Path) -> None:
    config = load_config(path)
    assert isinstance(config, TrainConfig)


def test_deck_recipe_ships_for_every_head() -> None:
    for head in list_heads():
        config = load_config(CONFIGS / f"casia_{head}.yaml")
        assert config.head.name == head
        assert config.model.backbone == "ir50"
        assert config.schedule.epochs == 18
        assert config.optim.lr == 0.1 and config.optim.momentum == 0.9
        assert config.optim.weight_decay == pytest.approx(5e-4)
        assert config.schedule.kind == "step"
        assert config.crossres.fraction == 0.5
        assert config.engine.out_dir == f"runs/casia-{head}"


def test_base_is_merged_key_by_key(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(
        "name: base\noptim: {lr: 0.1, momentum: 0.8}\nengine: {batch_size: 32}\n"
    )
    (tmp_path / "exp.yaml").write_text("base: base.yaml\nname: exp\noptim: {lr: 0.01}\n")
    config = load_config(tmp_path / "exp.yaml")
    assert config.name == "exp"
    assert config.optim.lr == 0.01
    assert config.optim.momentum == 0.8  # kept from the base
    assert config.engine.batch_size == 32


def test_unknown_key_is_rejected_with_the_valid_keys(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("optim: {lrr: 0.1}\n")
    with pytest.raises(ConfigError, match=r"optim.*unknown key.*'lrr'.*valid keys.*'lr'"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="unknown key"):
        config_from_dict({"engin": {}})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"engine": {"batch_size": "64"}}, "engine.batch_size: expected an integer"),
        ({"engine": {"batch_size": 1.5}}, "engine.batch_size: expected an integer"),
        ({"data": {"kind": "zip"}}, "data.kind"),
        ({"optim": {"grad_clip": "x"}}, "optim.grad_clip"),
        ({"crossres": {"fraction": 1.5}}, "fraction"),
        ({"crossres": {"r_min": 50, "r_max": 20}}, "r_min"),
        ({"engine": {"progress": "yes"}}, "expected true/false"),
        ({"validation": {"view": 3}}, "validation.view"),
    ],
)
def test_wrong_values_are_rejected(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_numbers_and_nested_sections_are_typed() -> None:
    config = config_from_dict(
        {"optim": {"lr": 1}, "finetune": {"method": "octuplet", "octuplet": {"margin": 1}}}
    )
    assert isinstance(config.optim.lr, float)
    assert config.finetune is not None
    assert config.finetune.octuplet.margin == 1.0
    assert config.finetune.derivenet.pyramid == [8, 16, 24, 32]


def test_command_line_overrides() -> None:
    assert parse_override("engine.batch_size=64") == {"engine": {"batch_size": 64}}
    merged = merge_overrides(["engine.batch_size=8", "engine.device=cpu", "optim.lr=1e-3"])
    assert merged == {"engine": {"batch_size": 8, "device": "cpu"}, "optim": {"lr": 1e-3}}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("engine.batch_size")


def test_base_cycle_is_reported(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")
