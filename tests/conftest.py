"""Fixtures shared by every test folder. Keep this small; folder-specific fixtures go
in the folder's own conftest."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The read-only face data beside the project (see ../shared/data/README.md);
#: LRFR_SHARED_DATA points elsewhere (e.g. for a checkout that is not beside it).
SHARED_DATA = Path(
    os.environ.get("LRFR_SHARED_DATA") or REPO_ROOT / ".." / "shared" / "data"
).resolve()


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """``../shared/data``; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared face data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def orl_dir(shared_data_dir: Path) -> Path:
    """``../shared/data/orl`` (a folder per subject); skips when absent."""
    orl = shared_data_dir / "orl"
    if not (orl / "s1" / "1.pgm").is_file():
        pytest.skip(f"ORL faces not found at {orl}")
    return orl


@pytest.fixture(scope="session")
def reference_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The non-learned reference model (``service.reference_model``), built once."""
    from service.reference_model import build_reference_model

    path = tmp_path_factory.mktemp("model") / "reference.onnx"
    build_reference_model(path)
    return path


@pytest.fixture(scope="session")
def lfw_images_dir(shared_data_dir: Path) -> Path:
    """``../shared/data/lfw/images`` (one folder per person); skips when absent."""
    images = shared_data_dir / "lfw" / "images"
    if not images.is_dir():
        pytest.skip(f"LFW images not found at {images}")
    return images


def load_face(path: Path, size: int = 112, crop: int = 150) -> np.ndarray:
    """RGB uint8 (size, size, 3): the centre ``crop`` square of an image, resized (bicubic).

    LFW's deep-funneled 250 px images hold the face in about the central 100-120 px, so a
    150 px centre crop is a loosely aligned face.
    """
    with Image.open(path) as image:
        rgb = image.convert("RGB")
        width, height = rgb.size
        side = min(crop, width, height)
        left, top = (width - side) // 2, (height - side) // 2
        face = rgb.crop((left, top, left + side, top + side))
        return np.asarray(face.resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)


@pytest.fixture(scope="session")
def lfw_face_paths(lfw_images_dir: Path) -> list[Path]:
    """The first image of the first 8 people (sorted by name): a fixed, small sample."""
    paths = []
    for person in sorted(p for p in lfw_images_dir.iterdir() if p.is_dir()):
        first = sorted(person.glob("*.jpg"))
        if first:
            paths.append(first[0])
        if len(paths) == 8:
            break
    if not paths:
        pytest.skip(f"no LFW images under {lfw_images_dir}")
    return paths


@pytest.fixture(scope="session")
def lfw_faces(lfw_face_paths: list[Path]) -> list[np.ndarray]:
    """Those faces as RGB uint8 (112, 112, 3) arrays (see :func:`load_face`)."""
    return [load_face(path) for path in lfw_face_paths]


@pytest.fixture(scope="session")
def face_loader() -> Callable[..., np.ndarray]:
    """:func:`load_face`, for tests that pick their own images."""
    return load_face
