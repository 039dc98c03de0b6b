"""MicroBatcher: concurrent submits share model calls, every caller gets its own rows back, errors reach every
waiting caller. No models: the batched function is a recording fake that runs in the batcher's worker thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
import pytest

from service.embedding.batcher import MicroBatcher

# Bound on how long any await in these tests may take: it only turns a hang into a failure, it is not a speed check.
HANG = 10.0


class Recorder:
    """The batched function: records each call's batch and returns `crops * 10 + 1` (row i belongs to crop i)."""

    def __init__(self, fail_on: float | None = None) -> None:
        self.batches: list[np.ndarray] = []
        self.threads: set[str] = set()
        self.fail_on = fail_on
        self._lock = threading.Lock()

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        with self._lock:
            self.batches.append(crops.copy())
            self.threads.add(threading.current_thread().name)
        if self.fail_on is not None and np.any(crops == self.fail_on):
            raise RuntimeError(f"model failed on {self.fail_on}")
        return crops * 10.0 + 1.0

    @property
    def sizes(self) -> list[int]:
        return [len(b) for b in self.batches]


def crops(*ids: float) -> np.ndarray:
    """One 'crop' per id (N x 2), so a caller's rows can be traced through the batch."""
    return np.array([[i, -i] for i in ids], dtype=np.float64).reshape(len(ids), 2)


def expected(c: np.ndarray) -> np.ndarray:
    return c * 10.0 + 1.0


def run(
    fn: Callable[[np.ndarray], np.ndarray], max_batch: int, max_wait_s: float,
    body: Callable[[MicroBatcher], Coroutine[Any, Any, Any]],
) -> Any:
    """Run `body(batcher)` in a fresh event loop and always close the batcher."""
    batcher = MicroBatcher(fn, max_batch=max_batch, max_wait_s=max_wait_s, label="test")

    async def main() -> Any:
        return await asyncio.wait_for(body(batcher), HANG)

    try:
        return asyncio.run(main())
    finally:
        batcher.close()


def test_concurrent_submits_share_one_call_and_get_their_own_rows() -> None:
    fn = Recorder()
    inputs = [crops(1, 2, 3), crops(4, 5), crops(6, 7, 8)]  # 8 faces = max_batch: no need to wait for more

    async def body(b: MicroBatcher) -> list[np.ndarray]:
        return list(await asyncio.gather(*(b.submit(c) for c in inputs)))

    results = run(fn, 8, 5.0, body)
    assert fn.sizes == [8]
    np.testing.assert_array_equal(fn.batches[0], np.concatenate(inputs))
    for c, rows in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(rows, expected(c))
    assert all(name.startswith("embed-test") for name in fn.threads)  # the model runs off the event loop


def test_batch_is_capped_at_max_batch_and_the_rest_goes_first_into_the_next() -> None:
    fn = Recorder()
    inputs = [crops(1, 2, 3), crops(4, 5, 6), crops(7, 8, 9)]

    async def body(b: MicroBatcher) -> list[np.ndarray]:
        return list(await asyncio.gather(*(b.submit(c) for c in inputs)))

    results = run(fn, 8, 0.01, body)
    assert fn.sizes == [6, 3]  # the third request does not fit into 8 with the first two: it is not split
    np.testing.assert_array_equal(fn.batches[1], inputs[2])
    assert max(fn.sizes) <= 8
    for c, rows in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(rows, expected(c))


def test_many_concurrent_callers_each_get_their_rows_in_order() -> None:
    fn = Recorder()
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 5, size=40)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    inputs = [crops(*range(int(s), int(s + n))) for s, n in zip(starts, sizes, strict=True)]

    async def body(b: MicroBatcher) -> list[np.ndarray]:
        return list(await asyncio.gather(*(b.submit(c) for c in inputs)))

    results = run(fn, 7, 0.005, body)
    assert all(size <= 7 for size in fn.sizes)
    assert sum(fn.sizes) == int(sizes.sum())  # every face embedded exactly once
    assert len(fn.sizes) < len(inputs)  # and calls were shared
    for c, rows in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(rows, expected(c))


def test_submit_larger_than_max_batch_is_split_and_reassembled_in_order() -> None:
    fn = Recorder()
    big = crops(*range(11))

    async def body(b: MicroBatcher) -> np.ndarray:
        return await b.submit(big)

    rows = run(fn, 4, 0.01, body)
    assert fn.sizes == [4, 4, 3]
    np.testing.assert_array_equal(np.concatenate(fn.batches), big)
    np.testing.assert_array_equal(rows, expected(big))


def test_lone_request_completes_after_max_wait() -> None:
    """A request with nobody to share with is not held forever: max_wait ends the collection."""
    fn = Recorder()

    async def body(b: MicroBatcher) -> np.ndarray:
        return await b.submit(crops(42))

    rows = run(fn, 32, 0.05, body)
    assert fn.sizes == [1]
    np.testing.assert_array_equal(rows, expected(crops(42)))


def test_zero_max_wait_runs_each_request_without_collecting() -> None:
    fn = Recorder()

    async def body(b: MicroBatcher) -> list[np.ndarray]:
        first = await b.submit(crops(1))
        second = await b.submit(crops(2, 3))
        return [first, second]

    first, second = run(fn, 32, 0.0, body)
    assert fn.sizes == [1, 2]
    np.testing.assert_array_equal(first, expected(crops(1)))
    np.testing.assert_array_equal(second, expected(crops(2, 3)))


def test_full_batch_does_not_wait_for_max_wait() -> None:
    """max_wait is far longer than the hang bound: the call only finishes because a full batch runs at once."""
    fn = Recorder()

    async def body(b: MicroBatcher) -> np.ndarray:
        return await b.submit(crops(1, 2, 3, 4))

    batcher = MicroBatcher(fn, max_batch=4, max_wait_s=3600.0, label="test")

    async def main() -> np.ndarray:
        return await asyncio.wait_for(body(batcher), HANG)

    try:
        rows = asyncio.run(main())
    finally:
        batcher.close()
    assert fn.sizes == [4]
    np.testing.assert_array_equal(rows, expected(crops(1, 2, 3, 4)))


def test_a_later_request_joins_a_batch_still_collecting() -> None:
    fn = Recorder()

    async def body(b: MicroBatcher) -> list[np.ndarray]:
        first = asyncio.ensure_future(b.submit(crops(1)))
        await asyncio.sleep(0.01)  # the worker has taken the first request and is waiting for more
        second = asyncio.ensure_future(b.submit(crops(2, 3)))  # fills the batch of 3
        return list(await asyncio.gather(first, second))

    first, second = run(fn, 3, 3600.0, body)
    assert fn.sizes == [3]
    np.testing.assert_array_equal(first, expected(crops(1)))
    np.testing.assert_array_equal(second, expected(crops(2, 3)))


def test_exception_reaches_every_waiting_caller_and_the_batcher_keeps_working() -> None:
    fn = Recorder(fail_on=666)

    async def body(b: MicroBatcher) -> tuple[list[Any], np.ndarray]:
        failed = await asyncio.gather(b.submit(crops(1, 2)), b.submit(crops(666)), b.submit(crops(3)),
                                      return_exceptions=True)
        after = await b.submit(crops(4, 5))
        return list(failed), after

    failed, after = run(fn, 8, 0.01, body)
    assert fn.sizes[0] == 4  # the three requests shared the failing call
    assert len(failed) == 3
    for outcome in failed:
        assert isinstance(outcome, RuntimeError) and "model failed on 666" in str(outcome)
    np.testing.assert_array_equal(after, expected(crops(4, 5)))


def test_exception_in_one_part_of_a_split_submit_fails_that_submit_only() -> None:
    fn = Recorder(fail_on=666)

    async def body(b: MicroBatcher) -> list[Any]:
        return list(await asyncio.gather(b.submit(crops(1, 2, 666)), return_exceptions=True))

    [outcome] = run(fn, 2, 0.0, body)
    assert isinstance(outcome, RuntimeError)
    assert sorted(fn.sizes) == [1, 2]


def test_empty_input_returns_the_functions_empty_result_without_batching() -> None:
    seen: list[tuple[int, ...]] = []

    def fn(c: np.ndarray) -> np.ndarray:
        seen.append(c.shape)
        return np.zeros((len(c), 5), dtype=np.float32)

    async def body(b: MicroBatcher) -> np.ndarray:
        return await b.submit(np.zeros((0, 3, 3, 3), dtype=np.uint8))

    rows = run(fn, 8, 0.01, body)
    assert rows.shape == (0, 5)
    assert seen == [(0, 3, 3, 3)]


def test_batcher_restarts_in_a_new_event_loop() -> None:
    """The service may build a batcher before its loop runs; each loop gets a working worker."""
    fn = Recorder()
    batcher = MicroBatcher(fn, max_batch=4, max_wait_s=0.0, label="test")
    try:
        for i in range(2):
            rows = asyncio.run(asyncio.wait_for(batcher.submit(crops(i)), HANG))
            np.testing.assert_array_equal(rows, expected(crops(i)))
    finally:
        batcher.close()
    assert fn.sizes == [1, 1]


def test_close_stops_the_worker() -> None:
    fn = Recorder()
    batcher = MicroBatcher(fn, max_batch=4, max_wait_s=0.0, label="test")

    async def body() -> None:
        await batcher.submit(crops(1))
        task = batcher._task
        assert task is not None and not task.done()
        batcher.close()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(body(), HANG))
