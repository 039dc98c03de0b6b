"""A real Milvus for the tests: a milvus-lite server process (the Milvus API over gRPC, file-backed), started and
stopped like the other servers of the test suite."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.gallery.store import VectorEngineUnavailable
from service.settings import MilvusSettings
from tests.conftest import ManagedProcess, free_port

pytest.importorskip("pymilvus", reason="the milvus extra (pymilvus, milvus-lite) is installed by make test")
from service.gallery.milvus import MilvusEngine

DIM = 128


class MilvusLite(ManagedProcess):
    """`python -m milvus_lite server` on a free port, its data in `data_dir`."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir, self.port = data_dir, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self) -> MilvusLite:
        self.proc = subprocess.Popen([sys.executable, "-m", "milvus_lite", "server", "--data-dir",
                                      str(self.data_dir), "--host", "127.0.0.1", "--port", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        engine = MilvusEngine(MilvusSettings(milvus_uri=self.uri, milvus_collection="probe"), DIM)
        while True:
            try:
                engine.ping()
                return self
            except VectorEngineUnavailable:
                assert time.monotonic() < deadline, "milvus-lite did not start"
                time.sleep(0.2)
