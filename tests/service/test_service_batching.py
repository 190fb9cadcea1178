"""The micro-batcher embeds concurrent requests together, and fails cleanly."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import numpy as np
import pytest

from service.batching import BatchingEmbedder


class RecordingEmbedder:
    """Returns each image's first pixel as a 3-d vector and records batch sizes."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[int] = []
        self.threads: set[str] = set()
        self.fail = fail

    def embed_pixels(self, pixels: Sequence[np.ndarray]) -> np.ndarray:
        self.batches.append(len(pixels))
        self.threads.add(threading.current_thread().name)
        if self.fail:
            raise RuntimeError("model exploded")
        return np.stack([p[0, 0].astype(np.float32) for p in pixels])


def _image(value: int) -> np.ndarray:
    return np.full((2, 2, 3), value, dtype=np.uint8)


async def _embed_concurrently(batcher: BatchingEmbedder, values: list[int]) -> list[np.ndarray]:
    return await asyncio.gather(*(batcher.embed([_image(v)]) for v in values))


def test_concurrent_requests_share_one_batch() -> None:
    model = RecordingEmbedder()
    sizes: list[int] = []

    async def scenario() -> list[np.ndarray]:
        batcher = BatchingEmbedder(model, window_s=0.05, max_batch=64, on_batch=sizes.append)
        await batcher.start()
        try:
            return await _embed_concurrently(batcher, list(range(10)))
        finally:
            await batcher.stop()

    results = asyncio.run(scenario())
    assert model.batches == [10]
    assert sizes == [10]
    # every request got its own image's vector back
    assert [int(r[0, 0]) for r in results] == list(range(10))
    assert all(name.startswith("lrfr-embed") for name in model.threads)


def test_max_batch_splits_large_bursts() -> None:
    model = RecordingEmbedder()

    async def scenario() -> None:
        batcher = BatchingEmbedder(model, window_s=0.05, max_batch=4)
        await batcher.start()
        try:
            vectors = await batcher.embed([_image(v) for v in range(10)])
            assert vectors[:, 0].tolist() == list(range(10))
        finally:
            await batcher.stop()

    asyncio.run(scenario())
    assert model.batches == [4, 4, 2]


def test_requests_far_apart_are_not_delayed_together() -> None:
    model = RecordingEmbedder()

    async def scenario() -> None:
        batcher = BatchingEmbedder(model, window_s=0.001, max_batch=8)
        await batcher.start()
        try:
            await batcher.embed([_image(1)])
            await asyncio.sleep(0.02)
            await batcher.embed([_image(2)])
        finally:
            await batcher.stop()

    asyncio.run(scenario())
    assert model.batches == [1, 1]


def test_model_errors_reach_every_waiting_request() -> None:
    async def scenario() -> list[object]:
        batcher = BatchingEmbedder(RecordingEmbedder(fail=True), window_s=0.02, max_batch=8)
        await batcher.start()
        try:
            return await asyncio.gather(
                *(batcher.embed([_image(v)]) for v in range(3)), return_exceptions=True
            )
        finally:
            await batcher.stop()

    results = asyncio.run(scenario())
    assert all(isinstance(r, RuntimeError) and "exploded" in str(r) for r in results)


def test_embed_refuses_when_not_started() -> None:
    batcher = BatchingEmbedder(RecordingEmbedder(), window_s=0.0, max_batch=1)
    with pytest.raises(RuntimeError, match="not running"):
        asyncio.run(batcher.embed([_image(0)]))
