"""The CPU thread budget of a worker: its share of the cores, a cgroup quota, and what the settings derive."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import pytest

from service.sessions import threads
from service.settings import Settings


@pytest.mark.parametrize(("workers", "cores", "share"), [(1, 2, 2), (2, 2, 1), (4, 2, 1), (3, 8, 2), (2, 16, 8)])
def test_worker_share_splits_the_cores_between_workers(workers: int, cores: int, share: int) -> None:
    assert threads.worker_share(workers, cores) == share


def test_available_cores_follow_affinity_and_a_cgroup_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    affinity = len(os.sched_getaffinity(0))
    monkeypatch.setattr(threads, "CGROUP_CPU_MAX", tmp_path / "absent")
    assert threads.available_cores() == affinity
    quota = tmp_path / "cpu.max"
    quota.write_text("max 100000\n")
    monkeypatch.setattr(threads, "CGROUP_CPU_MAX", quota)
    assert threads.available_cores() == affinity
    quota.write_text("50000 100000\n")  # half a core: still one
    assert threads.available_cores() == 1


def test_settings_derive_session_threads_from_the_worker_share(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    assert Settings(workers=2).worker_threads == 2
    assert Settings(workers=2).session_threads == 2
    assert Settings(workers=8).session_threads == 1
    assert Settings(workers=2, cpu_threads=3).session_threads == 3
    assert Settings(workers=2, intra_op_threads=4).session_threads == 4
    assert Settings(workers=2, intra_op_threads=4).worker_threads == 2
    assert Settings(workers=2).face_path_threads == 3
    assert Settings(workers=8).face_path_threads == 2


def test_limit_native_threads_sizes_opencv() -> None:
    before = cv2.getNumThreads()
    try:
        threads.limit_native_threads(1)
        assert cv2.getNumThreads() == 1
    finally:
        cv2.setNumThreads(before)
