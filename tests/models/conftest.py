"""Fixtures for tests/models: a tiny IR backbone and its exported artifact, and the gate of
the tiny gated models the tests build from two of them."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from models.artifact import GateBranch, GateInfo, metadata_path
from models.backbones import create_backbone
from models.export import export_onnx

TINY_DIM = 16
#: The gate of a tiny gated model (seed 0 sharp, seed 1 blurred): noise pictures have a
#: Laplacian q far above 3, noise enlarged from 7 px far below.
TINY_GATE = GateInfo(threshold=3.0, sharp=GateBranch(name="tiny-a", source="seed 0"),
                     blurred=GateBranch(name="tiny-b", source="seed 1"), chosen_on="a test")


def make_tiny_backbone(seed: int = 0) -> nn.Module:
    """ir-tiny with random BatchNorm statistics, so eval-mode outputs are not trivial."""
    torch.manual_seed(seed)
    net = create_backbone("ir-tiny", embedding_size=TINY_DIM)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


@pytest.fixture(scope="session")
def make_tiny() -> Callable[..., nn.Module]:
    """:func:`make_tiny_backbone`: ``make_tiny(seed=0)``; outputs have ``TINY_DIM`` dims."""
    return make_tiny_backbone


@pytest.fixture(scope="module")
def tiny_backbone() -> nn.Module:
    return make_tiny_backbone()


@pytest.fixture(scope="module")
def tiny_artifact(tiny_backbone: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``model.onnx`` + ``model.json`` of :func:`tiny_backbone`; do not modify, copy."""
    onnx_path = tmp_path_factory.mktemp("artifact") / "model.onnx"
    export_onnx(
        tiny_backbone,
        onnx_path,
        name="lrfr-tiny",
        version="0.0.1",
        backbone_name="ir-tiny",
        head="arcface",
        training_data="none (random weights)",
    )
    return onnx_path


@pytest.fixture
def artifact_copy(tiny_artifact: Path, tmp_path: Path) -> Callable[[], Path]:
    """Copies the tiny artifact into this test's folder, for tests that break it."""

    def copy() -> Path:
        target = tmp_path / "model.onnx"
        shutil.copy(tiny_artifact, target)
        shutil.copy(metadata_path(tiny_artifact), metadata_path(target))
        return target

    return copy
