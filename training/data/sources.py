"""Labelled face sources: where the images are and how one becomes a 112 crop.

A source is a list of samples with integer identity labels ``0 .. C-1`` and a
``load(i)`` that returns sample ``i`` as an RGB uint8 (112, 112, 3) array. Sources only
hold paths or offsets, so they pickle cheaply into decoding worker processes.

* :class:`FolderSource` - one folder per identity (the CASIA-WebFace layout).
* :class:`RecordIOSource` - insightface ``train.rec`` + ``train.idx``.
* :class:`LFWPeopleSource` - an LFW people list (``peopleDevTrain.txt``, ``people.txt``).
"""

from __future__ import annotations

import io
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from training.data.recordio import RecordIOReader, unpack_record
from training.eval.datasets import parse_people_file
from training.faces import INPUT_SIZE, FaceLoader, resize_aligned

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".pgm"})


class FaceSource(ABC):
    """Samples with identity labels; subclasses implement :meth:`load`.

    Attributes:
        labels: (N,) int64 identity per sample, in ``0 .. num_classes - 1``.
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
