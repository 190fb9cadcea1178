"""Batch samplers that plan every sample: which image, at which resolution, which seed.

Cross-Resolution Batch Training (METHODS §5) is decided here, not in the workers: for
each batch the sampler picks exactly ``round(p * B)`` samples to degrade and draws a
side r for each, so the fraction holds in every batch (not only on average) and the
flag and r travel with the sample to the head and the logs. The workers then degrade
with ``training.degrade.degrade``, the same function evaluation uses.

Everything is a pure function of ``(seed, epoch, rank, batch index)``: the order and the
plan do not depend on the number of workers, and a resumed run skips to its batch
without replaying the ones before.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


class SampleKey(NamedTuple):
    """What the dataset needs to produce one training sample.

    Attributes:
        index: the sample in the source.
        side: the side r it is degraded to; 0 means untouched.
        seed: seed of its augmentation.
    """

    # shadows tuple.index on purpose: the field name reads better than the method
    index: int  # type: ignore[assignment]
    side: int
    seed: int


@dataclass(frozen=True)
class ResolutionPolicy:
    """Which share of a batch is degraded and how r is drawn.

    Attributes:
        fraction: p; exactly ``floor(p * B + 0.5)`` samples of a batch of B are degraded.
        r_min: smallest side (inclusive) of the uniform integer draw.
        r_max: largest side (exclusive).
        sides: a discrete set to draw r from instead (uniformly).
        same_side_per_batch: one r for every degraded sample of a batch.
    """

    fraction: float = 0.5
    r_min: int = 7
    r_max: int = 112
    sides: tuple[int, ...] | None = None
    same_side_per_batch: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {self.fraction}")
        if self.sides is None and not 1 <= self.r_min < self.r_max:
            raise ValueError(f"need 1 <= r_min < r_max, got {self.r_min}, {self.r_max}")
        if self.sides is not None and (not self.sides or min(self.sides) < 1):
            raise ValueError(f"sides must be a non-empty set of positive sides, got {self.sides}")

    def degraded_count(self, batch: int) -> int:
        return min(batch, math.floor(self.fraction * batch + 0.5))

    def draw_sides(self, rng: np.random.Generator, count: int) -> np.ndarray:
        n = 1 if self.same_side_per_batch else count
        if self.sides is not None:
            drawn = rng.choice(np.asarray(self.sides, dtype=np.int64), size=n)
        else:
            drawn = rng.integers(self.r_min, self.r_max, size=n)
        return np.broadcast_to(drawn, (count,)).astype(np.int64) if n == 1 else drawn

    def plan(self, rng: np.random.Generator, batch: int) -> np.ndarray:
        """Sides (B,) for one batch: r for the degraded samples, 0 for the others."""
        sides = np.zeros(batch, dtype=np.int64)
        count = self.degraded_count(batch)
        if count:
            chosen = rng.choice(batch, size=count, replace=False)
            sides[chosen] = self.draw_sides(rng, count)
        return sides


def _batch_rng(seed: int, epoch: int, rank: int, batch: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, rank, batch, 0x5EED])


def _keys(indices: np.ndarray, sides: np.ndarray, rng: np.random.Generator) -> list[SampleKey]:
    seeds = rng.integers(0, 2**62, size=len(indices))
    return [
        SampleKey(int(i), int(s), int(z)) for i, s, z in zip(indices, sides, seeds, strict=True)
    ]


class _EpochBatchSampler(ABC):
    """What every sampler shares: the epoch and resume bookkeeping (``set_epoch``,
    ``start_batch``) and the walk through an epoch.

    An epoch is a permutation of the population (the same on every rank, by seed and
    epoch); rank k takes every ``world_size``-th item of it and cuts its share into
    batches of ``per_batch`` items (incomplete batches are dropped, so every rank runs
    the same number of steps). A subclass turns a batch's items into sample indices
    (:meth:`_batch_indices`); the resolution plan then covers the whole batch.
    """

    def __init__(self, policy: ResolutionPolicy, seed: int, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of {world_size}")
        self.policy = policy
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_batch = 0
        self._population: int | np.ndarray = 0
        self._per_batch = 1

    def _deal(self, population: int | np.ndarray, per_batch: int, what: str) -> None:
        """Sets what an epoch permutes (a count n for 0 .. n-1, or the items) and how many
        of them a batch takes; refuses a population that cannot fill one batch per rank."""
        self._population = population
        self._per_batch = per_batch
        if len(self) < 1:
            raise ValueError(
                f"{self._size()} {what} over {self.world_size} ranks cannot fill the {per_batch} "
                "places of a batch"
            )

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Selects the epoch (its order) and the first batch to yield (for resuming)."""
        self.epoch = epoch
        self.start_batch = start_batch

    def _size(self) -> int:
        population = self._population
        return len(population) if isinstance(population, np.ndarray) else int(population)

    def __len__(self) -> int:
        return (self._size() // self.world_size) // self._per_batch

    def __iter__(self) -> Iterator[list[SampleKey]]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self._population)
        mine = order[self.rank :: self.world_size]
        for b in range(self.start_batch, len(self)):
            rng = _batch_rng(self.seed, self.epoch, self.rank, b)
            items = mine[b * self._per_batch : (b + 1) * self._per_batch]
            indices = self._batch_indices(b, items, rng)
            yield _keys(indices, self.policy.plan(rng, len(indices)), rng)

    @abstractmethod
    def _batch_indices(self, b: int, items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The sample indices of batch ``b`` from its share ``items`` of the permutation."""


class CrossResolutionBatchSampler(_EpochBatchSampler):
    """Shuffled batches with a cross-resolution plan; sharded across DDP ranks.

    Every epoch is a fresh permutation of all samples (the same on every rank); rank k
    takes every ``world_size``-th sample, so ranks see disjoint data, and incomplete
    batches are dropped so every rank runs the same number of steps.

    Args:
        num_samples: size of the dataset.
        batch_size: samples per batch (per rank).
        policy: the resolution plan.
        seed: the run's seed.
        rank: this process's rank.
        world_size: number of processes.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        policy: ResolutionPolicy,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(policy, seed, rank, world_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self._deal(num_samples, batch_size, "samples")
        self.num_samples = num_samples
        self.batch_size = batch_size

    def _batch_indices(self, b: int, items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return items


class MixedBatchSampler(_EpochBatchSampler):
    """Batches that mix labelled faces with a fixed share of unlabelled ones.

    Samples ``0 .. L-1`` are labelled, ``L .. L+U-1`` unlabelled (a
    :class:`~training.data.sources.MixedSource`). Every batch of B holds exactly
    ``u = floor(fraction * B + 0.5)`` unlabelled samples and ``B - u`` labelled ones.
    An epoch is one pass over the labelled samples (shuffled, sharded across ranks as
    :class:`CrossResolutionBatchSampler`); the unlabelled ones are drawn from an endless
    stream of permutations, each sample once per pass over them, so the position in
    that stream is a function of (epoch, batch, rank) and a resumed run continues it.
    The cross-resolution plan covers the whole batch.

    Args:
        num_labelled: L.
        num_unlabelled: U.
        batch_size: B.
        fraction: the unlabelled share of every batch, in (0, 1).
        policy: the resolution plan.
        seed, rank, world_size: as :class:`CrossResolutionBatchSampler`.
    """

    def __init__(
        self,
        num_labelled: int,
        num_unlabelled: int,
        batch_size: int,
        fraction: float,
        policy: ResolutionPolicy,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(policy, seed, rank, world_size)
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"fraction must be in (0, 1), got {fraction}")
        self.unlabelled_per_batch = math.floor(fraction * batch_size + 0.5)
        self.labelled_per_batch = batch_size - self.unlabelled_per_batch
        if self.unlabelled_per_batch < 1 or self.labelled_per_batch < 1:
            raise ValueError(f"a batch of {batch_size} cannot hold a share {fraction} of "
                             "unlabelled samples and at least one labelled one")
        if num_unlabelled < 1:
            raise ValueError("no unlabelled samples to mix in")
        self._deal(num_labelled, self.labelled_per_batch, "labelled samples")
        self.num_labelled = num_labelled
        self.num_unlabelled = num_unlabelled
        self.batch_size = batch_size
        self._permutation: tuple[int, np.ndarray] | None = None

    def _unlabelled_pass(self, number: int) -> np.ndarray:
        if self._permutation is None or self._permutation[0] != number:
            order = np.random.default_rng([self.seed, number, 0x0A1B]).permutation(
                self.num_unlabelled
            )
            self._permutation = (number, order)
        return self._permutation[1]

    def unlabelled_at(self, start: int, count: int) -> np.ndarray:
        """Positions ``start .. start+count-1`` of the unlabelled stream (local indices)."""
        positions = np.arange(start, start + count)
        passes, offsets = np.divmod(positions, self.num_unlabelled)
        return np.asarray([self._unlabelled_pass(int(p))[int(o)]
                           for p, o in zip(passes, offsets, strict=True)], dtype=np.int64)

    def _batch_indices(self, b: int, items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        u = self.unlabelled_per_batch
        stream = ((self.epoch * len(self) + b) * self.world_size + self.rank) * u
        return np.concatenate([items, self.num_labelled + self.unlabelled_at(stream, u)])


class IdentityBatchSampler(_EpochBatchSampler):
    """P identities x K images per batch (for batch-hard metric losses).

    Each epoch visits every identity with at least ``min_images`` images once (in a
    fresh order, identities sharded across ranks); an identity with fewer than K images
    is sampled with replacement. Samples are grouped by identity in the batch.

    Args:
        labels: identity of every sample.
        identities: P.
        images_per_identity: K.
        policy: the resolution plan (``fraction=1`` degrades every sample).
        min_images: identities with fewer images are skipped (2 for positives).
        seed, rank, world_size: as :class:`CrossResolutionBatchSampler`.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        identities: int,
        images_per_identity: int,
        policy: ResolutionPolicy,
        *,
        min_images: int = 2,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(policy, seed, rank, world_size)
        if identities < 1 or images_per_identity < 1:
            raise ValueError("identities and images_per_identity must be positive")
        labels = np.asarray(labels, dtype=np.int64)
        order = np.argsort(labels, kind="stable")
        classes, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
        self.members = {
            int(c): order[s : s + n] for c, s, n in zip(classes, starts, counts, strict=True)
        }
        self.eligible = np.asarray([c for c, n in zip(classes, counts, strict=True)
                                    if n >= min_images], dtype=np.int64)
        self._deal(self.eligible, identities, f"identities with >= {min_images} images")
        self.identities = identities
        self.images_per_identity = images_per_identity

    @property
    def batch_size(self) -> int:
        return self.identities * self.images_per_identity

    def _batch_indices(self, b: int, items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        k = self.images_per_identity
        return np.concatenate([
            rng.choice(self.members[int(c)], size=k, replace=len(self.members[int(c)]) < k)
            for c in items
        ])
