"""Periodic validation through the evaluation module (LFW pairs at several resolutions)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.backbones import create_backbone
from tests.training.conftest import fake_lfw
from training.validation import LFWValidator


def test_lfw_validator_scores_every_resolution(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    fake_lfw(tmp_path)
    validator = LFWValidator(tmp_path, view=1, resolutions=(112, 14), batch_size=16)
    assert validator.protocol.pairs == 32 and validator.faces.shape == (32, 112, 112, 3)
    backbone = create_backbone("ir-tiny", embedding_size=16).train()
    values = validator(backbone, step=7)
    assert set(values) == {"lfw_112/accuracy", "lfw_112/auc", "lfw_14/accuracy", "lfw_14/auc"}
    assert all(0.0 <= v <= 1.0 for v in values.values())
    assert backbone.training  # handed back in training mode


def test_validator_needs_data() -> None:
    with pytest.raises(ValueError, match="lfw_dir or a protocol"):
        LFWValidator(None)
