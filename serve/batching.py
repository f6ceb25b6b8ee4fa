"""Dynamic batching: concurrent small requests share one onnxruntime call, as in Triton and MLServer.

A single worker task takes the first waiting request, gathers more until the batch holds
`max_batch_size` windows or `max_wait_s` has passed, runs the model once in a worker thread,
and hands each caller its slice. Requests that arrive while the model runs form the next batch.

The wait is only spent under concurrent load (when the previous batch held more than one
request): a lone client never waits for partners that are not coming.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable

import anyio.to_thread
import numpy as np


class DynamicBatcher:
    def __init__(self, run: Callable[[np.ndarray], np.ndarray], *, max_batch_size: int, max_wait_s: float,
                 on_batch: Callable[[int, int], None] | None = None):
        if max_batch_size < 1 or max_wait_s < 0:
            raise ValueError(f"need max_batch_size >= 1 and max_wait_s >= 0, got {max_batch_size}, {max_wait_s}")
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch  # (requests, windows) per model call, for metrics
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._serve(), name="dynamic-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None

    async def predict(self, windows: np.ndarray) -> np.ndarray:
        """Probabilities for `windows`, computed in whichever batch they land in."""
        if self._worker is None:
            raise RuntimeError("DynamicBatcher.predict called before start()")
        if self._worker.done():  # the worker must never die silently and leave callers waiting
            raise RuntimeError("the dynamic batcher's worker has stopped") from self._worker.exception()
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((windows, future))
        return await future

    async def _gather(self, first, wait_s: float) -> tuple[list, object]:
        """Requests for one batch, and the request that did not fit (or None)."""
        batch, size = [first], len(first[0])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while size < self.max_batch_size:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            if size + len(item[0]) > self.max_batch_size:
                return batch, item
            batch.append(item)
            size += len(item[0])
        return batch, None

    async def _serve(self) -> None:
        carried, previous_requests = None, 1
        while True:
            first = carried if carried is not None else await self._queue.get()
            wait_s = self.max_wait_s if previous_requests > 1 else 0.0
            batch, carried = await self._gather(first, wait_s)
            batch = [(w, f) for w, f in batch if not f.cancelled()]  # callers that hung up
            previous_requests = max(1, len(batch))
            if not batch:
                continue
            windows = np.concatenate([w for w, _ in batch]) if len(batch) > 1 else batch[0][0]
            try:
                probabilities = await anyio.to_thread.run_sync(self.run, windows)
            except Exception as error:  # every caller in the batch learns of the failure
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            if self.on_batch is not None:
                self.on_batch(len(batch), len(windows))
            start = 0
            for w, future in batch:
                if not future.done():
                    future.set_result(probabilities[start:start + len(w)])
                start += len(w)
