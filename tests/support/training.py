"""Synthetic identities for the training tests: learnable, tiny, generated on the fly
(``from tests.support.training import ...``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from training.data.sources import FaceSource


def identity_face(identity: int, image: int, size: int = 112) -> np.ndarray:
    """RGB uint8 (size, size, 3): a smooth colour pattern fixed per identity, with a
    per-image shift and noise, so identities are separable but images differ."""
    rng = np.random.default_rng([identity, 7])
    coarse = rng.uniform(30, 225, size=(4, 4, 3)).astype(np.uint8)
    base = np.asarray(
        Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32
    )
    # fine stripes give the sharp images a high Laplacian score
    yy, xx = np.mgrid[0:size, 0:size]
    stripes = 25.0 * np.sin((xx * (1 + identity % 3) + yy) * 0.9)[..., None]
    noise_rng = np.random.default_rng([identity, image, 11])
    shifted = np.roll(base + stripes, shift=int(noise_rng.integers(-4, 5)), axis=1)
    noisy = shifted + noise_rng.normal(0.0, 6.0, size=shifted.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


class SyntheticSource(FaceSource):
    """``classes`` identities x ``per_class`` images, generated on ``load``."""

    def __init__(self, classes: int = 6, per_class: int = 6) -> None:
        self.labels = np.repeat(np.arange(classes, dtype=np.int64), per_class)
        self.class_names = [f"id{c}" for c in range(classes)]
        self.description = f"synthetic ({classes}x{per_class})"
        self.per_class = per_class

    def load(self, index: int) -> np.ndarray:
        return identity_face(int(self.labels[index]), index % self.per_class)


def fake_lfw(root: Path, people: int = 8, per_person: int = 4) -> None:
    """An LFW-shaped folder (250 px images) with a pairsDevTest.txt using every image:
    two matched pairs per person, two mismatched pairs per person."""
    names = [f"Person_{chr(65 + i)}" for i in range(people)]
    for identity, name in enumerate(names):
        (root / "images" / name).mkdir(parents=True)
        for n in range(1, per_person + 1):
            face = Image.fromarray(identity_face(identity, n)).resize((250, 250))
            face.save(root / "images" / name / f"{name}_{n:04d}.jpg")
    matched = [f"{name}\t{a}\t{a + 1}" for name in names for a in (1, 3)]
    mismatched = [
        f"{names[i]}\t{n}\t{names[(i + 1) % people]}\t{n}" for i in range(people) for n in (2, 4)
    ]
    lines = [str(len(matched)), *matched, *mismatched]
    (root / "pairsDevTest.txt").write_text("\n".join(lines) + "\n")
