"""The distillation teacher: dlib's face-recognition ResNet and a cache of its descriptors.

The teacher is dlib's ``dlib_face_recognition_resnet_model_v1`` (public domain; 128-d
descriptors, Euclidean threshold 0.6), run once over the **sharp** training images;
its descriptors are cached in a ``.npz`` keyed by the image's path relative to the
dataset root, so training (``training.objectives.DistillObjective``) only looks them up.
dlib is an optional training extra (``pip install 'lrfr[train-teacher]'``), imported
only when descriptors are computed; it is never a dependency of the service.

Face rectangles: dlib's 5-point shape predictor expects the box of dlib's own HOG face
detector. LFW deep-funneled images have no landmarks, so the rectangle is derived from
the fixed crop box of ``training.faces`` (scaled with the image size): dlib's detector,
run on 299 of 300 random LFW images, finds a mean box of (76, 84, 179, 187) in
250x250 pixels (std 7-9 px), i.e. :data:`DLIB_BOX_SCALE` x the side of
``LFW_DEEPFUNNELED_BOX`` (136 px), its centre moved right and down by
:data:`DLIB_BOX_SHIFT` x that side. Aligned 112 crops are the LFW box at another scale
(the box is fitted to the ArcFace template), so the same rule applies to the whole crop.
dlib then aligns and chips the face (150x150) itself.

Cache file (``numpy.savez``): ``keys`` (N,) str, ``descriptors`` (N, 128) float32,
``teacher`` (the model's name), ``face_mode``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from training.faces import LFW_DEEPFUNNELED_BOX

logger = logging.getLogger(__name__)

#: Name stored in every cache; a cache of another teacher is refused.
TEACHER_NAME = "dlib_face_recognition_resnet_model_v1"
#: Descriptor size of the teacher.
TEACHER_DIM = 128
#: dlib's detector box side as a fraction of the LFW crop box side (measured, see above).
DLIB_BOX_SCALE = 0.76
#: Shift of dlib's detector box centre from the LFW crop box centre, in box sides (x, y).
DLIB_BOX_SHIFT = (0.02, 0.135)

_MISSING_DLIB = (
    "the distillation teacher needs dlib and its model files: "
    "pip install 'lrfr[train-teacher]' (dlib-bin and face-recognition-models)"
)


# --------------------------------------------------------------------------- cache


@dataclass
class TeacherCache:
    """Teacher descriptors keyed by image path relative to the dataset root.

    Attributes:
        keys: one key per descriptor (POSIX relative paths).
        descriptors: (N, 128) float32.
        teacher: the teacher's name (:data:`TEACHER_NAME`).
        face_mode: how the face rectangle was found (``lfw`` or ``aligned``).
    """

    keys: list[str]
    descriptors: np.ndarray
    teacher: str = TEACHER_NAME
    face_mode: str = "lfw"

    def __post_init__(self) -> None:
        self.descriptors = np.asarray(self.descriptors, dtype=np.float32).reshape(
            -1, TEACHER_DIM
        )
        if len(self.keys) != len(self.descriptors):
            raise ValueError(
                f"{len(self.keys)} keys but {len(self.descriptors)} teacher descriptors"
            )

    def __len__(self) -> int:
        return len(self.keys)

    def as_dict(self) -> dict[str, np.ndarray]:
        return dict(zip(self.keys, self.descriptors, strict=True))

    def save(self, path: str | Path) -> Path:
        """Writes the cache atomically (a temporary file, then a rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(
            tmp,
            keys=np.asarray(self.keys, dtype=str),
            descriptors=self.descriptors,
            teacher=np.asarray(self.teacher),
            face_mode=np.asarray(self.face_mode),
        )
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path, teacher: str | None = TEACHER_NAME) -> TeacherCache:
        """Reads a cache; ``teacher`` (when given) must match the stored name."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"teacher cache not found: {path} (build it with `lrfr teacher-cache`)"
            )
        with np.load(path, allow_pickle=False) as data:
            for name in ("keys", "descriptors", "teacher"):
                if name not in data:
                    raise ValueError(f"{path} is not a teacher cache (no {name!r})")
            cache = cls(
                keys=[str(k) for k in data["keys"]],
                descriptors=data["descriptors"],
                teacher=str(data["teacher"]),
                face_mode=str(data["face_mode"]) if "face_mode" in data else "lfw",
            )
        if teacher is not None and cache.teacher != teacher:
            raise ValueError(f"{path} holds descriptors of {cache.teacher!r}, not {teacher!r}")
        return cache


def lookup_table(cache: TeacherCache, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors in the order of ``keys``: ``(table (N, 128) float32, found (N,) bool)``.

    Keys without a descriptor get a zero row and ``found = False`` (masked out of the loss).
    """
    index = {key: i for i, key in enumerate(cache.keys)}
    table = np.zeros((len(keys), TEACHER_DIM), dtype=np.float32)
    found = np.zeros(len(keys), dtype=bool)
    for row, key in enumerate(keys):
        position = index.get(key)
        if position is not None:
            table[row] = cache.descriptors[position]
            found[row] = True
    return table, found


# --------------------------------------------------------------------------- teacher


def face_rectangle(width: int, height: int, face_mode: str) -> tuple[int, int, int, int]:
    """dlib-style face box (left, top, right, bottom) for an image of this size.

    Args:
        width: image width.
        height: image height.
        face_mode: ``lfw`` (250x250 deep-funneled image; the crop box scaled with the
            image) or ``aligned`` (an aligned crop: the crop itself is the face box).
    """
    if face_mode == "lfw":
        left, top, right, bottom = LFW_DEEPFUNNELED_BOX
        sx, sy = width / 250, height / 250
        box = (left * sx, top * sy, right * sx, bottom * sy)
    elif face_mode == "aligned":
        box = (0.0, 0.0, float(width), float(height))
    else:
        raise ValueError(f"unknown face mode {face_mode!r}; use lfw or aligned")
    side_x, side_y = box[2] - box[0], box[3] - box[1]
    cx = (box[0] + box[2]) / 2 + DLIB_BOX_SHIFT[0] * side_x
    cy = (box[1] + box[3]) / 2 + DLIB_BOX_SHIFT[1] * side_y
    half_x, half_y = DLIB_BOX_SCALE * side_x / 2, DLIB_BOX_SCALE * side_y / 2
    return (round(cx - half_x), round(cy - half_y), round(cx + half_x), round(cy + half_y))


def _model_files() -> tuple[str, str]:
    """(5-point predictor, ResNet) from the ``face-recognition-models`` package.

    Found through the package's location rather than its functions
    (``face_recognition_model_location()`` ...), which import ``pkg_resources`` and fail
    on setuptools releases that no longer ship it.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(_MISSING_DLIB)
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    files = (folder / "shape_predictor_5_face_landmarks.dat",
             folder / "dlib_face_recognition_resnet_model_v1.dat")
    for file in files:
        if not file.is_file():
            raise ImportError(f"{file} is missing; {_MISSING_DLIB}")
    return str(files[0]), str(files[1])


def resolve_pretrained(spec: str) -> str:
    """``dlib`` -> the released ResNet file of ``face-recognition-models``; else a path."""
    if spec == "dlib":
        return _model_files()[1]
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights not found: {spec} (or use 'dlib')")
    return str(path)


class DlibTeacher:
    """dlib's 5-point shape predictor + face-recognition ResNet (loaded on creation).

    Args:
        face_mode: how the face rectangle is found (:func:`face_rectangle`).
        predictor_path: the 5-point shape predictor (default: face-recognition-models).
        model_path: the ResNet (default: face-recognition-models).
    """

    name = TEACHER_NAME

    def __init__(
        self,
        face_mode: str = "lfw",
        predictor_path: str | None = None,
        model_path: str | None = None,
    ) -> None:
        try:
            import dlib
        except ImportError as exc:
            raise ImportError(_MISSING_DLIB) from exc
        if predictor_path is None or model_path is None:
            default_predictor, default_model = _model_files()
            predictor_path = predictor_path or default_predictor
            model_path = model_path or default_model
        self._dlib = dlib
        self.face_mode = face_mode
        self.predictor = dlib.shape_predictor(predictor_path)
        self.model = dlib.face_recognition_model_v1(model_path)

    def describe(self, pixels: np.ndarray) -> np.ndarray:
        """The 128-d descriptor of the face in an RGB uint8 (H, W, 3) image."""
        pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
        height, width = pixels.shape[:2]
        rect = self._dlib.rectangle(*face_rectangle(width, height, self.face_mode))
        shape = self.predictor(pixels, rect)
        return np.asarray(self.model.compute_face_descriptor(pixels, shape), dtype=np.float32)

    def describe_file(self, path: str | Path) -> np.ndarray:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
        return self.describe(pixels)


def build_cache(
    paths: Iterable[Path],
    root: str | Path,
    out: str | Path,
    *,
    describe: Callable[[Path], np.ndarray] | None = None,
    face_mode: str = "lfw",
    progress: bool = True,
    save_every: int = 500,
) -> TeacherCache:
    """Computes the teacher descriptors of ``paths`` not yet in ``out`` and saves the cache.

    An existing cache at ``out`` is reused: only the missing images are described, and
    the file is rewritten every ``save_every`` new descriptors (an interrupted run
    continues). Unreadable images are logged and left out (masked in training).

    Args:
        paths: the sharp training images.
        root: the dataset root; keys are paths relative to it.
        out: the cache file.
        describe: ``path -> (128,)`` (default: a :class:`DlibTeacher` with ``face_mode``).
        face_mode: recorded in the cache, and the teacher's rectangle rule.
        progress: show a tqdm bar.
        save_every: checkpoint the cache after this many new descriptors.
    """
    from tqdm.auto import tqdm

    root, out = Path(root), Path(out)
    cache = (
        TeacherCache.load(out)
        if out.is_file()
        else TeacherCache(keys=[], descriptors=np.zeros((0, TEACHER_DIM)), face_mode=face_mode)
    )
    if cache.face_mode != face_mode:
        raise ValueError(f"{out} was built with face mode {cache.face_mode!r}, not {face_mode!r}")
    known = set(cache.keys)
    todo: list[tuple[str, Path]] = []
    for path in paths:
        key = Path(path).relative_to(root).as_posix()
        if key not in known:
            known.add(key)
            todo.append((key, Path(path)))
    logger.info("teacher cache %s: %d cached, %d to compute", out, len(cache), len(todo))
    if not todo:
        return cache
    if describe is None:
        describe = DlibTeacher(face_mode=face_mode).describe_file
    keys, rows = list(cache.keys), [cache.descriptors]
    fresh: list[np.ndarray] = []
    failed = 0

    def flush() -> None:
        nonlocal cache
        rows.extend(fresh)
        fresh.clear()
        cache = TeacherCache(keys=list(keys), descriptors=np.vstack(rows), face_mode=face_mode)
        rows[:] = [cache.descriptors]
        cache.save(out)

    for key, path in tqdm(todo, desc="teacher", unit="img", disable=not progress):
        try:
            descriptor = np.asarray(describe(path), dtype=np.float32).reshape(TEACHER_DIM)
        except (OSError, ValueError, RuntimeError) as exc:
            logger.warning("teacher: skipping %s: %s", path, exc)
            failed += 1
            continue
        keys.append(key)
        fresh.append(descriptor[None])
        if len(fresh) >= save_every:
            flush()
    flush()
    if failed:
        logger.warning("teacher: %d of %d images could not be described", failed, len(todo))
    return cache


def source_keys(paths: Sequence[Path], root: str | Path) -> list[str]:
    """Cache keys of ``paths``: POSIX paths relative to ``root``."""
    root = Path(root)
    return [Path(p).relative_to(root).as_posix() for p in paths]


def describe_summary(cache: TeacherCache) -> dict[str, Any]:
    """Counts and norms of a cache, for logs."""
    norms = np.linalg.norm(cache.descriptors, axis=1) if len(cache) else np.zeros(0)
    return {"images": len(cache), "teacher": cache.teacher, "face_mode": cache.face_mode,
            "mean_norm": float(norms.mean()) if norms.size else 0.0}
