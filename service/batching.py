"""Micro-batching of embedding requests.

Requests that arrive together are embedded in one ONNX Runtime call: the first image
waiting opens a short collection window (``window_s``), and the batch closes when the
window ends or ``max_batch`` images are waiting. The window is waited only while other
requests are on their way (``incoming``: being decoded, their images not yet queued):
alone, a request would wait the whole window for company that cannot come. ONNX Runtime
runs in a dedicated thread so the event loop keeps accepting requests meanwhile.
Images asked for with ``same_side`` (a pair-space model's cheaper form for a ``/verify``
the gate does not split, ``models.embedder.OnnxEmbedder.embed_pixels``) share the batch
window and are run as their own model call.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np

logger = logging.getLogger(__name__)


class PixelEmbedder(Protocol):
    """What the batcher needs of a model (``models.embedder.OnnxEmbedder`` fits; only
    pair-space models are ever asked for ``same_side``)."""

    def embed_pixels(
        self, pixels: Sequence[np.ndarray], *, same_side: bool = False
    ) -> np.ndarray: ...


#: An image, the future of its embedding, and whether it is wanted ``same_side``.
_Item = tuple[np.ndarray, "asyncio.Future[np.ndarray]", bool]


class BatchingEmbedder:
    """Collects single images from concurrent requests into batches.

    Args:
        embedder: the model; ``embed_pixels`` takes RGB uint8 arrays at the input size.
        window_s: how long the first waiting image waits for company.
        max_batch: the most images in one model call.
        on_batch: called with the size of every batch (metrics).
    """

    def __init__(
        self,
        embedder: PixelEmbedder,
        *,
        window_s: float,
        max_batch: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self._embedder = embedder
        self._window_s = window_s
        self._max_batch = max_batch
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._incoming = 0

    @contextlib.contextmanager
    def incoming(self) -> Iterator[None]:
        """Marks a request on its way to :meth:`embed` (its images being decoded), so that
        a batch already open waits (up to the window) for its images.

        Leave the block right before calling ``embed``, with no ``await`` in between, so
        the images are queued before the collector can see that nothing is on its way.
        """
        self._incoming += 1
        try:
            yield
        finally:
            self._incoming -= 1

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Starts the batching task on the running event loop."""
        if self.running:
            return
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lrfr-embed")
        self._task = asyncio.create_task(self._run(), name="lrfr-embed-batcher")

    async def stop(self) -> None:
        """Stops the task; images still waiting fail with ``RuntimeError``."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._queue is not None:
            while not self._queue.empty():
                _, future, _ = self._queue.get_nowait()
                if not future.done():
                    future.set_exception(RuntimeError("the embedder is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def embed(self, pixels: Sequence[np.ndarray], *, same_side: bool = False) -> np.ndarray:
        """Embeddings (N, D) of RGB uint8 arrays at the model input size (``same_side``:
        see ``OnnxEmbedder.embed_pixels``)."""
        if self._queue is None or not self.running:
            raise RuntimeError("the embedder is not running")
        loop = asyncio.get_running_loop()
        futures = []
        for image in pixels:
            future: asyncio.Future[np.ndarray] = loop.create_future()
            self._queue.put_nowait((image, future, same_side))
            futures.append(future)
        vectors = await asyncio.gather(*futures)
        return np.stack(vectors) if vectors else np.zeros((0, 0), dtype=np.float32)

    async def _collect(self) -> list[_Item]:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        deadline = loop.time() + self._window_s
        while len(batch) < self._max_batch:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            if self._incoming == 0:
                break  # no other request is on its way: waiting cannot fill the batch
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        while True:
            collected = [item for item in await self._collect() if not item[1].done()]
            for same_side in (False, True):
                batch = [item for item in collected if item[2] is same_side]
                if batch:
                    await self._embed_batch(batch, same_side)

    async def _embed_batch(self, batch: list[_Item], same_side: bool) -> None:
        """One model call for ``batch``; each waiting request gets its vector or the error."""
        if self._on_batch is not None:
            self._on_batch(len(batch))
        images = [image for image, _, _ in batch]
        # asked only when set: the test doubles of other models take no such argument
        call = (functools.partial(self._embedder.embed_pixels, same_side=True)
                if same_side else self._embedder.embed_pixels)
        try:
            vectors = await asyncio.get_running_loop().run_in_executor(
                self._executor, call, images
            )
        except Exception as exc:  # the model failed: every waiting request learns why
            logger.exception("embedding a batch of %d failed", len(batch))
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future, _), vector in zip(batch, vectors, strict=True):
            if not future.done():
                future.set_result(vector)
