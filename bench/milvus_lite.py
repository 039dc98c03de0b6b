"""A milvus-lite server process for the benchmarks: the Milvus API over gRPC on a free local port, its data in a
directory, started and stopped around one measurement (the tests have their own, tests/milvus_server.py)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class LiteServer:
    uri: str
    pid: int

    def rss_mb(self) -> float:
        """The server process's resident memory, MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def milvus_lite_server(data_dir: Path) -> Iterator[LiteServer]:
    """`python -m milvus_lite server`, answering once it is up; terminated on exit."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data_dir), "--host",
                             "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = LiteServer(f"http://127.0.0.1:{port}", proc.pid)
    try:
        wait_until_up(server.uri)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until_up(uri: str, timeout_s: float = START_TIMEOUT_S) -> None:
    """Until the server lists its collections (creating none, so its memory stays that of an empty server)."""
    from pymilvus import MilvusClient

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            MilvusClient(uri=uri, timeout=5).list_collections()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
