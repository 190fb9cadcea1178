"""The shipped branch-only graph against the same gated checkpoint exported with both
branches, on every LFW pairsDevTest image at nine sides (batches of 32, and some one at a
time), recorded in the artifact's metadata as ``branch_only_parity`` (the ONNX file is
unchanged, so its SHA-256 still holds). The bundled model's test requires the record.

    python experiments/branch_only_parity.py runs/card-2.0.0-octuplet/gated.pt \
        runs/ship-2.0.0/lrfr.onnx --lfw ../shared/data/lfw
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from models.artifact import file_sha256, load_metadata, write_metadata
from models.export import export_checkpoint
from models.quantize import compare_models
from training.degrade import degrade
from training.eval.datasets import load_lfw
from training.eval.runner import load_face_set
from training.faces import FaceLoader

SIDES = (112, 80, 56, 40, 28, 20, 14, 10, 7)
SINGLES = 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="the gated checkpoint (lrfr gate)")
    parser.add_argument("artifact", type=Path, help="the branch-only .onnx (its .json beside)")
    parser.add_argument("--lfw", type=Path, default=Path("../shared/data/lfw"))
    args = parser.parse_args()

    metadata = load_metadata(args.artifact)
    protocol = load_lfw(args.lfw, view=1)
    faces = load_face_set(protocol.images, FaceLoader("lfw"), progress=False).crops
    crops = np.concatenate([faces if side >= 112 else np.stack([degrade(f, side) for f in faces])
                            for side in SIDES])
    with tempfile.TemporaryDirectory() as folder:
        both = Path(folder) / "both.onnx"
        export_checkpoint(args.checkpoint, both, name=metadata.name, version=metadata.version,
                          branch_only=False)
        batched = compare_models(both, args.artifact, crops)
        singles = [compare_models(both, args.artifact, crops[i:i + 1])
                   for i in np.linspace(0, len(crops) - 1, SINGLES).astype(int)]
        against = f"the both-branch export of the same checkpoint, sha256 {file_sha256(both)[:12]}"
    record = {
        "against": against,
        "crops": f"LFW pairsDevTest, all {len(faces):,} images at "
                 f"{', '.join(map(str, SIDES))} px in batches of 32, and {SINGLES} of them "
                 "one at a time",
        "faces": batched.faces + sum(s.faces for s in singles),
        "min_cosine": min([batched.min_cosine, *(s.min_cosine for s in singles)]),
        "max_abs_diff": max([batched.max_abs_diff, *(s.max_abs_diff for s in singles)]),
    }
    write_metadata(args.artifact, metadata.model_copy(
        update={"extra": {**metadata.extra, "branch_only_parity": record}}))
    print(record)


if __name__ == "__main__":
    main()
