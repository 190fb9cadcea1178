"""The micro-batcher embeds concurrent requests together, and fails cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any

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


@contextlib.asynccontextmanager
async def _running(model: RecordingEmbedder, **options: Any) -> AsyncIterator[BatchingEmbedder]:
    """A started :class:`BatchingEmbedder` over ``model``, stopped on leaving."""
    batcher = BatchingEmbedder(model, **options)
    await batcher.start()
    try:
        yield batcher
    finally:
        await batcher.stop()


async def _embed_concurrently(batcher: BatchingEmbedder, values: list[int]) -> list[np.ndarray]:
    return await asyncio.gather(*(batcher.embed([_image(v)]) for v in values))


def test_concurrent_requests_share_one_batch() -> None:
    model = RecordingEmbedder()
    sizes: list[int] = []

    async def scenario() -> list[np.ndarray]:
        async with _running(model, window_s=0.05, max_batch=64, on_batch=sizes.append) as batcher:
            return await _embed_concurrently(batcher, list(range(10)))

    results = asyncio.run(scenario())
    assert model.batches == [10]
    assert sizes == [10]
    # every request got its own image's vector back
    assert [int(r[0, 0]) for r in results] == list(range(10))
    assert all(name.startswith("lrfr-embed") for name in model.threads)


def test_max_batch_splits_large_bursts() -> None:
    model = RecordingEmbedder()

    async def scenario() -> None:
        async with _running(model, window_s=0.05, max_batch=4) as batcher:
            vectors = await batcher.embed([_image(v) for v in range(10)])
        assert vectors[:, 0].tolist() == list(range(10))

    asyncio.run(scenario())
    assert model.batches == [4, 4, 2]


def test_requests_far_apart_are_not_delayed_together() -> None:
    model = RecordingEmbedder()

    async def scenario() -> None:
        async with _running(model, window_s=0.001, max_batch=8) as batcher:
            await batcher.embed([_image(1)])
            await asyncio.sleep(0.02)
            await batcher.embed([_image(2)])

    asyncio.run(scenario())
    assert model.batches == [1, 1]


def test_model_errors_reach_every_waiting_request() -> None:
    async def scenario() -> list[object]:
        async with _running(RecordingEmbedder(fail=True), window_s=0.02, max_batch=8) as batcher:
            return await asyncio.gather(
                *(batcher.embed([_image(v)]) for v in range(3)), return_exceptions=True
            )

    results = asyncio.run(scenario())
    assert all(isinstance(r, RuntimeError) and "exploded" in str(r) for r in results)


def test_embed_refuses_when_not_started() -> None:
    batcher = BatchingEmbedder(RecordingEmbedder(), window_s=0.0, max_batch=1)
    with pytest.raises(RuntimeError, match="not running"):
        asyncio.run(batcher.embed([_image(0)]))


def test_a_lone_request_does_not_wait_the_window() -> None:
    model = RecordingEmbedder()

    async def scenario() -> float:
        async with _running(model, window_s=5.0, max_batch=8) as batcher:
            loop = asyncio.get_running_loop()
            started = loop.time()
            await batcher.embed([_image(1), _image(2)])
            return loop.time() - started

    # nothing else is on its way: the batch closes at once, not after 5 s
    assert asyncio.run(scenario()) < 1.0
    assert model.batches == [2]


def test_an_open_batch_waits_for_a_request_on_its_way() -> None:
    model = RecordingEmbedder()

    async def scenario() -> None:
        async with _running(model, window_s=5.0, max_batch=8) as batcher:

            async def later() -> np.ndarray:
                with batcher.incoming():  # decoding its image meanwhile
                    await asyncio.sleep(0.05)
                return await batcher.embed([_image(2)])

            second = asyncio.create_task(later())
            await asyncio.sleep(0)  # the second request is on its way
            first = await batcher.embed([_image(1)])
            assert int(first[0, 0]) == 1
            assert int((await second)[0, 0]) == 2

    asyncio.run(scenario())
    assert model.batches == [2]


def test_the_window_still_bounds_the_wait_for_requests_on_their_way() -> None:
    model = RecordingEmbedder()

    async def scenario() -> None:
        async with _running(model, window_s=0.01, max_batch=8) as batcher:
            with batcher.incoming():  # a request that never comes (it failed decoding)
                await batcher.embed([_image(1)])

    asyncio.run(scenario())
    assert model.batches == [1]


class SideRecordingEmbedder(RecordingEmbedder):
    """Also takes ``same_side`` (as a pair-space model does), marking its answers."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, bool]] = []

    def embed_pixels(self, pixels: Sequence[np.ndarray], *, same_side: bool = False
                     ) -> np.ndarray:
        self.calls.append((len(pixels), same_side))
        vectors = super().embed_pixels(pixels)
        return vectors + (1000.0 if same_side else 0.0)


def test_same_side_requests_share_the_window_and_run_as_their_own_call() -> None:
    model = SideRecordingEmbedder()
    sizes: list[int] = []

    async def scenario() -> list[np.ndarray]:
        async with _running(model, window_s=0.05, max_batch=64, on_batch=sizes.append) as batcher:
            return await asyncio.gather(*(
                batcher.embed([_image(v)], same_side=v % 2 == 1) for v in range(6)
            ))

    results = asyncio.run(scenario())
    assert sorted(model.calls) == [(3, False), (3, True)]
    assert sorted(sizes) == [3, 3]
    # each request got its own image's vector, from the call it asked for
    assert [int(r[0, 0]) for r in results] == [0, 1001, 2, 1003, 4, 1005]
