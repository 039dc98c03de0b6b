"""The service's uvicorn workers seen from outside: which worker owns a client connection (read from the process
table), keep-alive HTTP connections pinned to a worker, readiness of every worker, and the gallery's size."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import time

import psutil  # a dependency of locust (the `load` extra)
from urllib3 import encode_multipart_formdata

from deploy.locust.processes import LOOPBACK

log = logging.getLogger("anyface.run_load")


class Client:
    """One keep-alive HTTP/1.1 connection to the service, and the pid of the worker that accepted it."""

    def __init__(self, port: int, api_key: str, workers: WorkerMap, timeout: float = 30.0) -> None:
        self.port, self.api_key, self.workers, self.timeout = port, api_key, workers, timeout
        self.conn: http.client.HTTPConnection | None = None
        self.pid: int | None = None

    def connect(self) -> int | None:
        self.close()
        self.conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=self.timeout)
        self.conn.connect()
        self.request("GET", "/healthz")  # the connection belongs to a worker once that worker accepted it
        self.pid = self.workers.owner(self.conn.sock.getsockname()[1])
        return self.pid

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn, self.pid = None, None

    def request(self, method: str, path: str, fields: list | None = None) -> tuple[int, bytes]:
        assert self.conn is not None
        headers = {"X-API-Key": self.api_key}
        body = None
        if fields is not None:
            body, ctype = encode_multipart_formdata(fields)
            headers["Content-Type"] = ctype
        self.conn.request(method, path, body=body, headers=headers)
        resp = self.conn.getresponse()
        return resp.status, resp.read()


class WorkerMap:
    """The uvicorn worker processes of the service, and which of them owns a client connection."""

    def __init__(self, service_pid: int, port: int) -> None:
        self.service_pid, self.port = service_pid, port

    def pids(self) -> list[int]:
        try:
            children = psutil.Process(self.service_pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        return sorted(p.pid for p in children)

    def owner(self, client_port: int) -> int | None:
        for pid in self.pids():
            with contextlib.suppress(psutil.Error):
                for c in psutil.Process(pid).net_connections(kind="tcp"):
                    if c.laddr and c.laddr.port == self.port and c.raddr and c.raddr.port == client_port:
                        return pid
        return None

    def connections(self) -> dict[int, int]:
        """Established client connections per worker pid."""
        counts = {}
        for pid in self.pids():
            with contextlib.suppress(psutil.Error):
                n = sum(1 for c in psutil.Process(pid).net_connections(kind="tcp")
                        if c.laddr and c.laddr.port == self.port and c.raddr and c.status == psutil.CONN_ESTABLISHED)
                if n:
                    counts[pid] = n
        return counts


def pinned_clients(port: int, api_key: str, workers: WorkerMap, tries: int = 40) -> dict[int, Client]:
    """Open connections until there is one to each of (at most two) workers."""
    found: dict[int, Client] = {}
    for _ in range(tries):
        c = Client(port, api_key, workers)
        try:
            pid = c.connect()
        except (OSError, http.client.HTTPException):
            c.close()
            time.sleep(0.1)
            continue
        if pid is None or pid in found:
            c.close()
        else:
            found[pid] = c
        if len(found) >= 2:
            break
    return found


def wait_ready(port: int, api_key: str, workers: WorkerMap, n_workers: int, timeout: float) -> None:
    """Until /readyz answers 200 on a connection to each worker."""
    deadline = time.monotonic() + timeout
    ready: set[int] = set()
    while time.monotonic() < deadline:
        c = Client(port, api_key, workers, timeout=5)
        with contextlib.suppress(OSError, http.client.HTTPException):
            pid = c.connect()
            status, _ = c.request("GET", "/readyz")
            if status == 200 and pid is not None:
                ready.add(pid)
        c.close()
        if len(ready) >= n_workers:
            log.info("service ready: workers %s", sorted(ready))
            return
        time.sleep(0.3)
    raise TimeoutError(f"service not ready within {timeout:.0f}s (ready workers: {sorted(ready)})")


def gallery_size(port: int, api_key: str, workers: WorkerMap, gallery: str) -> int | None:
    c = Client(port, api_key, workers, timeout=10)
    try:
        c.connect()
        status, body = c.request("GET", f"/v1/galleries/{gallery}")
        return json.loads(body)["subjects"] if status == 200 else None
    except (OSError, http.client.HTTPException, ValueError, KeyError):
        return None
    finally:
        c.close()
