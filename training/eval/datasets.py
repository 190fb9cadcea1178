"""Loaders for the evaluation datasets in their published layouts.

Each loader returns a protocol from :mod:`training.eval.protocols`; none decodes images.

* **LFW** (:func:`load_lfw`): ``DIR/images/<Name>/<Name>_<NNNN>.jpg`` (or the image
  folders directly in ``DIR``) plus ``pairs.txt`` (View 2) or ``pairsDevTest.txt``
  (View 1). View 2 keeps its 10 published folds; View 1 has no folds, so its pairs are
  split into 10 folds interleaving matched and mismatched pairs.
* **QMUL-SurvFace** (:func:`load_survface`): ``Face_Verification_Test_Set/`` with
  ``positive_pairs_names.mat`` and ``negative_pairs_names.mat`` (MATLAB N x 2 cell
  arrays of image names) and the images in ``verification_images/``. ``DIR`` may be the
  dataset root or the ``Face_Verification_Test_Set`` folder itself.
* **SCface** (:func:`load_scface`): every image below ``DIR`` (any sub-folders) named
  ``{id}_cam{c}_{d}.<ext>`` (surveillance, camera c = 1..5, distance d = 1..3 meaning
  4.20 m, 2.60 m, 1.00 m) or ``{id}_frontal.<ext>`` (mugshot gallery); other files,
  and the infrared cameras 6-7, are ignored. The same file name found twice (the
  distribution ships per-distance and "all" folders) is used once.
* **TinyFace** (:func:`load_tinyface`): ``Testing_Set/{Probe,Gallery_Match,
  Gallery_Distractor}`` (``DIR`` may be the dataset root, ``tinyface/`` or
  ``Testing_Set``). Identities come from ``probe_img_ID_pairs.mat`` (``probe_set``,
  ``probe_ids``) and ``gallery_match_img_ID_pairs.mat`` (``gallery_set``,
  ``gallery_ids``) when present, else from the file name: the integer before the first
  underscore (``123_4.jpg`` -> 123), as the community evaluation code reads them.
  Every distractor is its own (negative) identity.
* **LFW identification** (:func:`load_lfw_identification`): the people of
  ``peopleDevTest.txt`` (View 1; none of them is in ``peopleDevTrain.txt``). Every
  person with two or more images enrols image ``_0001``; the others are probes.
  Alternate people (1st, 3rd, ... in the file's order) are enrolled in the open set;
  every image of the rest, and of the one-image people, is a non-mated probe.
* **Any folder of identities** (:func:`load_identity_folder`): ``DIR/<person>/<image>``;
  per person the first ``k`` images (sorted by name) form the gallery and the rest
  are probes; a person with ``k`` images or fewer is gallery only.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from training.eval.metrics import interleaved_folds
from training.eval.protocols import IdentificationProtocol, OpenSetProtocol, PairProtocol

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".tif", ".tiff", ".webp"}
)
SURVFACE_FARS: tuple[float, ...] = (0.3, 0.1, 0.01, 0.001)
LFW_FARS: tuple[float, ...] = (1e-2, 1e-3)
SCFACE_DISTANCES_M = {1: 4.20, 2: 2.60, 3: 1.00}


class DatasetLayoutError(FileNotFoundError):
    """A dataset folder does not have the expected layout."""


def _images_below(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )


def _index(paths: Iterable[Path]) -> tuple[list[Path], dict[Path, int]]:
    images: list[Path] = []
    lookup: dict[Path, int] = {}
    for path in paths:
        if path not in lookup:
            lookup[path] = len(images)
            images.append(path)
    return images, lookup


# ----------------------------------------------------------------------------- LFW


LfwPair = tuple[str, int, str, int]


def parse_lfw_pairs(path: str | Path) -> tuple[list[LfwPair], np.ndarray, np.ndarray]:
    """Parses an LFW pairs file (View 2 ``pairs.txt`` or View 1 ``pairsDev*.txt``).

    Returns:
        ``(pairs, labels, folds)``: pairs as ``(name1, n1, name2, n2)``; labels True for
        matched pairs; folds the published fold of each pair (View 1 files: all 0).
    """
    lines = [line.split() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise DatasetLayoutError(f"{path} is empty")
    header = [int(v) for v in lines[0]]
    n_folds, per_class = (header[0], header[1]) if len(header) == 2 else (1, header[0])
    body = lines[1:]
    if len(body) != 2 * n_folds * per_class:
        raise DatasetLayoutError(
            f"{path}: header promises {n_folds} x 2 x {per_class} pairs, found {len(body)} lines"
        )
    pairs: list[LfwPair] = []
    labels, folds = [], []
    for number, fields in enumerate(body):
        fold, offset = divmod(number, 2 * per_class)
        matched = offset < per_class
        if matched and len(fields) == 3:
            pairs.append((fields[0], int(fields[1]), fields[0], int(fields[2])))
        elif not matched and len(fields) == 4:
            pairs.append((fields[0], int(fields[1]), fields[2], int(fields[3])))
        else:
            kind = "matched" if matched else "mismatched"
            raise DatasetLayoutError(f"{path}:{number + 2}: not a {kind} pair line: {fields}")
        labels.append(matched)
        folds.append(fold)
    return pairs, np.asarray(labels), np.asarray(folds, dtype=np.int64)


def lfw_image_folder(root: str | Path) -> Path:
    """The folder holding ``<Name>/`` sub-folders: ``root/images`` if present, else root."""
    root = Path(root)
    return root / "images" if (root / "images").is_dir() else root


def parse_people_file(path: str | Path) -> list[list[tuple[str, int]]]:
    """Reads an LFW people list into folds of ``(name, image count)``.

    ``peopleDevTrain.txt`` / ``peopleDevTest.txt``: a count line, then ``name\\tcount``
    lines (one fold). ``people.txt``: the number of folds, then per fold a count line
    followed by that many ``name\\tcount`` lines.
    """
    lines = [line.split() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line]
    if not lines or len(lines[0]) != 1:
        raise ValueError(f"{path}: expected a count on the first line")
    first = int(lines[0][0])
    body = lines[1:]
    if len(body) == first and all(len(line) == 2 for line in body):
        return [[(name, int(count)) for name, count in body]]
    folds: list[list[tuple[str, int]]] = []
    position = 0
    for _ in range(first):
        if position >= len(body) or len(body[position]) != 1:
            raise ValueError(f"{path}: expected a fold size at entry {position + 2}")
        size = int(body[position][0])
        entries = body[position + 1 : position + 1 + size]
        if len(entries) != size or any(len(e) != 2 for e in entries):
            raise ValueError(f"{path}: fold {len(folds) + 1} is truncated or malformed")
        folds.append([(name, int(count)) for name, count in entries])
        position += 1 + size
    return folds


def load_lfw(
    root: str | Path,
    view: int = 2,
    *,
    check_files: bool = True,
    pairs_file: str | None = None,
) -> PairProtocol:
    """LFW View 2 (``pairs.txt``, 10 published folds) or View 1 (``pairsDevTest.txt``).

    Args:
        root: the LFW folder (with ``images/`` and the pairs files).
        view: 2 for the benchmark, 1 for the development test split.
        check_files: fail early, naming the first few missing images.
        pairs_file: another pairs file in ``root`` in the View 1 layout (e.g.
            ``pairsDevTrain.txt``, for threshold calibration); overrides ``view``, and
            its pairs get 10 interleaved folds like View 1.
    """
    root = Path(root)
    if view not in (1, 2):
        raise ValueError(f"LFW view must be 1 or 2, got {view}")
    if pairs_file is not None:
        path = root / pairs_file
        name = f"lfw-{Path(pairs_file).stem}"
    else:
        path = root / ("pairs.txt" if view == 2 else "pairsDevTest.txt")
        name = f"lfw-view{view}"
    if not path.is_file():
        raise DatasetLayoutError(f"LFW pairs file not found: {path}")
    pairs, labels, folds = parse_lfw_pairs(path)
    if view == 1 or pairs_file is not None:
        folds = interleaved_folds(labels, 10)
    folder = lfw_image_folder(root)

    def image(name: str, number: int) -> Path:
        return folder / name / f"{name}_{number:04d}.jpg"

    images, lookup = _index(image(n, i) for a, i1, b, i2 in pairs for n, i in ((a, i1), (b, i2)))
    if check_files:
        missing = [str(p) for p in images if not p.is_file()]
        if missing:
            raise DatasetLayoutError(
                f"{len(missing)} LFW images missing under {folder}, e.g. {missing[:3]}"
            )
    left = np.asarray([lookup[image(a, i)] for a, i, _, _ in pairs], dtype=np.int64)
    right = np.asarray([lookup[image(b, j)] for _, _, b, j in pairs], dtype=np.int64)
    return PairProtocol(
        name=name, images=images, left=left, right=right,
        labels=labels, folds=folds, fars=LFW_FARS,
        identities=tuple(p.parent.name for p in images),
    )


def load_lfw_identification(
    root: str | Path, *, people_file: str = "peopleDevTest.txt", check_files: bool = True
) -> OpenSetProtocol:
    """LFW identification on the people of a View 1 people list (``peopleDevTest.txt``).

    Closed set: every person with two or more images enrols the first image by number
    (``Name_0001.jpg``); their other images are the probes. Open set: alternate people
    in the file's (alphabetical) order - the 1st, 3rd, 5th ... - are enrolled; the
    probes of the others and their ``_0001`` image, and the image of every one-image
    person, are non-mated probes. Identities are the person's position in the file.

    Args:
        root: the LFW folder (with ``images/`` and the people file).
        people_file: a people list in ``root`` (``peopleDevTest.txt``: identities a
            model trained on ``peopleDevTrain.txt`` never saw).
        check_files: fail early, naming the first few missing images.
    """
    root = Path(root)
    path = root / people_file
    if not path.is_file():
        raise DatasetLayoutError(f"LFW people file not found: {path}")
    people = [entry for fold in parse_people_file(path) for entry in fold]
    folder = lfw_image_folder(root)
    images: list[Path] = []
    gallery: list[int] = []
    gallery_labels: list[int] = []
    enrolled: list[bool] = []
    probes: list[int] = []
    probe_labels: list[int] = []
    nonmated: list[int] = []
    nonmated_labels: list[int] = []
    several = 0
    for label, (name, count) in enumerate(people):
        paths = [folder / name / f"{name}_{n:04d}.jpg" for n in range(1, count + 1)]
        first = len(images)
        images.extend(paths)
        if count < 2:
            nonmated.extend(range(first, first + count))
            nonmated_labels.extend([label] * count)
            continue
        is_enrolled = several % 2 == 0
        several += 1
        gallery.append(first)
        gallery_labels.append(label)
        enrolled.append(is_enrolled)
        probes.extend(range(first + 1, first + count))
        probe_labels.extend([label] * (count - 1))
        if not is_enrolled:
            nonmated.append(first)
            nonmated_labels.append(label)
    if not gallery:
        raise DatasetLayoutError(f"{path}: no person has two or more images")
    if check_files:
        missing = [str(p) for p in images if not p.is_file()]
        if missing:
            raise DatasetLayoutError(
                f"{len(missing)} LFW images missing under {folder}, e.g. {missing[:3]}"
            )

    def ints(values: list[int]) -> np.ndarray:
        return np.asarray(values, dtype=np.int64)

    return OpenSetProtocol(
        name=f"lfw-ident-{path.stem}", images=images,
        gallery=ints(gallery), gallery_labels=ints(gallery_labels),
        enrolled=np.asarray(enrolled, dtype=bool),
        probes=ints(probes), probe_labels=ints(probe_labels),
        nonmated=ints(nonmated), nonmated_labels=ints(nonmated_labels),
        fpirs=LFW_FARS,
    )


# ---------------------------------------------------------------------- SurvFace


def _mat_name_pairs(path: Path) -> list[tuple[str, str]]:
    """The N x 2 cell array of image names in a SurvFace pairs ``.mat`` file."""
    from scipy.io import loadmat  # scipy: the train/dev extra; only these loaders need it

    content = loadmat(str(path))
    for key, value in content.items():
        if key.startswith("__") or not isinstance(value, np.ndarray) or value.ndim != 2:
            continue
        table = value if value.shape[1] == 2 else value.T if value.shape[0] == 2 else None
        if table is None or table.dtype != object:
            continue
        return [(_cell_text(a), _cell_text(b)) for a, b in table]
    raise DatasetLayoutError(f"{path} holds no N x 2 cell array of image names")


def _cell_text(cell: object) -> str:
    value = np.asarray(cell).ravel()
    if value.size != 1:
        raise DatasetLayoutError(f"expected one string per cell, got {value!r}")
    return str(value[0]).strip()


def survface_folder(root: str | Path) -> Path:
    """The folder with the pairs ``.mat`` files: ``root`` or its verification sub-folder."""
    root = Path(root)
    for candidate in (root, root / "Face_Verification_Test_Set"):
        if (candidate / "positive_pairs_names.mat").is_file():
            return candidate
    raise DatasetLayoutError(
        f"no positive_pairs_names.mat in {root} or {root / 'Face_Verification_Test_Set'}"
    )


def load_survface(root: str | Path, *, check_files: bool = True) -> PairProtocol:
    """QMUL-SurvFace verification: all positive and negative pairs, 10 interleaved folds."""
    folder = survface_folder(root)
    positives = _mat_name_pairs(folder / "positive_pairs_names.mat")
    negatives = _mat_name_pairs(folder / "negative_pairs_names.mat")
    logger.info("QMUL-SurvFace: %d positive, %d negative pairs", len(positives), len(negatives))
    image_folder = folder / "verification_images"
    pairs = positives + negatives
    images, lookup = _index(image_folder / n for pair in pairs for n in pair)
    if check_files:
        missing = [str(p) for p in images if not p.is_file()]
        if missing:
            raise DatasetLayoutError(
                f"{len(missing)} SurvFace images missing under {image_folder}, e.g. {missing[:3]}"
            )
    labels = np.asarray([True] * len(positives) + [False] * len(negatives))
    return PairProtocol(
        name="survface",
        images=images,
        left=np.asarray([lookup[image_folder / a] for a, _ in pairs], dtype=np.int64),
        right=np.asarray([lookup[image_folder / b] for _, b in pairs], dtype=np.int64),
        labels=labels,
        folds=interleaved_folds(labels, 10),
        fars=SURVFACE_FARS,
    )


# ------------------------------------------------------------------------ SCface

_SCFACE_PROBE = re.compile(r"^(\d+)_cam(\d+)_(\d+)$", re.IGNORECASE)
_SCFACE_MUGSHOT = re.compile(r"^(\d+)_frontal$", re.IGNORECASE)


def load_scface(
    root: str | Path, *, cameras: Iterable[int] = (1, 2, 3, 4, 5)
) -> IdentificationProtocol:
    """SCface: mugshot gallery, surveillance probes grouped by distance ``d1``/``d2``/``d3``."""
    cameras = set(cameras)
    seen: set[str] = set()
    gallery: list[tuple[Path, int]] = []
    probes: list[tuple[Path, int, str]] = []
    for path in _images_below(Path(root)):
        if path.name.lower() in seen:
            continue
        if match := _SCFACE_MUGSHOT.match(path.stem):
            gallery.append((path, int(match.group(1))))
        elif (match := _SCFACE_PROBE.match(path.stem)) and int(match.group(2)) in cameras:
            distance = int(match.group(3))
            if distance not in SCFACE_DISTANCES_M:
                continue
            probes.append((path, int(match.group(1)), f"d{distance}"))
        else:
            continue
        seen.add(path.name.lower())
    if not gallery or not probes:
        raise DatasetLayoutError(
            f"{root}: found {len(gallery)} mugshots ({{id}}_frontal.jpg) and {len(probes)} "
            "surveillance images ({id}_cam{c}_{d}.jpg); both are needed"
        )
    images, lookup = _index([p for p, _ in gallery] + [p for p, _, _ in probes])
    return IdentificationProtocol(
        name="scface",
        images=images,
        gallery=np.asarray([lookup[p] for p, _ in gallery], dtype=np.int64),
        gallery_labels=np.asarray([i for _, i in gallery], dtype=np.int64),
        probes=np.asarray([lookup[p] for p, _, _ in probes], dtype=np.int64),
        probe_labels=np.asarray([i for _, i, _ in probes], dtype=np.int64),
        probe_groups=np.asarray([g for _, _, g in probes]),
        ranks=(1, 5),
    )


# ---------------------------------------------------------------------- TinyFace


def tinyface_folder(root: str | Path) -> Path:
    """The ``Testing_Set`` folder under ``root`` (or ``root`` itself)."""
    root = Path(root)
    for candidate in (root, root / "Testing_Set", root / "tinyface" / "Testing_Set"):
        if (candidate / "Probe").is_dir() and (candidate / "Gallery_Match").is_dir():
            return candidate
    raise DatasetLayoutError(f"no Testing_Set/Probe and Gallery_Match below {root}")


def tinyface_label(path: Path) -> int:
    """TinyFace identity from the file name: the integer before the first underscore."""
    prefix = path.name.split("_", 1)[0]
    try:
        return int(prefix)
    except ValueError:
        raise DatasetLayoutError(f"{path.name}: TinyFace names start with '<id>_'") from None


def _mat_names_ids(path: Path, names_key: str, ids_key: str) -> list[tuple[str, int]]:
    from scipy.io import loadmat

    content = loadmat(str(path))
    if names_key not in content or ids_key not in content:
        keys = sorted(k for k in content if not k.startswith("__"))
        raise DatasetLayoutError(f"{path} lacks {names_key!r}/{ids_key!r}; it has {keys}")
    names = [_cell_text(c) for c in np.asarray(content[names_key]).ravel()]
    ids = [int(v) for v in np.asarray(content[ids_key]).ravel()]
    if len(names) != len(ids):
        raise DatasetLayoutError(f"{path}: {len(names)} names but {len(ids)} ids")
    return list(zip(names, ids, strict=True))


def _tinyface_split(
    folder: Path, mat: Path, names_key: str, ids_key: str
) -> list[tuple[Path, int]]:
    if mat.is_file():
        return [(folder / name, label) for name, label in _mat_names_ids(mat, names_key, ids_key)]
    return [(p, tinyface_label(p)) for p in _images_below(folder)]


def load_tinyface(root: str | Path) -> IdentificationProtocol:
    """TinyFace: probes vs Gallery_Match + Gallery_Distractor, CMC at ranks 1, 5, 20."""
    folder = tinyface_folder(root)
    probes = _tinyface_split(
        folder / "Probe", folder / "probe_img_ID_pairs.mat", "probe_set", "probe_ids"
    )
    matches = _tinyface_split(
        folder / "Gallery_Match", folder / "gallery_match_img_ID_pairs.mat",
        "gallery_set", "gallery_ids",
    )
    distractor_folder = folder / "Gallery_Distractor"
    distractors = _images_below(distractor_folder) if distractor_folder.is_dir() else []
    logger.info(
        "TinyFace: %d probes, %d gallery matches, %d distractors",
        len(probes), len(matches), len(distractors),
    )
    images, lookup = _index([p for p, _ in matches] + distractors + [p for p, _ in probes])
    gallery_labels = [label for _, label in matches] + [-(i + 1) for i in range(len(distractors))]
    return IdentificationProtocol(
        name="tinyface",
        images=images,
        gallery=np.asarray([lookup[p] for p, _ in matches] + [lookup[p] for p in distractors]),
        gallery_labels=np.asarray(gallery_labels, dtype=np.int64),
        probes=np.asarray([lookup[p] for p, _ in probes], dtype=np.int64),
        probe_labels=np.asarray([label for _, label in probes], dtype=np.int64),
        ranks=(1, 5, 20),
    )


# ------------------------------------------------------------------------ folder


def load_identity_folder(root: str | Path, gallery_per_person: int = 1) -> IdentificationProtocol:
    """Any ``DIR/<person>/<images>`` folder: first ``k`` images per person as gallery."""
    root = Path(root)
    if gallery_per_person < 1:
        raise ValueError(f"gallery_per_person must be >= 1, got {gallery_per_person}")
    people = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    images: list[Path] = []
    gallery: list[int] = []
    gallery_labels: list[int] = []
    probes: list[int] = []
    probe_labels: list[int] = []
    for label, person in enumerate(people):
        files = _images_below(person)
        for position, path in enumerate(files):
            in_gallery = position < gallery_per_person
            (gallery if in_gallery else probes).append(len(images))
            (gallery_labels if in_gallery else probe_labels).append(label)
            images.append(path)
    if not probes:
        raise DatasetLayoutError(
            f"{root}: no person has more than {gallery_per_person} images, so there are no probes"
        )
    return IdentificationProtocol(
        name="folder",
        images=images,
        gallery=np.asarray(gallery, dtype=np.int64),
        gallery_labels=np.asarray(gallery_labels, dtype=np.int64),
        probes=np.asarray(probes, dtype=np.int64),
        probe_labels=np.asarray(probe_labels, dtype=np.int64),
        ranks=(1, 5),
        fpirs=(1e-2,),
        by_identity=True,
    )
