"""Micro-batching: requests that arrive together share one batched inference.

Each image goes into an asyncio queue with a future. One worker takes the first waiting image,
then collects more until it has `max_batch` or `max_wait_ms` have passed since the first, runs the
batch in a dedicated inference thread (the event loop keeps accepting requests meanwhile) and
resolves every future. Under load, images pile up while a batch runs, so the next batch is fuller:
throughput grows with concurrency. The wait applies only under load (the previous batch was shared
or others are queued), so a lone request on an idle server is answered at once.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Infer = Callable[[np.ndarray], np.ndarray]  # uint8 N×C×H×W -> float N×K probabilities


class Busy(Exception):
    """The queue is full: the server is overloaded, the client should retry later."""


class InferenceFailed(Exception):
    """The model raised on a batch: an internal error, reported to each of the batch's requests."""


@dataclass
class Result:
    probs: np.ndarray  # K probabilities for one image
    batch_size: int  # how many images shared the inference run
    inference_ms: float


@dataclass
class _Item:
    image: np.ndarray
    future: asyncio.Future[Result]


@dataclass
class BatchStats:
    batches: int = 0
    images: int = 0
    failed_batches: int = 0
    busy_seconds: float = 0.0
    sizes: Counter[int] = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        return {"batches": self.batches, "images": self.images, "failed_batches": self.failed_batches,
                "mean_batch_size": round(self.images / self.batches, 3) if self.batches else 0.0,
                "max_batch_size_seen": max(self.sizes, default=0),
                "batch_size_histogram": {str(k): self.sizes[k] for k in sorted(self.sizes)},
                "inference_busy_seconds": round(self.busy_seconds, 3)}


class MicroBatcher:
    def __init__(self, infer: Infer, *, max_batch: int = 32, max_wait_ms: float = 5.0, max_queue: int = 1024) -> None:
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError("max_batch must be >= 1 and max_wait_ms >= 0")
        self.infer, self.max_batch, self.max_wait = infer, max_batch, max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_batch = 0
        # One thread: batches run one after another, so each gets all cores and the queue fills meanwhile.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="cnnarena-infer")

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize() if self._queue else 0

    async def start(self) -> None:
        self._queue = asyncio.Queue(self.max_queue)
        self._task = asyncio.create_task(self._worker(), name="cnnarena-batcher")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while self._queue and not self._queue.empty():
            item = self._queue.get_nowait()
            if not item.future.done():
                item.future.set_exception(InferenceFailed("server is shutting down"))
        self._executor.shutdown(wait=True)

    async def submit(self, image: np.ndarray) -> Result:
        """Probabilities for one uint8 C×H×W image, computed in some batch."""
        if self._queue is None or self._task is None or self._task.done():
            raise InferenceFailed("batcher is not running")
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Item(image, future))
        except asyncio.QueueFull:
            raise Busy(f"{self.max_queue} images already waiting") from None
        return await future

    async def _collect(self) -> list[_Item]:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        # Wait for company only under load (the last batch was shared): a lone request is answered at once.
        wait = self.max_wait if self._last_batch > 1 or not self._queue.empty() else 0.0
        deadline = loop.time() + wait
        while len(batch) < self.max_batch:
            try:  # whatever is already waiting joins at once
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [item for item in await self._collect() if not item.future.done()]  # skip cancelled requests
            self._last_batch = len(batch)
            if not batch:
                continue
            t0 = time.perf_counter()
            try:
                probs = await loop.run_in_executor(self._executor, self.infer, np.stack([i.image for i in batch]))
                if len(probs) != len(batch):
                    raise ValueError(f"model returned {len(probs)} rows for {len(batch)} images")
            except Exception as e:  # never let one bad batch kill the worker: fail its requests, go on
                self.stats.failed_batches += 1
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(InferenceFailed(f"{type(e).__name__}: {e}"))
                continue
            ms = 1000 * (time.perf_counter() - t0)
            self.stats.batches += 1
            self.stats.images += len(batch)
            self.stats.sizes[len(batch)] += 1
            self.stats.busy_seconds += ms / 1000
            for item, row in zip(batch, probs, strict=True):
                if not item.future.done():
                    item.future.set_result(Result(row, len(batch), ms))
