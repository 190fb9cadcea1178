"""Labelled face sources: where the images are and how one becomes a 112 crop.

A source is a list of samples with integer identity labels ``0 .. C-1`` and a
``load(i)`` that returns sample ``i`` as an RGB uint8 (112, 112, 3) array. Sources only
hold paths or offsets, so they pickle cheaply into decoding worker processes.

* :class:`FolderSource` - one folder per identity (the CASIA-WebFace layout).
* :class:`RecordIOSource` - insightface ``train.rec`` + ``train.idx``.
* :class:`LFWPeopleSource` - an LFW people list (``peopleDevTrain.txt``, ``people.txt``).
* :class:`UnlabelledSource` - aligned crops without identities (label -1), e.g.
  ``faces-extra/`` by its manifest; :class:`MixedSource` puts them after a labelled source.
"""

from __future__ import annotations

import csv
import io
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from models.alignment import ARCFACE_TEMPLATE_112, apply_transform, landmark_matrix
from training.data.recordio import RecordIOReader, unpack_record
from training.eval.datasets import parse_people_file
from training.faces import INPUT_SIZE, FaceLoader, resize_aligned

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".pgm"})


#: The label of a sample without an identity (:class:`UnlabelledSource`).
UNLABELLED = -1


class FaceSource(ABC):
    """Samples with identity labels; subclasses implement :meth:`load`.

    Attributes:
        labels: (N,) int64 identity per sample, in ``0 .. num_classes - 1``, or
            :data:`UNLABELLED` for a face without one.
        class_names: one name per identity.
        description: a short text for logs and model metadata.
    """

    labels: np.ndarray
    class_names: list[str]
    description: str

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @abstractmethod
    def load(self, index: int) -> np.ndarray:
        """Sample ``index`` as RGB uint8 (112, 112, 3)."""

    def sample_key(self, index: int) -> str:
        """A stable name of sample ``index`` (teacher caches are keyed by it)."""
        return str(index)


def _keep_classes(
    labels: np.ndarray, names: Sequence[str], min_images: int, limit_classes: int | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Drops small or surplus identities; returns (kept sample indices, new labels, names)."""
    counts = np.bincount(labels, minlength=len(names))
    kept_classes = np.flatnonzero(counts >= min_images)
    if limit_classes is not None:
        kept_classes = kept_classes[:limit_classes]
    if kept_classes.size < 2:
        raise ValueError(
            f"only {kept_classes.size} identities have >= {min_images} images; need at least 2"
        )
    remap = np.full(len(names), -1, dtype=np.int64)
    remap[kept_classes] = np.arange(kept_classes.size)
    new_labels = remap[labels]
    keep = np.flatnonzero(new_labels >= 0)
    return keep, new_labels[keep], [names[int(c)] for c in kept_classes]


@dataclass
class _PathSource(FaceSource):
    paths: list[Path]
    labels: np.ndarray
    class_names: list[str]
    loader: FaceLoader
    description: str
    root: Path | None = None

    def load(self, index: int) -> np.ndarray:
        return self.loader.load(self.paths[index])

    def sample_key(self, index: int) -> str:
        """The image's path relative to the dataset root (POSIX)."""
        path = self.paths[index]
        return path.relative_to(self.root).as_posix() if self.root is not None else path.name


class FolderSource(_PathSource):
    """One sub-folder per identity (CASIA-WebFace: ``root/0000045/001.jpg``).

    Identities are the sub-folder names in sorted order; images are the files with an
    image suffix, sorted.

    Args:
        root: the dataset folder.
        face_mode: ``aligned`` (crops used as they are, resized to 112) or ``lfw``.
        min_images: identities with fewer images are dropped.
        limit_classes: keep only the first N identities.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        face_mode: str = "aligned",
        min_images: int = 1,
        limit_classes: int | None = None,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"identity folder root not found: {root}")
        names = sorted(p.name for p in root.iterdir() if p.is_dir())
        paths: list[Path] = []
        labels: list[int] = []
        for label, name in enumerate(names):
            files = sorted(
                p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
            )
            paths += files
            labels += [label] * len(files)
        if not paths:
            raise ValueError(f"no images in identity folders under {root}")
        keep, new_labels, kept_names = _keep_classes(
            np.asarray(labels, dtype=np.int64), names, min_images, limit_classes
        )
        super().__init__(
            paths=[paths[i] for i in keep],
            labels=new_labels,
            class_names=kept_names,
            loader=FaceLoader(mode=face_mode),  # type: ignore[arg-type]
            description=f"folder:{root.name} ({len(keep)} images, {len(kept_names)} ids)",
            root=root,
        )


class LFWPeopleSource(_PathSource):
    """The identities of an LFW people list, cropped with the deep-funneled face box.

    Args:
        lfw_dir: the LFW folder (``images/<Name>/<Name>_<NNNN>.jpg`` and the lists).
        people_file: the list, relative to ``lfw_dir`` (or absolute).
        folds: for multi-fold lists: 0-based folds to use (``None``: all).
        min_images: identities with fewer images are dropped.
        limit_classes: keep only the first N identities.
        face_mode: ``lfw`` (the fixed box of ``training.faces``) or ``aligned``.
    """

    def __init__(
        self,
        lfw_dir: str | Path,
        people_file: str = "peopleDevTrain.txt",
        *,
        folds: Sequence[int] | None = None,
        min_images: int = 1,
        limit_classes: int | None = None,
        face_mode: str = "lfw",
    ) -> None:
        lfw_dir = Path(lfw_dir)
        list_path = Path(people_file) if Path(people_file).is_absolute() else lfw_dir / people_file
        all_folds = parse_people_file(list_path)
        chosen = range(len(all_folds)) if folds is None else folds
        people = [entry for f in chosen for entry in all_folds[f]]
        names: list[str] = []
        paths: list[Path] = []
        labels: list[int] = []
        for name, count in people:
            label = len(names)
            names.append(name)
            for number in range(1, count + 1):
                paths.append(lfw_dir / "images" / name / f"{name}_{number:04d}.jpg")
                labels.append(label)
        keep, new_labels, kept_names = _keep_classes(
            np.asarray(labels, dtype=np.int64), names, min_images, limit_classes
        )
        # a sample of the images that are used (a packed copy may hold only those)
        missing = [paths[i] for i in keep[:: max(1, len(keep) // 50)] if not paths[i].is_file()]
        if missing:
            raise FileNotFoundError(f"LFW images missing, e.g. {missing[0]}")
        super().__init__(
            paths=[paths[i] for i in keep],
            labels=new_labels,
            class_names=kept_names,
            loader=FaceLoader(mode=face_mode),  # type: ignore[arg-type]
            description=(
                f"lfw:{list_path.name} ({len(keep)} images, {len(kept_names)} ids)"
            ),
            root=lfw_dir,
        )


class RecordIOSource(FaceSource):
    """An insightface RecordIO set (aligned 112x112 JPEGs, as CASIA-WebFace and MS1M ship).

    Args:
        path: the folder holding ``train.rec``/``train.idx``, or the ``.rec`` file.
        min_images: identities with fewer images are dropped.
        limit_classes: keep only the first N identities.
    """

    def __init__(
        self, path: str | Path, *, min_images: int = 1, limit_classes: int | None = None
    ) -> None:
        path = Path(path)
        rec = path / "train.rec" if path.is_dir() else path
        self.reader = RecordIOReader(rec)
        self.keys = np.asarray(self.reader.image_keys(), dtype=np.int64)
        raw = np.asarray([self.reader.header(int(k)).class_label for k in self.keys], np.int64)
        if raw.size == 0:
            raise ValueError(f"{rec} holds no image records")
        if raw.min() < 0:
            raise ValueError(f"{rec} has negative labels")
        original = np.unique(raw)
        dense = np.searchsorted(original, raw)
        names = [str(label) for label in original]
        keep, self.labels, self.class_names = _keep_classes(
            dense, names, min_images, limit_classes
        )
        self.keys = self.keys[keep]
        self.description = f"recordio:{rec.name} ({len(keep)} images, {self.num_classes} ids)"
        logger.info("read %s", self.description)

    def sample_key(self, index: int) -> str:
        """``record/<key>``: the record's key in ``train.idx``."""
        return f"record/{int(self.keys[index])}"

    def load(self, index: int) -> np.ndarray:
        _, payload = unpack_record(self.reader.read(int(self.keys[index])))
        with Image.open(io.BytesIO(payload)) as image:
            image.load()
            return resize_aligned(image, INPUT_SIZE)


#: Source photo size (width, height) per manifest ``source``, where it is fixed: the
#: UTKFace "Aligned & Cropped" chips are 200x200 (faces-extra/README.md). Needed to
#: repeat the border of crops that reach past their photo.
SOURCE_PHOTO_SIZES: dict[str, tuple[int, int]] = {"utkface": (200, 200)}
#: Manifest columns of the 5 landmarks in the source photo, in template order.
LANDMARK_COLUMNS = tuple(
    f"{point}_{axis}" for point in ("leye", "reye", "nose", "mouthl", "mouthr") for axis in "xy"
)


def repeat_border(
    pixels: np.ndarray, matrix: np.ndarray, photo_size: tuple[int, int]
) -> np.ndarray:
    """An aligned crop whose outside-the-photo part (black) is filled by repeating the
    photo's edge, as ``models.alignment.align_face`` frames faces near an image border.

    Every crop pixel is mapped back into the photo (``matrix``: photo -> crop), clamped
    to the photo two pixels inside its edge (JPEG rings at the black edge), and mapped
    forward again: pixels inside the photo map to themselves, the others to the nearest
    pixel of the edge.

    Args:
        pixels: the crop, RGB uint8 (S, S, 3), at the template's side S.
        matrix: the 2x3 similarity photo -> crop (at side S).
        photo_size: (width, height) of the photo the crop was cut from.
    """
    side = pixels.shape[0]
    ys, xs = np.mgrid[0:side, 0:side]
    points = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    in_photo = apply_transform(inverse, points)
    width, height = photo_size
    in_photo[:, 0] = np.clip(in_photo[:, 0], 2.0, width - 3.0)
    in_photo[:, 1] = np.clip(in_photo[:, 1], 2.0, height - 3.0)
    back = np.rint(apply_transform(matrix, in_photo)).astype(np.int64)
    back = np.clip(back, 0, side - 1)
    return pixels[back[:, 1], back[:, 0]].reshape(pixels.shape)


@dataclass(frozen=True)
class _Row:
    file: str
    source: str
    border_frac: float
    landmarks: np.ndarray | None


def _manifest_rows(path: Path) -> list[_Row]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "file" not in reader.fieldnames:
            raise ValueError(f"{path}: a manifest needs a 'file' column")
        has_points = all(c in reader.fieldnames for c in LANDMARK_COLUMNS)
        rows = []
        for number, record in enumerate(reader, start=2):
            try:
                landmarks = (
                    np.asarray([float(record[c]) for c in LANDMARK_COLUMNS]).reshape(5, 2)
                    if has_points else None
                )
                border = float(record.get("border_frac") or 0.0)
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: {exc}") from exc
            rows.append(_Row(record["file"], record.get("source") or "", border, landmarks))
    return rows


class UnlabelledSource(_PathSource):
    """Aligned 112 crops without identity labels (every label is :data:`UNLABELLED`).

    Listed by a manifest (``file`` relative to ``root``; optional ``source``,
    ``border_frac`` and the 5 landmarks in the source photo, as ``faces-extra``'s) or,
    without one, every image under ``root``. Crops that reach past their photo (black
    there) get the photo's edge repeated instead (:func:`repeat_border`) where the
    photo's size is known (:data:`SOURCE_PHOTO_SIZES`), so they look like the crops the
    service frames, not like faces in a black frame.

    Args:
        root: the crops' folder; cache keys are paths relative to it.
        manifest: the manifest, relative to ``root`` (``None``: all images, recursively).
        sources: keep only these ``source`` values (``None``: all).
        max_border_frac: drop crops with more of their area outside the photo.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        manifest: str | None = "manifest.csv",
        sources: Sequence[str] | None = None,
        max_border_frac: float = 1.0,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"unlabelled face folder not found: {root}")
        if manifest is not None:
            rows = _manifest_rows(root / manifest)
        else:
            rows = [
                _Row(p.relative_to(root).as_posix(), "", 0.0, None)
                for p in sorted(root.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES
            ]
        if sources is not None:
            known = sorted({row.source for row in rows})
            unknown = sorted(set(sources) - set(known))
            if unknown:
                raise ValueError(f"unlabelled sources {unknown} are not in {root}; "
                                 f"it has {known}")
            rows = [row for row in rows if row.source in set(sources)]
        rows = [row for row in rows if row.border_frac <= max_border_frac]
        if not rows:
            raise ValueError(f"no unlabelled faces left under {root} "
                             f"(sources={sources}, max_border_frac={max_border_frac})")
        # photo -> crop similarity of the crops that need their border repeated
        self.fill: dict[int, tuple[np.ndarray, tuple[int, int]]] = {}
        for index, row in enumerate(rows):
            size = SOURCE_PHOTO_SIZES.get(row.source)
            if row.border_frac > 0 and size is not None and row.landmarks is not None:
                self.fill[index] = (landmark_matrix(row.landmarks, template=ARCFACE_TEMPLATE_112),
                                    size)
        counts = {name: sum(row.source == name for row in rows)
                  for name in sorted({row.source for row in rows})}
        super().__init__(
            paths=[root / row.file for row in rows],
            labels=np.full(len(rows), UNLABELLED, dtype=np.int64),
            class_names=[],
            loader=FaceLoader(mode="aligned"),
            description=f"unlabelled:{root.name} ({len(rows)} images"
            + (f": {counts}" if any(counts) else "") + ")",
            root=root,
        )

    def load(self, index: int) -> np.ndarray:
        pixels = super().load(index)  # resized to the 112 template the landmarks map to
        fill = self.fill.get(index)
        return pixels if fill is None else repeat_border(pixels, *fill)


class MixedSource(FaceSource):
    """A labelled source followed by an unlabelled one: samples ``0 .. L-1`` are the
    labelled ones (their labels and identities), ``L ..`` the unlabelled ones (label
    :data:`UNLABELLED`). Cache keys stay each part's own (relative to its root).

    Args:
        labelled: the faces with identities (the margin head's classes).
        unlabelled: the faces without.
    """

    def __init__(self, labelled: FaceSource, unlabelled: FaceSource) -> None:
        self.labelled = labelled
        self.unlabelled = unlabelled
        self.num_labelled = len(labelled)
        self.num_unlabelled = len(unlabelled)
        self.labels = np.concatenate(
            [labelled.labels, np.full(len(unlabelled), UNLABELLED, dtype=np.int64)]
        )
        self.class_names = list(labelled.class_names)
        self.description = f"{labelled.description} + {unlabelled.description}"

    def _part(self, index: int) -> tuple[FaceSource, int]:
        if index < self.num_labelled:
            return self.labelled, index
        return self.unlabelled, index - self.num_labelled

    def load(self, index: int) -> np.ndarray:
        part, local = self._part(index)
        return part.load(local)

    def sample_key(self, index: int) -> str:
        part, local = self._part(index)
        return part.sample_key(local)
