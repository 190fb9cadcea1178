"""Typed YAML configs: shipped files load, bases merge, unknown keys and bad types fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.heads import list_heads
from training.config import (
    ConfigError,
    CrossResConfig,
    DataConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
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


def test_unknown_nested_key_names_its_path_and_the_valid_keys() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"data": {"unlabelled": {"root": "x", "rot": 1}}})
    assert str(info.value) == (
        "data.unlabelled: unknown key(s) ['rot']; valid keys: "
        "['root', 'manifest', 'sources', 'max_border_frac', 'cache', 'fraction']"
    )


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
        ({"engine": {"batch_size": True}}, "engine.batch_size: expected an integer, got True"),
        ({"optim": {"lr": True}}, "optim.lr: expected a number, got True"),
        ({"optim": {"lr": "0.1"}}, "optim.lr: expected a number, got '0.1'"),
        ({"optim": {"lr": None}}, r"optim.lr: null is not allowed \(expected a number\)"),
        ({"engine": {"progress": 1}}, "engine.progress: expected true/false, got 1"),
        ({"model": {"backbone": 50}}, "model.backbone: expected a string, got 50"),
        ({"data": {"crop_scale": 0.5}}, "data.crop_scale: expected a list, got float"),
        ({"data": {"crop_scale": [0.5, "x"]}}, r"data.crop_scale\[1\]: expected a number"),
        ({"finetune": {"method": "sgd"}},
         "finetune.method: expected one of 'octuplet' or 'derivenet', got 'sgd'"),
        ({"data": {"kind": None}}, r"data.kind: null is not allowed \(expected one of 'folder'"),
        ({"engine": 3}, "engine: expected a mapping, got int"),
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


def test_empty_sections_get_defaults_and_optional_ones_stay_off() -> None:
    config = config_from_dict({"data": None, "finetune": {"octuplet": None}, "distill": None})
    assert config.data == DataConfig()
    assert config.finetune is not None and config.finetune.octuplet.r_max == 32
    assert config.distill is None


def test_built_in_code_it_is_checked_and_stays_mutable() -> None:
    config = TrainConfig(data=DataConfig(root="faces"))
    config.engine.out_dir = "elsewhere"
    assert config.data.root == "faces" and config.engine.out_dir == "elsewhere"
    with pytest.raises(ConfigError, match=r"^crossres\.fraction must be in \[0, 1\]$"):
        TrainConfig(crossres=CrossResConfig(fraction=2.0))
    with pytest.raises(ConfigError, match=r"engine\.batch_size: expected an integer"):
        TrainConfig(engine={"batch_size": "8"})


def test_config_to_dict_is_plain_data_that_round_trips() -> None:
    config = config_from_dict({"finetune": {}, "optim": {"lr": 1}})
    raw = config_to_dict(config)
    assert raw["optim"]["lr"] == 1.0 and isinstance(raw["optim"]["lr"], float)
    assert raw["finetune"]["octuplet"]["margin"] == 0.25 and raw["distill"] is None
    assert config_from_dict(raw) == config
