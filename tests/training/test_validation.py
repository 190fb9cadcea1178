"""Periodic validation through the evaluation module (LFW pairs at several resolutions)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from models.backbones import create_backbone
from tests.support.training import fake_lfw
from training.validation import LFWValidator


def test_lfw_validator_scores_every_resolution(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    fake_lfw(tmp_path)
    validator = LFWValidator(tmp_path, view=1, resolutions=(112, 14), batch_size=16)
    assert validator.protocol.pairs == 32 and validator.faces.shape == (32, 112, 112, 3)
    backbone = create_backbone("ir-tiny", embedding_size=16).train()
    values = validator(backbone, step=7)
    assert set(values) == {"lfw_112/accuracy", "lfw_112/auc", "lfw_14/accuracy", "lfw_14/auc"}
    assert backbone.training  # handed back in training mode
    # the synthetic identities differ in their coarse colour pattern, so a 4x4 colour
    # summary (centred) separates every pair at 112 px: the validator must find that
    colour = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), _Centre()).train()
    values = validator(colour, step=7)
    assert values["lfw_112/accuracy"] == 1.0 and values["lfw_112/auc"] == 1.0
    assert colour.training


class _Centre(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - x.mean(dim=1, keepdim=True)


def test_validator_needs_data() -> None:
    with pytest.raises(ValueError, match="lfw_dir or a protocol"):
        LFWValidator(None)
