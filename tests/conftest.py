"""Shared fixtures: real models (through the fetch step), real LFW photos, real service processes.

Tests that need the pretrained models read `ANYFACE_MODEL_MIRROR`; tests that need LFW read `ANYFACE_DATA_DIR`.
Each skips with the reason when its variable is unset. CI sets both.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
MODEL_DIR = REPO / "models"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The repo's model directory, filled by the real fetch step from `ANYFACE_MODEL_MIRROR`."""
    mirror = os.environ.get("ANYFACE_MODEL_MIRROR")
    if not mirror:
        pytest.skip("ANYFACE_MODEL_MIRROR is not set: point it at a directory with the pinned model files")
    from service.models.fetch import fetch_all

    fetch_all(MODEL_DIR, Path(mirror))
    return MODEL_DIR


@pytest.fixture(scope="session")
def lfw_dir() -> Path:
    data = os.environ.get("ANYFACE_DATA_DIR")
    if not data or not (Path(data) / "lfw" / "images_deepfunneled").is_dir():
        pytest.skip("ANYFACE_DATA_DIR is not set or holds no lfw/images_deepfunneled: LFW photos are needed")
    return Path(data) / "lfw"


def lfw_photo(lfw: Path, name: str, number: int = 1) -> Path:
    return lfw / "images_deepfunneled" / name / f"{name}_{number:04d}.jpg"


def people_with_photos(lfw: Path, minimum: int, limit: int, split: str = "peopleDevTest.txt") -> list[str]:
    """People of a View 1 split with at least `minimum` photos, in file order."""
    people = []
    for line in (lfw / split).read_text().splitlines()[1:]:
        name, count = line.split("\t")
        if int(count) >= minimum:
            people.append(name)
        if len(people) == limit:
            break
    return people


class ManagedProcess:
    """A server subprocess the tests start and must always stop."""

    proc: subprocess.Popen[bytes] | None = None

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, like a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 15 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


class ServiceProcess(ManagedProcess):
    """`python -m service` as a real subprocess on a free loopback port."""

    def __init__(self, env: dict[str, str], port: int | None = None) -> None:
        self.port = port or free_port()
        self.env = {**os.environ, "ANYFACE_PORT": str(self.port), "ANYFACE_HOST": "127.0.0.1",
                    "ANYFACE_MODEL_DIR": str(MODEL_DIR), **env}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.mkstemp(prefix="anyface-service-", suffix=".log")[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, wait_ready: bool = True, timeout: float = 60.0) -> ServiceProcess:
        with self.log.open("ab") as log:  # a file, not a pipe: a chatty server never blocks on it
            self.proc = subprocess.Popen([sys.executable, "-m", "service"], cwd=REPO, env=self.env,
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        path = "/readyz" if wait_ready else "/healthz"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + path, timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"service on {self.url} not up after {timeout} s")

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, **{"timeout": 30.0, **kwargs})  # type: ignore[arg-type]


@pytest.fixture
def service_factory() -> Iterator[type[ServiceProcess]]:
    started: list[ServiceProcess] = []

    class Tracked(ServiceProcess):
        def start(self, wait_ready: bool = True, timeout: float = 60.0) -> ServiceProcess:
            started.append(self)
            return super().start(wait_ready, timeout)

    yield Tracked
    for proc in started:
        proc.stop()
