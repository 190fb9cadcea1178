"""Training data: sources (folders, RecordIO, LFW lists), augmentation, planned batches.

Faces travel as RGB uint8; the batch samplers plan which samples are degraded (and to
which side r), the decoding workers carry the plan out with ``training.degrade``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from training.data.augment import Augment
from training.data.dataset import FaceDataset, collate, make_loader
from training.data.samplers import (
    CrossResolutionBatchSampler,
    IdentityBatchSampler,
    MixedBatchSampler,
    ResolutionPolicy,
    SampleKey,
)
from training.data.sources import (
    FaceSource,
    FolderSource,
    LFWPeopleSource,
    MixedSource,
    RecordIOSource,
    UnlabelledSource,
    parse_people_file,
)

if TYPE_CHECKING:
    from training.config import DataConfig

__all__ = [
    "Augment",
    "CrossResolutionBatchSampler",
    "FaceDataset",
    "FaceSource",
    "FolderSource",
    "IdentityBatchSampler",
    "LFWPeopleSource",
    "MixedBatchSampler",
    "MixedSource",
    "RecordIOSource",
    "ResolutionPolicy",
    "SampleKey",
    "UnlabelledSource",
    "build_source",
    "collate",
    "make_loader",
    "parse_people_file",
]


def build_source(data: object) -> FaceSource:
    """The face source a :class:`training.config.DataConfig` describes: the labelled
    faces, followed by ``data.unlabelled`` (a :class:`MixedSource`) when it is set."""
    from training.config import DataConfig

    if not isinstance(data, DataConfig):
        raise TypeError(f"expected a DataConfig, got {type(data).__name__}")
    labelled = _labelled_source(data)
    extra = data.unlabelled
    if extra is None:
        return labelled
    unlabelled = UnlabelledSource(
        extra.root, manifest=extra.manifest, sources=extra.sources,
        max_border_frac=extra.max_border_frac,
    )
    return MixedSource(labelled, unlabelled)


def _labelled_source(data: DataConfig) -> FaceSource:
    if not data.root:
        raise ValueError("data.root is empty: point it at the training set")
    if data.kind == "folder":
        return FolderSource(
            data.root,
            face_mode=data.face_mode or "aligned",
            min_images=data.min_images,
            limit_classes=data.limit_classes,
        )
    if data.kind == "recordio":
        return RecordIOSource(
            data.root, min_images=data.min_images, limit_classes=data.limit_classes
        )
    return LFWPeopleSource(
        data.root,
        data.people_file,
        folds=data.people_folds,
        min_images=data.min_images,
        limit_classes=data.limit_classes,
        face_mode=data.face_mode or "lfw",
    )
