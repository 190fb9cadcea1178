"""Face crops of every quality, for calibrating int8 activation ranges and for parity checks.

LFW people (by default ``peopleDevTrain.txt``, never the DevTest people the accuracy is
measured on) cut with the fixed deep-funneled box, each degraded to one resolution of a
cycle, so the crops span the qualities the model serves (sharp crops for a gate's sharp
branch, 7-56 px faces for its blurred one).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from training.degrade import degrade
from training.eval.datasets import lfw_image_folder, parse_people_file
from training.faces import crop_lfw_deepfunneled

#: The resolutions the crops cycle through: the evaluation's and the gate's grid.
RESOLUTIONS: tuple[int, ...] = (112, 80, 56, 40, 28, 20, 14, 10, 7)


def lfw_crops(
    lfw_root: str | Path,
    *,
    count: int,
    people_file: str = "peopleDevTrain.txt",
    resolutions: Sequence[int] = RESOLUTIONS,
    seed: int = 0,
) -> np.ndarray:
    """``count`` LFW crops (RGB uint8, (count, 112, 112, 3)), degraded in turn to each of
    ``resolutions``; images drawn at random (``seed``) from the people of ``people_file``.

    Raises:
        FileNotFoundError: the people file or an image is missing.
        ValueError: fewer images than ``count``.
    """
    if count < 1 or not resolutions:
        raise ValueError("need at least one crop and one resolution")
    images = lfw_image_folder(lfw_root)
    people = parse_people_file(Path(lfw_root) / people_file)
    paths = [images / name / f"{name}_{i:04d}.jpg"
             for fold in people for name, n in fold for i in range(1, n + 1)]
    if len(paths) < count:
        raise ValueError(f"{people_file} lists {len(paths)} images, {count} asked for")
    chosen = random.Random(seed).sample(paths, count)
    crops = []
    for i, path in enumerate(chosen):
        with Image.open(path) as image:
            crop = crop_lfw_deepfunneled(image)
        crops.append(degrade(crop, resolutions[i % len(resolutions)]))
    return np.stack(crops)
