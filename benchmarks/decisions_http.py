"""What the service answers for faces as users send them: LFW pairs over HTTP.

Starts ``lrfr serve`` (the command the container runs) and sends LFW View 1
``pairsDevTest`` pairs (people the bundled model never trained on) to ``/v1/verify``,
each image prepared the way real clients send faces:

* ``crop``: a detector-style crop: the face box of the LFW photo, shifted by up to 8 %
  of its side and enlarged by up to 30 %, resized so that the face is ``s`` px wide;
* ``scene``: the whole 250x250 photo scaled so that the face is ``s`` px wide and
  pasted at a random place into a 640x480 scene (a noisy gradient), as a frame;
* ``aligned``: the 112 template crop itself, degraded to ``s`` px and back, sent with
  ``face=aligned``.

Prints, per input and face width, how many same-person pairs were accepted, how many
different-person pairs were accepted ("match": true), and how many of each were
answered "undecidable". A script, not a test.

Usage::

    python benchmarks/decisions_http.py --lfw ../shared/data/lfw --pairs 500
    python benchmarks/decisions_http.py --lfw ../shared/data/lfw --inputs crop --widths 14
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from service_bench import CLIENT_KEY, free_port, running_service

from lrfr.client import ApiError, Client, Retry
from training.degrade import degrade
from training.eval.datasets import load_lfw
from training.faces import LFW_DEEPFUNNELED_BOX, crop_lfw_deepfunneled

SCENE_SIZE = (640, 480)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def detector_crop(photo: Image.Image, width: int, rng: np.random.Generator) -> Image.Image:
    """The face box, jittered by up to 8 % and enlarged by up to 30 %, ``width`` px wide
    face."""
    left, top, right, bottom = LFW_DEEPFUNNELED_BOX
    side = right - left
    grow = rng.uniform(1.0, 1.3)
    cx = (left + right) / 2 + rng.uniform(-0.08, 0.08) * side
    cy = (top + bottom) / 2 + rng.uniform(-0.08, 0.08) * side
    half = side * grow / 2
    box = (cx - half, cy - half, cx + half, cy + half)
    out = max(1, round(width * grow))
    return photo.resize((out, out), Image.Resampling.BICUBIC, box=box,
                        reducing_gap=None)


def scene(photo: Image.Image, width: int, rng: np.random.Generator) -> Image.Image:
    """The photo scaled to a ``width`` px face, pasted at a random place in a frame."""
    side = LFW_DEEPFUNNELED_BOX[2] - LFW_DEEPFUNNELED_BOX[0]
    scale = width / side
    size = max(1, round(250 * scale))
    small = photo.resize((size, size), Image.Resampling.BICUBIC)
    w, h = SCENE_SIZE
    gradient = np.linspace(40, 200, w)[None, :, None] * np.ones((h, 1, 3))
    noise = rng.normal(0, 12, (h, w, 3))
    frame = Image.fromarray(np.clip(gradient + noise, 0, 255).astype(np.uint8))
    frame.paste(small, (int(rng.integers(0, max(1, w - size))),
                        int(rng.integers(0, max(1, h - size)))))
    return frame


def aligned(photo: Image.Image, width: int, rng: np.random.Generator) -> Image.Image:
    return Image.fromarray(degrade(crop_lfw_deepfunneled(photo), width))


MAKERS = {"crop": detector_crop, "scene": scene, "aligned": aligned}
#: The ``face`` field each input is sent with (none: the service's default, auto).
FACE_FIELD = {"aligned": "aligned"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lfw", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=None, help="default: the bundled model")
    parser.add_argument("--pairs", type=int, default=500, help="pairs of each kind")
    parser.add_argument("--inputs", default="crop", help="crop, scene, aligned (comma list)")
    parser.add_argument("--widths", default="112,28,14", help="face widths in px")
    parser.add_argument("--far", default=None, help="FAR to decide at (default: the service's)")
    parser.add_argument("--form", action="append", default=[],
                        help="extra form field for /v1/verify, e.g. face=box (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()

    protocol = load_lfw(args.lfw, 1)
    labels = protocol.labels.astype(bool)
    rng = np.random.default_rng(args.seed)
    chosen = np.concatenate([
        rng.choice(np.nonzero(labels)[0], args.pairs, replace=False),
        rng.choice(np.nonzero(~labels)[0], args.pairs, replace=False),
    ])
    model = args.model or Path(__file__).resolve().parents[1] / "models/bundled/lrfr.onnx"
    form = dict(item.split("=", 1) for item in args.form)
    if args.far:
        form["far"] = args.far
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        with running_service(model=model, database_url=f"sqlite:///{data}/db.sqlite3",
                             data_dir=data, port=free_port(), extra_env={}) as base, \
                Client(base, CLIENT_KEY, timeout=120, retry=Retry(attempts=1)) as client:
            for kind in args.inputs.split(","):
                for width in (int(w) for w in args.widths.split(",")):
                    make = MAKERS[kind]
                    seeds = rng.integers(0, 2**31, size=(len(chosen), 2))

                    def ask(item: tuple[int, np.ndarray], make=make, width=width,
                            kind=kind) -> dict:
                        pair, (s1, s2) = item
                        images = []
                        for index, seed in ((protocol.left[pair], s1), (protocol.right[pair], s2)):
                            with Image.open(protocol.images[index]) as photo:
                                picture = make(photo.convert("RGB"), width,
                                               np.random.default_rng(seed))
                            images.append(_png(picture))
                        fields = {**form}
                        if kind in FACE_FIELD and "face" not in fields:
                            fields["face"] = FACE_FIELD[kind]
                        threshold = fields.pop("threshold", None)
                        try:
                            answer = client.verify(
                                ("a.png", images[0]), ("b.png", images[1]),
                                threshold=None if threshold is None else float(threshold),
                                **fields,  # far, face
                            )
                        except ApiError as error:
                            return {"status": error.status, "error": str(error)[:200]}
                        return {"status": 200, **answer.model_dump()}

                    with ThreadPoolExecutor(args.concurrency) as pool:
                        answers = list(pool.map(ask, zip(chosen, seeds, strict=True)))
                    same = np.asarray(labels[chosen])
                    decision = np.asarray([a.get("decision", a.get("error", "error"))
                                           for a in answers], dtype=object)
                    failed = np.asarray([a["status"] != 200 for a in answers])
                    rows.append((
                        kind, width,
                        np.mean(decision[same] == "match"), np.mean(decision[~same] == "match"),
                        np.mean(decision[same] == "undecidable"),
                        np.mean(decision[~same] == "undecidable"),
                        int(failed.sum()),
                    ))
                    print(f"{kind} {width} px done", file=sys.stderr, flush=True)
    print(f"\nLFW pairsDevTest over HTTP, {args.pairs} same + {args.pairs} different pairs, "
          f"model {model.name}, far {args.far or 'default'}, form {form or '{}'}\n")
    print("| input | face width | same accepted | different accepted | same undecidable "
          "| different undecidable | non-200 |")
    print("|---|---|---|---|---|---|---|")
    for kind, width, tar, far, und_s, und_d, failed in rows:
        print(f"| {kind} | {width} px | {100 * tar:.1f} % | {100 * far:.1f} % | "
              f"{100 * und_s:.1f} % | {100 * und_d:.1f} % | {failed} |")


if __name__ == "__main__":
    main()
