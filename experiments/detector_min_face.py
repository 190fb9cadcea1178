"""Measures the smallest face CenterFace (``models.detector``) finds, with and without
upscaling.

LFW images of ``peopleDevTrain`` people (training-side data only) are shrunk (bicubic,
antialiased) so the face -- the CenterFace box found on the full 250 px image -- is
7 ... 56 px wide, then shown to the detector three ways:

* ``crop``: only the face, a square 1.5 box widths wide around the box centre;
* ``160x120`` / ``640x480``: the whole shrunk image (cut to fit) pasted at a random
  place into a grey canvas with Gaussian noise (sigma 12).

A face counts as found when a detection's centre lies in the expected box and its width
is within a factor 2 of the expected width. Rows are settings and enlargement factors
(``x2`` = every image enlarged twice before detection, ``auto`` = the detector's
default ``upscale_small=True``); columns are face widths. ``FP`` = other detections
per image; the last rows run on canvases without a face.

    python experiments/detector_min_face.py --lfw ../shared/data/lfw --images 100
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
from box_transform import lfw_paths  # the sibling script (run from experiments/)
from PIL import Image

from models.alignment import ARCFACE_TEMPLATE_112, apply_transform, box_matrix, landmark_matrix
from models.detector import Detection, FaceDetector

SIZES = (7, 10, 14, 20, 28, 40, 56)
NOISE_SIGMA = 12.0


def canvas(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    noise = rng.normal(128.0, NOISE_SIGMA, size=(height, width, 1))
    return np.repeat(noise, 3, axis=2).clip(0, 255).astype(np.uint8)


def is_hit(det: Detection, expected: np.ndarray) -> bool:
    x1, y1, x2, y2 = expected
    cx, cy = (det.box[0] + det.box[2]) / 2, (det.box[1] + det.box[3]) / 2
    return x1 <= cx <= x2 and y1 <= cy <= y2 and 0.5 <= det.width / (x2 - x1) <= 2.0


Shift = tuple[float, float, float]  # view = original * factor + (dx, dy)
View = Callable[[Image.Image, np.ndarray, int, np.random.Generator], tuple[np.ndarray, Shift]]


def crop_view(
    image: Image.Image, box: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, Shift]:
    """The face alone: a square 1.5 box widths wide, shrunk so the box is ``size`` px."""
    del rng
    width = box[2] - box[0]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    left, top, right, bottom = (
        round(v)
        for v in (cx - 0.75 * width, cy - 0.75 * width, cx + 0.75 * width, cy + 0.75 * width)
    )
    factor = size / width
    side = max(1, round((right - left) * factor))
    crop = image.crop((left, top, right, bottom)).resize((side, side), Image.Resampling.BICUBIC)
    factor = side / (right - left)
    return np.asarray(crop), (factor, -left * factor, -top * factor)


def canvas_view(shape: tuple[int, int]) -> View:
    """The whole shrunk image pasted at a random place into a noisy canvas of ``shape``."""
    height, width = shape

    def view(
        image: Image.Image, box: np.ndarray, size: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, Shift]:
        factor = size / (box[2] - box[0])
        new_size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
        small = np.asarray(image.resize(new_size, Image.Resampling.BICUBIC))
        factor = new_size[0] / image.width
        centre = (box[:2] + box[2:]) / 2 * factor
        # cut the shrunk image to fit, around the face
        h, w = min(small.shape[0], height), min(small.shape[1], width)
        top = int(np.clip(centre[1] - h / 2, 0, small.shape[0] - h))
        left = int(np.clip(centre[0] - w / 2, 0, small.shape[1] - w))
        y, x = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        frame = canvas(height, width, rng)
        frame[y : y + h, x : x + w] = small[top : top + h, left : left + w]
        return frame, (factor, x - left, y - top)

    return view


def alignment_errors(det: Detection, landmarks: np.ndarray) -> tuple[float, float]:
    """Mean distance (template px at 112) of the true ``landmarks`` from the template,
    aligned by the detection's landmarks and by its box."""
    errors = []
    for matrix in (landmark_matrix(det.landmarks), box_matrix(det.box)):
        mapped = apply_transform(matrix, landmarks)
        errors.append(float(np.linalg.norm(mapped - ARCFACE_TEMPLATE_112, axis=1).mean()))
    return errors[0], errors[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", type=Path, default=Path("../shared/data/lfw"))
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--swap-channels", action="store_true", help="feed BGR instead of RGB (a check)"
    )
    args = parser.parse_args()

    detector = FaceDetector(score_threshold=args.threshold)
    # max_side 1280 so that x2 on a 640x480 frame is really enlarged
    big = FaceDetector(score_threshold=args.threshold, max_side=1280)
    settings: list[tuple[str, View, FaceDetector, list[bool | int]]] = [
        ("crop", crop_view, detector, [1, 2, 3, 4, True]),
        ("160x120", canvas_view((120, 160)), detector, [1, 2, 3, 4, True]),
        ("640x480", canvas_view((480, 640)), big, [1, 2]),
    ]
    rng = np.random.default_rng(args.seed)
    hits: dict[tuple[str, str, int], list[bool]] = defaultdict(list)
    false: dict[tuple[str, str, int], list[int]] = defaultdict(list)
    seconds: dict[tuple[str, str], list[float]] = defaultdict(list)
    ratios = []
    errors: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)

    def run(det: FaceDetector, pixels: np.ndarray, factor: bool | int) -> list[Detection]:
        if args.swap_channels:
            pixels = pixels[..., ::-1]
        return det.detect(pixels, upscale_small=factor)

    def label(factor: bool | int) -> str:
        return "auto" if factor is True else f"x{factor}"

    for path in lfw_paths(args.lfw, "peopleDevTrain.txt", args.images, args.seed):
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        full = [d for d in detector.detect(np.asarray(image)) if d.width > 40]
        if not full:
            continue
        face = full[0]
        ratios.append(np.linalg.norm(face.landmarks[1] - face.landmarks[0]) / face.width)
        box = np.asarray(face.box)
        for size in SIZES:
            for name, view, det, factors in settings:
                pixels, (factor, dx, dy) = view(image, box, size, rng)
                expected = box * factor + [dx, dy, dx, dy]
                landmarks = face.landmarks * factor + [dx, dy]
                for upscale in factors:
                    start = time.perf_counter()
                    found = run(det, pixels, upscale)
                    seconds[name, label(upscale)].append(time.perf_counter() - start)
                    matched = [d for d in found if is_hit(d, expected)]
                    hits[name, label(upscale), size].append(bool(matched))
                    false[name, label(upscale), size].append(len(found) - len(matched))
                    if matched and upscale is True:
                        errors[name, size].append(alignment_errors(matched[0], landmarks))

    count = len(ratios)
    print(
        f"{count} LFW peopleDevTrain images, threshold {args.threshold}, "
        f"{'BGR' if args.swap_channels else 'RGB'} input; inter-ocular distance = "
        f"{np.median(ratios):.2f} x box width (median)"
    )
    header = "| setting | " + " | ".join(f"{s} px" for s in SIZES) + " | FP/img | ms/img |"
    print(header)
    print("|" + "---|" * (len(SIZES) + 3))
    for name, _, _, factors in settings:
        for factor in factors:
            key = (name, label(factor))
            rates = [100 * np.mean(hits[(*key, s)]) for s in SIZES]
            fp = np.mean([np.mean(false[(*key, s)]) for s in SIZES])
            ms = 1000 * np.mean(seconds[key])
            cells = " | ".join(f"{r:.0f}%" for r in rates)
            print(f"| {name} {label(factor)} | {cells} | {fp:.2f} | {ms:.0f} |")
    print("\nmean landmark error (template px at 112) of the found faces, auto upscaling:")
    print("| setting | alignment | " + " | ".join(f"{s} px" for s in SIZES) + " |")
    print("|" + "---|" * (len(SIZES) + 2))
    for name in ("crop", "160x120"):
        for column, how in enumerate(("landmarks", "box")):
            cells = " | ".join(
                f"{np.mean([e[column] for e in errors[name, s]]):.1f}" if errors[name, s] else "-"
                for s in SIZES
            )
            print(f"| {name} | {how} | {cells} |")
    print()
    # false detections on faceless canvases, per enlargement
    for shape, det, factors in (((120, 160), detector, [1, 2, 3, 4]), ((480, 640), big, [1, 2])):
        for factor in factors:
            n = sum(len(run(det, canvas(*shape, rng), factor)) for _ in range(count))
            print(f"no face {shape[1]}x{shape[0]} x{factor}: {n / count:.2f} detections/img")


if __name__ == "__main__":
    main()
