"""How many CPU threads one worker's native libraries may use: ONNX Runtime's intra-op pools and OpenCV's
parallel loops (YuNet). FAISS's OpenMP threads have their own setting (`ANYFACE_FAISS_THREADS`, default 1).

Each library starts a pool as large as the machine by default. Two uvicorn workers on two cores then run four
intra-op threads per model call while the other worker runs its own, and a pool of two costs more CPU than one
thread for the same small model: under load the cores run thread hand-offs instead of models (docs/performance.md
measures it). A worker's share of the cores is what it can use without taking it from another worker.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cores() -> int:
    """The cores this process may run on: its CPU affinity, lowered by a cgroup v2 CPU quota (a container's
    `--cpus`) when there is one."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def worker_share(workers: int, cores: int | None = None) -> int:
    """The cores one of `workers` worker processes may use: an equal share, at least one."""
    return max(1, (cores or available_cores()) // max(1, workers))


def limit_native_threads(threads: int) -> None:
    """Size OpenCV's thread pool for this process (YuNet runs through OpenCV's DNN module)."""
    import cv2

    cv2.setNumThreads(threads)
