"""Micro-batching: coalesce the faces of concurrent requests into one embedding call per resolution.

A request submits its crops and awaits its embeddings. The worker takes the first waiting request, then keeps
collecting until the batch holds `max_batch` faces or `max_wait` has passed since that first request, runs the
model once in a worker thread and hands each request its rows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from service import metrics


@dataclass
class _Job:
    crops: np.ndarray
    future: asyncio.Future[np.ndarray]


class MicroBatcher:
    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], max_batch: int, max_wait_s: float, label: str) -> None:
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.label = label
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"embed-{label}")

    def _ensure_started(self) -> asyncio.Queue[_Job]:
        if self._queue is None or self._task is None or self._task.done():
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._run(self._queue))
        return self._queue

    async def submit(self, crops: np.ndarray) -> np.ndarray:
        """Embeddings for `crops` (N x r x r x 3), computed in shared batches."""
        if len(crops) == 0:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self.fn, crops)
        queue = self._ensure_started()
        parts = []
        for start in range(0, len(crops), self.max_batch):
            future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
            queue.put_nowait(_Job(crops[start:start + self.max_batch], future))
            parts.append(future)
        return np.concatenate(await asyncio.gather(*parts))

    async def _run(self, queue: asyncio.Queue[_Job]) -> None:
        loop = asyncio.get_running_loop()
        carry: _Job | None = None
        while True:
            jobs = [carry if carry is not None else await queue.get()]
            carry = None
            size = len(jobs[0].crops)
            deadline = time.monotonic() + self.max_wait_s
            while size < self.max_batch:
                if queue.empty():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        job = await asyncio.wait_for(queue.get(), remaining)
                    except TimeoutError:
                        break
                else:
                    job = queue.get_nowait()
                if size + len(job.crops) > self.max_batch:
                    carry = job  # goes first into the next batch
                    break
                jobs.append(job)
                size += len(job.crops)
            batch = np.concatenate([j.crops for j in jobs])
            metrics.BATCH_SIZE.labels(self.label).observe(len(batch))
            try:
                result = await loop.run_in_executor(self._executor, self._embed, batch)
            except Exception as exc:
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            offset = 0
            for job in jobs:
                rows = result[offset:offset + len(job.crops)]
                offset += len(job.crops)
                if not job.future.done():
                    job.future.set_result(rows)

    def _embed(self, batch: np.ndarray) -> np.ndarray:
        """The model call, timed in the executor's thread as the `embed` stage."""
        with metrics.stage("embed"):
            return self.fn(batch)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
