"""Synthetic identities for the training tests: learnable, tiny, generated on the fly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from tests.support.training import SyntheticSource, identity_face
from training.config import TrainConfig, config_from_dict


@pytest.fixture
def synthetic_source() -> SyntheticSource:
    return SyntheticSource()


@pytest.fixture
def identity_folder(tmp_path: Path) -> Path:
    """A CASIA-WebFace-style folder: 4 identities x 3 JPEGs."""
    root = tmp_path / "faces"
    for identity in range(4):
        folder = root / f"{identity:07d}"
        folder.mkdir(parents=True)
        for image in range(3):
            Image.fromarray(identity_face(identity, image)).save(folder / f"{image + 1:03d}.jpg")
    return root


def _tiny_raw(tmp_path: Path, sections: dict[str, Any]) -> dict[str, Any]:
    """A tiny CPU config (ir-tiny at 32 px, fp32, no workers) as YAML would hold it, with
    ``sections`` merged in (a dict into the section of that name, anything else replacing)."""
    raw: dict[str, Any] = {
        "name": "tiny",
        "data": {"kind": "folder", "root": str(tmp_path / "unused"), "num_workers": 0},
        "crossres": {"fraction": 0.5, "r_min": 7, "r_max": 28},
        "model": {"backbone": "ir-tiny", "embedding_size": 32, "input_size": 32},
        "head": {"name": "arcface", "params": {}},
        "optim": {"lr": 0.05, "weight_decay": 5e-4, "grad_clip": 5.0},
        "schedule": {"epochs": 100, "warmup_epochs": 0.0, "kind": "cosine"},
        "engine": {
            "out_dir": str(tmp_path / "run"),
            "batch_size": 12,
            "device": "cpu",
            "precision": "fp32",
            "channels_last": False,
            "log_every": 5,
            "checkpoint_every": 0,
            "progress": False,
            "tensorboard": False,
            "max_steps": 20,
        },
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return raw


@pytest.fixture
def tiny_config(tmp_path: Path) -> Callable[..., TrainConfig]:
    """A factory of tiny CPU configs (ir-tiny at 32 px, fp32, no workers)."""

    def make(**sections: Any) -> TrainConfig:
        return config_from_dict(_tiny_raw(tmp_path, sections))

    return make


@pytest.fixture
def tiny_config_file(tmp_path: Path) -> Callable[..., Path]:
    """A factory of tiny CPU configs written to ``tmp_path / file`` (for the CLI)."""

    def make(file: str = "tiny.yaml", **sections: Any) -> Path:
        path = tmp_path / file
        path.write_text(yaml.safe_dump(_tiny_raw(tmp_path, sections)))
        return path

    return make
