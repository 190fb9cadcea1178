"""Measures the CenterFace box -> 112 template transform (``models.alignment.CENTERFACE_BOX``).

For LFW images of ``peopleDevTrain`` people (training-side data only), the detector's
central face gives a box and 5 landmarks; the similarity landmarks -> template
(``models.alignment.landmark_matrix``) has a zoom z (template px per image px) and a
rotation. Relative to the box, the transform is: ``scale = z * box width`` (template px
per box width) and ``centre`` = where the box centre lands in the template. The medians
over the sample are the constants. Then, on held-out ``peopleDevTest`` images, the mean
distance (template px at 112) between the 5 mapped landmarks and the template is
reported for box alignment and for landmark alignment (the latter is the irreducible
misfit of a similarity to each face).

    python experiments/box_transform.py --lfw ../shared/data/lfw --train 1000 --test 500
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from models.alignment import (
    ARCFACE_TEMPLATE_112,
    BoxTransform,
    apply_transform,
    box_matrix,
    landmark_matrix,
)
from models.detector import Detection, FaceDetector
from training.data.sources import parse_people_file


def lfw_paths(lfw: Path, people_file: str, count: int, seed: int) -> list[Path]:
    """``count`` images drawn (seeded) from the people of an LFW people list."""
    paths = [
        lfw / "images" / name / f"{name}_{number:04d}.jpg"
        for fold in parse_people_file(lfw / people_file)
        for name, images in fold
        for number in range(1, images + 1)
    ]
    rng = np.random.default_rng(seed)
    return [paths[i] for i in sorted(rng.choice(len(paths), size=count, replace=False))]


def central_face(detector: FaceDetector, path: Path) -> Detection | None:
    """The best-scoring detection whose box holds the image centre (LFW's subject)."""
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"))
    cy, cx = rgb.shape[0] / 2, rgb.shape[1] / 2
    for det in detector.detect(rgb):  # best score first
        x1, y1, x2, y2 = det.box
        if x1 <= cx <= x2 and y1 <= cy <= y2:
            return det
    return None


def relative_transform(det: Detection) -> tuple[float, float, float, float, float]:
    """(scale per box width, per box height, centre x, centre y, roll in degrees)."""
    matrix = landmark_matrix(det.landmarks)
    zoom = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    x1, y1, x2, y2 = det.box
    centre = apply_transform(matrix, [((x1 + x2) / 2, (y1 + y2) / 2)])[0]
    roll = float(np.degrees(np.arctan2(matrix[1, 0], matrix[0, 0])))
    return zoom * (x2 - x1), zoom * (y2 - y1), float(centre[0]), float(centre[1]), roll


def landmark_error(matrix: np.ndarray, det: Detection) -> float:
    """Mean distance (template px at 112) of the mapped landmarks from the template."""
    mapped = apply_transform(matrix, det.landmarks)
    return float(np.linalg.norm(mapped - ARCFACE_TEMPLATE_112, axis=1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", type=Path, default=Path("../shared/data/lfw"))
    parser.add_argument("--train", type=int, default=1000, help="peopleDevTrain images")
    parser.add_argument("--test", type=int, default=500, help="peopleDevTest images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    detector = FaceDetector()
    train = lfw_paths(args.lfw, "peopleDevTrain.txt", args.train, args.seed)
    found = [d for d in (central_face(detector, p) for p in train) if d is not None]
    table = np.array([relative_transform(d) for d in found])
    print(f"peopleDevTrain: {len(found)}/{len(train)} images with a central face")
    quartiles = np.percentile(table, [25, 50, 75], axis=0)
    for column, name in enumerate(
        ["scale / box width", "scale / box height", "centre x", "centre y", "roll (deg)"]
    ):
        q1, median, q3 = quartiles[:, column]
        spread = (q3 - q1) / abs(median) if median else float("nan")
        print(
            f"  {name:<20} median {median:8.3f}  mean {table[:, column].mean():8.3f}  "
            f"IQR [{q1:.3f}, {q3:.3f}]  IQR/median {spread:.3f}"
        )
    measured = BoxTransform(
        scale=round(float(quartiles[1, 0]), 2),
        centre=(round(float(quartiles[1, 2]), 2), round(float(quartiles[1, 3]), 2)),
    )
    print(f"constants: {measured}")

    test = lfw_paths(args.lfw, "peopleDevTest.txt", args.test, args.seed)
    held_out = [d for d in (central_face(detector, p) for p in test) if d is not None]
    by_box = np.array([landmark_error(box_matrix(d.box, measured), d) for d in held_out])
    by_landmarks = np.array([landmark_error(landmark_matrix(d.landmarks), d) for d in held_out])
    print(f"peopleDevTest: {len(held_out)}/{len(test)} images with a central face")
    for name, errors in (("landmark alignment", by_landmarks), ("box alignment", by_box)):
        p50, p90 = np.percentile(errors, [50, 90])
        print(
            f"  {name:<19} mean landmark error {errors.mean():5.2f} px  "
            f"median {p50:5.2f}  90th percentile {p90:5.2f}  (template px at 112)"
        )


if __name__ == "__main__":
    main()
