"""A byte budget for the image memory of the decodes in flight in one process.

Each decode estimates from the image header how many bytes it will hold at its peak (`decode.estimate_bytes`) and
reserves them before it decodes. Reservations are granted first come, first served while they fit; a decode that
finds the budget spent waits up to `DecodeLimits.decode_wait_s` and is then refused with `DecodeOverloaded` (503
`overloaded`: retry later), so a burst of large images queues or is shed instead of exhausting the machine. One
reservation larger than the whole budget is cut to the budget: it runs alone rather than never.

The decoded image keeps the part of its reservation that it occupies until it is freed (`hold_until_freed`),
so the images between decoding and the end of detection and alignment are counted too.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from service.errors import DecodeOverloaded

MIB = 1024 * 1024


class MemoryBudget:
    """Thread-safe: `capacity` bytes shared by every reservation, granted in arrival order."""

    def __init__(self, capacity: int, wait_s: float) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.wait_s = wait_s
        self._in_use = 0
        self._peak = 0
        self._queue: deque[object] = deque()
        self._cond = threading.Condition()

    @property
    def in_use(self) -> int:
        with self._cond:
            return self._in_use

    @property
    def peak(self) -> int:
        """The most bytes reserved at once since the budget was made."""
        with self._cond:
            return self._peak

    def acquire(self, nbytes: int, field: str) -> int:
        """Reserve `nbytes` (cut to the capacity); wait in line up to `wait_s`, then raise `DecodeOverloaded`.
        Returns the bytes reserved, to give back with `release`."""
        nbytes = max(0, min(int(nbytes), self.capacity))
        ticket = object()
        deadline = time.monotonic() + self.wait_s
        with self._cond:
            self._queue.append(ticket)
            try:
                while self._queue[0] is not ticket or self._in_use + nbytes > self.capacity:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise DecodeOverloaded(
                            f"{field}: decoding needs about {nbytes / MIB:.0f} MiB of image memory and the "
                            f"{self.capacity / MIB:.0f} MiB decode budget stayed in use for {self.wait_s:g} s; "
                            "retry later")
                    self._cond.wait(left)
                self._in_use += nbytes
                self._peak = max(self._peak, self._in_use)
            finally:
                self._queue.remove(ticket)
                self._cond.notify_all()  # the next in line may fit now (or its turn has come)
        return nbytes

    def release(self, nbytes: int) -> None:
        if nbytes <= 0:
            return
        with self._cond:
            self._in_use = max(0, self._in_use - nbytes)
            self._cond.notify_all()

    @contextmanager
    def reserve(self, nbytes: int, field: str) -> Iterator[Reservation]:
        """`acquire` for the duration of a block; what the block hands on with `hold_until_freed` stays."""
        reservation = Reservation(self, self.acquire(nbytes, field))
        try:
            yield reservation
        finally:
            reservation.release()


class Reservation:
    """Bytes acquired from a budget; `release` gives back what was not handed on to an object."""

    def __init__(self, budget: MemoryBudget, nbytes: int) -> None:
        self.budget = budget
        self.nbytes = nbytes

    def hold_until_freed(self, obj: object, nbytes: int) -> None:
        """Keep `nbytes` of this reservation until `obj` is garbage (e.g. the decoded array)."""
        nbytes = max(0, min(nbytes, self.nbytes))
        self.nbytes -= nbytes
        weakref.finalize(obj, self.budget.release, nbytes)

    def release(self) -> None:
        self.budget.release(self.nbytes)
        self.nbytes = 0


_BUDGETS: dict[tuple[int, float], MemoryBudget] = {}
_BUDGETS_LOCK = threading.Lock()


def budget_for(capacity: int, wait_s: float) -> MemoryBudget:
    """The one budget of this process for these settings: every decoder with the same limits shares it."""
    with _BUDGETS_LOCK:
        budget = _BUDGETS.get((capacity, wait_s))
        if budget is None:
            budget = _BUDGETS[(capacity, wait_s)] = MemoryBudget(capacity, wait_s)
        return budget
