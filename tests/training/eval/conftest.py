"""Fixtures for the evaluation tests: a pixel-baseline ONNX model and synthetic faces.

Synthetic identities are smooth random colour patterns (one base pattern per person,
small noise per image), so the pixel baseline recognises them perfectly at full
resolution: identification tests can then assert exact ranks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

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


def _scipy_io():
    return pytest.importorskip("scipy.io")


def _cells(rows: list[tuple[str, str]]) -> np.ndarray:
    table = np.empty((len(rows), 2), dtype=object)
    for i, (a, b) in enumerate(rows):
        table[i, 0], table[i, 1] = a, b
    return table


def make_survface(root: Path, image: Callable[..., Image.Image], people: int = 6) -> Path:
    """QMUL-SurvFace layout: Face_Verification_Test_Set/{*.mat, verification_images/}."""
    test_set = root / "QMUL-SurvFace" / "Face_Verification_Test_Set"
    images = test_set / "verification_images"
    images.mkdir(parents=True)
    for person in range(people):
        for shot in range(2):
            image(person, shot, (24, 30)).save(images / f"{person + 1}_cam1_{shot + 1}.jpg")
    positives = [(f"{p + 1}_cam1_1.jpg", f"{p + 1}_cam1_2.jpg") for p in range(people)]
    negatives = [(f"{p + 1}_cam1_1.jpg", f"{(p + 1) % people + 1}_cam1_2.jpg")
                 for p in range(people)]
    _scipy_io().savemat(test_set / "positive_pairs_names.mat",
                     {"positive_pairs_names": _cells(positives)})
    _scipy_io().savemat(test_set / "negative_pairs_names.mat",
                     {"negative_pairs_names": _cells(negatives)})
    return root / "QMUL-SurvFace"


def make_scface(root: Path, image: Callable[..., Image.Image], people: int = 4) -> Path:
    """SCface layout: mugshots and per-distance camera folders (plus a duplicate folder)."""
    mugshots = root / "mugshot_frontal_cropped_all"
    mugshots.mkdir(parents=True)
    for person in range(1, people + 1):
        image(person, 0, (60, 75)).save(mugshots / f"{person:03d}_frontal.JPG")
        for distance in (1, 2, 3):
            for camera in (1, 2, 3, 4, 5, 6):
                folder = root / f"surveillance_cameras_distance_{distance}" / f"cam{camera}"
                folder.mkdir(parents=True, exist_ok=True)
                side = {1: 20, 2: 32, 3: 48}[distance]
                shot = image(person, 10 * distance + camera, (side, side))
                shot.save(folder / f"{person:03d}_cam{camera}_{distance}.jpg")
    # the distribution also ships an "all" folder: the same names must count once
    duplicate = root / "surveillance_cameras_all"
    duplicate.mkdir()
    image(1, 11, (20, 20)).save(duplicate / "001_cam1_1.jpg")
    (root / "readme.txt").write_text("not an image")
    return root


def make_tinyface(
    root: Path, image: Callable[..., Image.Image], *, with_mat: bool, people: int = 5
) -> Path:
    """TinyFace layout: tinyface/Testing_Set/{Probe,Gallery_Match,Gallery_Distractor}."""
    test_set = root / "tinyface" / "Testing_Set"
    for name in ("Probe", "Gallery_Match", "Gallery_Distractor"):
        (test_set / name).mkdir(parents=True)
    probes, gallery = [], []
    for person in range(1, people + 1):
        for shot in range(2):
            name = f"{person}_{shot + 1}.jpg"
            image(person, shot, (20, 24)).save(test_set / "Probe" / name)
            probes.append((name, person))
        for shot in range(2, 5):
            name = f"{person}_{shot + 1}.jpg"
            image(person, shot, (22, 26)).save(test_set / "Gallery_Match" / name)
            gallery.append((name, person))
    for d in range(7):
        image(500 + d, 0, (18, 22)).save(test_set / "Gallery_Distractor" / f"{d + 1}_1.jpg")
    if with_mat:
        def column(names: list[str]) -> np.ndarray:
            cells = np.empty((len(names), 1), dtype=object)
            for i, n in enumerate(names):
                cells[i, 0] = n
            return cells

        _scipy_io().savemat(test_set / "probe_img_ID_pairs.mat", {
            "probe_set": column([n for n, _ in probes]),
            "probe_ids": np.array([[i] for _, i in probes], dtype=np.float64),
        })
        _scipy_io().savemat(test_set / "gallery_match_img_ID_pairs.mat", {
            "gallery_set": column([n for n, _ in gallery]),
            "gallery_ids": np.array([[i] for _, i in gallery], dtype=np.float64),
        })
    return root


def make_identity_folder(root: Path, image: Callable[..., Image.Image]) -> Path:
    """One sub-folder per person; person_c has a single image (gallery only)."""
    people = (("person_a", 4), ("person_b", 3), ("person_c", 1), ("person_d", 5))
    for identity, (person, count) in enumerate(people):
        folder = root / person
        folder.mkdir(parents=True)
        for shot in range(count):
            image(identity, shot, (112, 112)).save(folder / f"{shot:02d}.png")
    return root


@pytest.fixture(scope="session")
def layouts() -> SimpleNamespace:
    """Builders of tiny datasets in the official layouts: ``layouts.survface(root,
    identity_image)``, ``.scface``, ``.tinyface(..., with_mat=)``, ``.identity_folder``."""
    return SimpleNamespace(
        survface=make_survface, scface=make_scface, tinyface=make_tinyface,
        identity_folder=make_identity_folder,
    )
