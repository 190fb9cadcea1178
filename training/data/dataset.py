"""The training dataset: a face source plus augmentation and planned degradation.

Indexed by :class:`~training.data.samplers.SampleKey` (from the batch samplers), it
returns the sample as the network will see it: RGB uint8, CHW, at the network's input
side, plus its label, its side r and the ``degraded`` flag. With ``return_hr`` it also
returns the untouched (augmented, not degraded) copy, for the fine-tuning losses that
compare the two.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from training.data.augment import Augment
from training.data.samplers import SampleKey
from training.data.sources import FaceSource
from training.degrade import CameraEffects, degrade

#: The stream of a sample's seed that draws its camera effects (augmentation uses the seed).
_CAMERA_STREAM = 1


def _to_input(pixels: np.ndarray, side: int) -> np.ndarray:
    if pixels.shape[0] == side and pixels.shape[1] == side:
        return pixels
    resized = Image.fromarray(pixels).resize((side, side), Image.Resampling.BICUBIC)
    return np.asarray(resized, dtype=np.uint8)


def _chw(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))


@dataclass(eq=False)
class FaceDataset(Dataset):
    """Augmented, planned faces from a :class:`FaceSource`.

    Attributes:
        source: the labelled faces (112 crops).
        augment: the augmentation (``None``: none).
        input_size: the network's input side; crops are resized to it (bicubic) after
            degradation, as ``models.embedder`` resizes images for the artifact.
        down: reduction kernel of the degradation.
        up: enlargement kernel of the degradation.
        camera: camera effects on the degraded samples (drawn from the sample's seed).
        return_hr: also return the undegraded copy under ``"hr"``.
    """

    source: FaceSource
    _: KW_ONLY
    augment: Augment | None = None
    input_size: int = 112
    down: str = "bicubic"
    up: str = "bicubic"
    camera: CameraEffects | None = None
    return_hr: bool = False

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: SampleKey | tuple[int, int, int] | int) -> dict[str, Any]:
        if isinstance(key, int | np.integer):
            key = SampleKey(int(key), 0, int(key))
        index, side, seed = key
        pixels = self.source.load(index)
        if self.augment is not None:
            pixels = self.augment(pixels, np.random.default_rng(seed))
        native = pixels.shape[0]
        degraded = 0 < side < max(pixels.shape[:2])
        low = (
            degrade(
                pixels, side, down=self.down, up=self.up,  # type: ignore[arg-type]
                camera=self.camera,
                rng=np.random.default_rng((seed, _CAMERA_STREAM)) if self.camera else None,
            )
            if degraded
            else pixels
        )
        item: dict[str, Any] = {
            "image": _chw(_to_input(low, self.input_size)),
            "label": int(self.source.labels[index]),
            "side": int(side) if degraded else int(native),
            "degraded": bool(degraded),
            "index": int(index),  # the source's sample: teacher descriptors are looked up by it
        }
        if self.return_hr:
            item["hr"] = _chw(_to_input(pixels, self.input_size))
        return item


def collate(items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stacks samples: images uint8 (B, 3, H, W), labels/sides/indices int64, flags bool."""
    batch = {
        "image": torch.stack([item["image"] for item in items]),
        "label": torch.tensor([item["label"] for item in items], dtype=torch.long),
        "side": torch.tensor([item["side"] for item in items], dtype=torch.long),
        "degraded": torch.tensor([item["degraded"] for item in items], dtype=torch.bool),
        "index": torch.tensor([item["index"] for item in items], dtype=torch.long),
    }
    if "hr" in items[0]:
        batch["hr"] = torch.stack([item["hr"] for item in items])
    return batch


def _worker_init(_: int) -> None:
    # decoding is single-threaded PIL; keep torch from spawning threads per worker
    torch.set_num_threads(1)


def make_loader(
    dataset: FaceDataset,
    batch_sampler: Any,
    *,
    num_workers: int,
    prefetch_factor: int = 4,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader that decodes in ``num_workers`` processes (kept alive across epochs)."""
    extra: dict[str, Any] = {}
    if num_workers > 0:
        extra = {
            "prefetch_factor": prefetch_factor,
            "persistent_workers": True,
            "worker_init_fn": _worker_init,
        }
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        # the loader draws a worker base seed per epoch; a private generator keeps that
        # draw off the global RNG (dropout), so a resumed run replays the same numbers.
        # Sample randomness comes from the sampler's keys, never from this seed.
        generator=torch.Generator().manual_seed(0),
        **extra,
    )
