"""The request guard (issue "Hardening", findings 1 and 2): the API key is checked before any body byte is read,
every body is capped while it streams (with or without Content-Length), and /metrics needs a key when keys are
configured.

The in-process tests drive the ASGI app with a `receive` that counts the body bytes the app takes (no models
needed: every refusal here happens before the core is reached). The socket tests run `python -m service` and
stream chunked uploads over a raw socket, counting the bytes the server accepted before it answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from service.api.app import create_app
from service.settings import ApiKey, DecodeLimits, Settings
from tests.conftest import ServiceProcess

ADMIN = "admin-key-1234"
TEAM_A = "team-a-key-123"
READER = "reader-key-123"
METRICS = "metrics-key-123"
MiB = 1024 * 1024
BOUNDARY = "guardboundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
PART_HEAD = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n'
             "Content-Type: image/jpeg\r\n\r\n").encode()


def keyed_settings(**kwargs: Any) -> Settings:
    keys = [ApiKey(key=ADMIN), ApiKey(key=TEAM_A, galleries=["team-a"]), ApiKey(key=READER, read_only=True)]
    return Settings(api_keys=keys, metrics_key=METRICS, **kwargs)


# --- the ASGI app in process, with a receive that counts ----------------------------------------------------


class Body:
    """An ASGI `receive` that hands out `total` body bytes (`prefix`, then filler) in `chunk`-byte messages, only
    when asked, and counts what the app took."""

    def __init__(self, total: int, prefix: bytes = b"", chunk: int = 64 * 1024, gate: asyncio.Event | None = None):
        self.total, self.prefix, self.chunk, self.gate = total, prefix, chunk, gate
        self.taken = 0
        self.filler = b"\0" * chunk

    async def __call__(self) -> dict[str, Any]:
        if self.gate is not None:
            await self.gate.wait()
        if self.taken >= self.total:
            return {"type": "http.disconnect"}
        if self.taken < len(self.prefix):
            data = self.prefix[self.taken: self.taken + self.chunk]
        else:
            data = self.filler[: min(self.chunk, self.total - self.taken)]
        self.taken += len(data)
        return {"type": "http.request", "body": data, "more_body": self.taken < self.total}


class Answer:
    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = {k.decode().lower(): v.decode() for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")

    def json(self) -> dict[str, Any]:
        return json.loads(self.body)

    def code(self) -> str:
        return str(self.json()["error"]["code"])


async def call(app: Any, method: str, path: str, body: Body, headers: dict[str, str]) -> Answer:
    """One request straight into the ASGI app, as uvicorn would make it (no lifespan: no core)."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }
    answer = Answer()
    with contextlib.suppress(Exception):  # Starlette re-raises after its 500: the answer is what counts
        await app(scope, body, answer)
    return answer


def chunked(content_type: str, **more: str) -> dict[str, str]:
    return {"content-type": content_type, "transfer-encoding": "chunked", **more}


def test_unauthenticated_chunked_upload_is_refused_before_any_body_byte() -> None:
    app = create_app(keyed_settings())
    for headers in (chunked(MULTIPART), chunked(MULTIPART, **{"x-api-key": "wrong-key-000"})):
        body = Body(64 * MiB, PART_HEAD)
        answer = asyncio.run(call(app, "POST", "/v1/detect", body, headers))
        assert (answer.status, answer.code()) == (401, "unauthorized"), answer.body
        assert body.taken == 0, f"{body.taken} body bytes read before the 401"
        assert answer.headers.get("connection") == "close"  # the server does not read the rest either


def test_missing_fields_without_a_key_get_401_not_422() -> None:
    client = TestClient(create_app(keyed_settings()), raise_server_exceptions=False)
    for path in ("/v1/identify", "/v1/verify", "/v1/detect", "/v1/galleries/g/subjects/s/faces"):
        response = client.post(path)
        assert (response.status_code, response.json()["error"]["code"]) == (401, "unauthorized"), path
    assert client.patch("/v1/galleries/g/subjects/s").status_code == 401
    assert client.get("/v1/galleries/bad%2Fname", headers={"Authorization": "Bearer nope-nope-nope"}).status_code == 401


def test_authenticated_chunked_upload_over_the_cap_gets_413_as_it_passes() -> None:
    settings = keyed_settings(decode=DecodeLimits(max_image_bytes=100_000), max_images_per_request=2)
    cap = settings.max_request_bytes
    app = create_app(settings)
    for key in ({"x-api-key": ADMIN}, {"authorization": f"Bearer {ADMIN}"}):
        body = Body(64 * MiB, PART_HEAD)
        answer = asyncio.run(call(app, "POST", "/v1/detect", body, chunked(MULTIPART, **key)))
        assert (answer.status, answer.code()) == (413, "request_too_large"), answer.body
        assert cap < body.taken <= cap + body.chunk, (body.taken, cap)
        assert answer.headers.get("connection") == "close"


def test_json_body_over_the_json_cap_gets_413_as_it_passes() -> None:
    settings = keyed_settings()
    cap = settings.max_json_body_bytes
    assert cap < settings.max_request_bytes
    app = create_app(settings)
    body = Body(16 * MiB, b'{"name": "', chunk=4096)
    answer = asyncio.run(call(app, "PATCH", "/v1/galleries/g/subjects/s", body,
                              chunked("application/json", **{"x-api-key": ADMIN})))
    assert (answer.status, answer.code()) == (413, "request_too_large"), answer.body
    assert cap < body.taken <= cap + body.chunk, (body.taken, cap)
    # an upload to a route that takes no files gets the small cap as well
    body = Body(16 * MiB, PART_HEAD, chunk=4096)
    answer = asyncio.run(call(app, "PATCH", "/v1/galleries/g/subjects/s", body,
                              chunked(MULTIPART, **{"x-api-key": ADMIN})))
    assert (answer.status, body.taken <= cap + body.chunk) == (413, True), (answer.body, body.taken)


def test_content_length_over_the_cap_is_refused_unread() -> None:
    settings = keyed_settings()
    app = create_app(settings)
    for path, method, content_type, cap in (
            ("/v1/identify", "POST", MULTIPART, settings.max_request_bytes),
            ("/v1/galleries/g/subjects/s", "PATCH", "application/json", settings.max_json_body_bytes)):
        body = Body(cap + 1)
        headers = {"content-type": content_type, "content-length": str(cap + 1), "x-api-key": ADMIN}
        answer = asyncio.run(call(app, method, path, body, headers))
        assert (answer.status, answer.code(), body.taken) == (413, "request_too_large", 0), path


def test_refusals_are_counted_in_the_request_metrics() -> None:
    labels = {"route": "unmatched", "method": "POST", "status": "401"}
    before = REGISTRY.get_sample_value("anyface_http_requests_total", labels) or 0.0
    errors = REGISTRY.get_sample_value("anyface_errors_total", {"code": "unauthorized"}) or 0.0
    TestClient(create_app(keyed_settings())).post("/v1/detect")
    assert REGISTRY.get_sample_value("anyface_http_requests_total", labels) == before + 1
    assert REGISTRY.get_sample_value("anyface_errors_total", {"code": "unauthorized"}) == errors + 1


def test_load_shedding_is_kept() -> None:
    """Beyond max_inflight_requests a /v1 request gets 503 `overloaded` with Retry-After; probes are not shed."""
    app = create_app(keyed_settings(max_inflight_requests=1))
    key = {"x-api-key": ADMIN}

    async def scenario() -> tuple[Answer, Answer, Answer]:
        gate = asyncio.Event()
        slow = asyncio.create_task(call(app, "POST", "/v1/detect", Body(1000, PART_HEAD, gate=gate),
                                        chunked(MULTIPART, **key)))
        await asyncio.sleep(0.2)  # the slow one is in progress, waiting for its body
        shed = await call(app, "GET", "/v1/galleries", Body(0), key)
        probe = await call(app, "GET", "/healthz", Body(0), {})
        gate.set()
        await slow
        return shed, probe, await call(app, "GET", "/healthz", Body(0), {})

    shed, probe, _ = asyncio.run(scenario())
    assert (shed.status, shed.code(), shed.headers.get("retry-after")) == (503, "overloaded", "1")
    assert probe.status == 200


# --- /metrics -------------------------------------------------------------------------------------------------


def test_metrics_need_a_key_that_sees_every_gallery() -> None:
    client = TestClient(create_app(keyed_settings()))
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"X-API-Key": "wrong-key-000"}).status_code == 401
    scoped = client.get("/metrics", headers={"X-API-Key": TEAM_A})  # must not learn other galleries' names
    assert (scoped.status_code, scoped.json()["error"]["code"]) == (403, "forbidden")
    for headers in ({"X-API-Key": ADMIN}, {"X-API-Key": READER}, {"Authorization": f"Bearer {METRICS}"},
                    {"X-API-Key": METRICS}):
        response = client.get("/metrics", headers=headers)
        assert response.status_code == 200, headers
        assert "anyface_http_requests_total" in response.text
    # the metrics key is for /metrics only
    assert client.get("/v1/galleries", headers={"Authorization": f"Bearer {METRICS}"}).status_code == 401
    assert client.get("/healthz").status_code == 200 and client.get("/openapi.json").status_code == 200


def test_metrics_are_open_without_keys() -> None:
    assert TestClient(create_app(Settings(api_keys=[]))).get("/metrics").status_code == 200


# --- a real server, raw sockets ---------------------------------------------------------------------------------

SNDBUF = 64 * 1024


def stream_chunked(port: int, head: bytes, prefix: bytes, total: int, chunk: int = 256 * 1024,
                   timeout: float = 120.0) -> tuple[int, bytes, bool]:
    """Send a chunked request of `total` body bytes as fast as the server takes them, reading its answer
    meanwhile; stop once a whole answer is in or the server closes. Returns (bytes the server accepted after the
    head, the raw answer, whether the server closed the connection)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
    sock.sendall(head)
    sock.setblocking(False)
    filler = b"\0" * chunk
    body_sent, accepted, pending = 0, 0, b""
    answer, closed, finished = bytearray(), False, False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not complete(answer):
            writing = not finished or bool(pending)
            readable, writable, _ = select.select([sock], [sock] if writing else [], [], 1.0)
            if readable:
                try:
                    data = sock.recv(1 << 16)
                except ConnectionResetError:
                    closed = True
                    break
                if not data:
                    closed = True
                    break
                answer += data
                continue
            if writable:
                if not pending:
                    if body_sent < total:
                        piece = prefix if body_sent == 0 and prefix else filler[: min(chunk, total - body_sent)]
                        body_sent += len(piece)
                        pending = b"%x\r\n" % len(piece) + piece + b"\r\n"
                    else:
                        pending, finished = b"0\r\n\r\n", True
                try:
                    sent = sock.send(pending)
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
                accepted += sent
                pending = pending[sent:]
        if not closed:  # the whole answer is in: does the server hang up rather than read the rest?
            sock.setblocking(True)
            sock.settimeout(5.0)
            try:
                while sock.recv(1 << 16):
                    pass
                closed = True
            except ConnectionResetError:
                closed = True
            except TimeoutError:
                pass
    finally:
        sock.close()
    return accepted, bytes(answer), closed


def complete(answer: bytearray) -> bool:
    head, sep, body = bytes(answer).partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def parse(answer: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(body)


def request_head(path: str, content_type: str, **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Type: {content_type}",
             "Transfer-Encoding: chunked", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def buffered_bound() -> int:
    """What the kernel may hold between client and server at most: the server's receive buffer (autotuned up to
    tcp_rmem's maximum), the client's send buffer (the kernel doubles SO_SNDBUF), and one chunk in flight."""
    try:
        rmem = int(Path("/proc/sys/net/ipv4/tcp_rmem").read_text().split()[2])
    except (OSError, ValueError, IndexError):
        rmem = 32 * MiB
    return rmem + 2 * SNDBUF + MiB


MAX_IMAGE_BYTES = 1_000_000
MAX_IMAGES = 4


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    store = tmp_path_factory.mktemp("guard") / "gallery.sqlite3"
    proc = ServiceProcess({"ANYFACE_API_KEYS": json.dumps([{"key": ADMIN}, {"key": TEAM_A, "galleries": ["a"]}]),
                           "ANYFACE_METRICS_KEY": METRICS, "ANYFACE_STORE": f"sqlite:///{store}",
                           "ANYFACE_MAX_IMAGE_BYTES": str(MAX_IMAGE_BYTES),
                           "ANYFACE_MAX_IMAGES_PER_REQUEST": str(MAX_IMAGES), "ANYFACE_INTRA_OP_THREADS": "1"})
    try:
        yield proc.start(timeout=180.0)
    finally:
        proc.stop()


def test_server_refuses_unauthenticated_400_mib_upload_after_a_small_part(server: ServiceProcess) -> None:
    total = 400 * MiB
    for key in ({}, {"X-API-Key": "wrong-key-000"}):
        accepted, answer, closed = stream_chunked(server.port, request_head("/v1/detect", MULTIPART, **key),
                                                  PART_HEAD, total)
        status, headers, body = parse(answer)
        print(f"401 after {accepted} bytes accepted of {total} (closed: {closed})")
        assert (status, body["error"]["code"]) == (401, "unauthorized")
        assert accepted < min(total // 4, buffered_bound()), accepted
        assert headers.get("connection") == "close" and closed


def test_server_refuses_authenticated_over_cap_upload_as_it_passes(server: ServiceProcess) -> None:
    cap = MAX_IMAGE_BYTES * MAX_IMAGES + MiB  # Settings.max_request_bytes
    total = 400 * MiB
    accepted, answer, closed = stream_chunked(server.port,
                                              request_head("/v1/detect", MULTIPART, **{"X-API-Key": ADMIN}),
                                              PART_HEAD, total)
    status, headers, body = parse(answer)
    print(f"413 after {accepted} bytes accepted of {total}, cap {cap} (closed: {closed})")
    assert (status, body["error"]["code"]) == (413, "request_too_large")
    assert accepted < min(total // 4, cap + buffered_bound()), accepted
    assert headers.get("connection") == "close" and closed


def test_server_answers_401_not_422_to_a_request_without_fields(server: ServiceProcess) -> None:
    with server.client() as client:
        for path in ("/v1/identify", "/v1/verify", "/v1/detect"):
            response = client.post(path)
            assert (response.status_code, response.json()["error"]["code"]) == (401, "unauthorized"), path
        assert client.post("/v1/identify", headers={"X-API-Key": ADMIN}).status_code == 422
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": f"Bearer {METRICS}"}).status_code == 200
