"""Fixtures for the evaluation tests: a pixel-baseline ONNX model and synthetic faces.

Synthetic identities are smooth random colour patterns (one base pattern per person,
small noise per image), so the pixel baseline recognises them perfectly at full
resolution: identification tests can then assert exact ranks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.eval.baseline import build_pixel_baseline


@pytest.fixture(scope="session")
def pixel_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pixel-baseline ONNX artifact (8x8 thumbnail, 192-d) with its metadata."""
    path = tmp_path_factory.mktemp("model") / "model.onnx"
    build_pixel_baseline(path, grid=8)
    return path


def _identity_image(identity: int, shot: int, size: tuple[int, int]) -> Image.Image:
    base = np.random.default_rng(1000 + identity).uniform(0, 255, (4, 4, 3))
    noise = np.random.default_rng(identity * 7919 + shot).normal(0, 6, (4, 4, 3))
    small = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
    return small.resize(size, Image.Resampling.BICUBIC)


@pytest.fixture(scope="session")
def identity_image() -> Callable[..., Image.Image]:
    """``identity_image(identity, shot, size=(40, 48))``: a synthetic face of a person."""

    def make(identity: int, shot: int, size: tuple[int, int] = (40, 48)) -> Image.Image:
        return _identity_image(identity, shot, size)

    return make


@pytest.fixture(scope="session")
def lfw_dir(shared_data_dir: Path) -> Path:
    """``../shared/data/lfw`` with its pairs files; skips when absent."""
    lfw = shared_data_dir / "lfw"
    if not (lfw / "pairs.txt").is_file() or not (lfw / "images").is_dir():
        pytest.skip(f"LFW with pairs.txt not found at {lfw}")
    return lfw
