"""Packs LFW peopleDevTrain as 112x112 crops small enough to carry to a GPU machine.

The device tool carries at most 64 MiB with the working tree; the deep-funneled 250 px
JPEGs of peopleDevTrain are ~100 MB. This writes the fixed LFW crop of every training
image (``training.faces.crop_lfw_deepfunneled``, the crop training would take anyway)
as a JPEG (quality 90; ~28 MiB in all) under the same relative path, plus the people/pairs files, so
the packed folder is a drop-in ``data.root`` with ``data.face_mode: aligned`` and the
teacher cache keys (``images/NAME/NAME_0001.jpg``) stay valid.

    python experiments/pack_lfw_crops.py --lfw ../shared/data/lfw --out runs/pack/lfw112
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from PIL import Image

from training.data.sources import parse_people_file
from training.faces import crop_lfw_deepfunneled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", type=Path, default=Path("../shared/data/lfw"))
    parser.add_argument("--out", type=Path, default=Path("runs/pack/lfw112"))
    parser.add_argument("--people", default="peopleDevTrain.txt")
    parser.add_argument("--min-images", type=int, default=2)
    parser.add_argument("--quality", type=int, default=90)
    args = parser.parse_args()

    written = 0
    for fold in parse_people_file(args.lfw / args.people):
        for name, count in fold:
            if count < args.min_images:
                continue
            for number in range(1, count + 1):
                relative = Path("images") / name / f"{name}_{number:04d}.jpg"
                target = args.out / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                with Image.open(args.lfw / relative) as image:
                    crop = crop_lfw_deepfunneled(image)
                Image.fromarray(crop).save(target, quality=args.quality)
                written += 1
    for listing in args.lfw.glob("*.txt"):
        shutil.copy2(listing, args.out / listing.name)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"{written} crops, {size / 2**20:.1f} MiB in {args.out}")


if __name__ == "__main__":
    main()
