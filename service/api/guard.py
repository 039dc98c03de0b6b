"""The request guard: a pure ASGI middleware in front of routing and of any body byte.

For each HTTP request, in this order, before the body is read:
1. a /v1 call without a known API key gets 401 `unauthorized` (what the key may touch is the routes' business);
2. a Content-Length beyond the largest body cap gets 413 `request_too_large`;
3. beyond `max_inflight_requests` /v1 calls in progress in this worker, 503 `overloaded` with Retry-After.
Then the body is counted while the app reads it, Content-Length or chunked: the read that passes the cap raises
413 `request_too_large` at once (and the first read, when the Content-Length is already beyond it). The cap is the
route's, known once the router has chosen it: `Settings.max_import_bytes` for a gallery import,
`Settings.max_archive_bytes` for a bulk enrolment job,
`Settings.max_request_bytes` for the other routes that take file uploads, `Settings.max_json_body_bytes` for every
other request. An answer that starts before the body is all in asks the
server to close the connection (`Connection: close`), so the rest is never read.

It also records the request metrics (`anyface_http_requests_total`, `anyface_http_request_duration_seconds`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import params
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.api.auth import KeyRing, presented_key
from service.api.errors import error_response, service_error_response
from service.errors import BackendUnavailable, Unauthorized
from service.settings import Settings


class BodyTooLarge(HTTPException):
    """Raised from `receive` when the body passes its cap: FastAPI re-raises an HTTPException from body parsing,
    and the error handlers turn it into 413 `request_too_large`."""

    def __init__(self, cap: int) -> None:
        super().__init__(413, f"request body exceeds {cap} bytes")


def takes_files(route: object) -> bool:
    """Whether a route's body is a multipart form with file uploads."""
    if not isinstance(route, APIRoute):
        return False
    return any(isinstance(field.field_info, params.File) for field in route.dependant.body_params)


IMPORT_ROUTE = "/v1/galleries/{gallery}/import"
JOBS_ROUTE = "/v1/galleries/{gallery}/jobs"


def is_api(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/")


class Exchange:
    """One request as the app sees it: its body counted against its route's cap, its answer's status noted."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, cap_of: Callable[[Scope], int]) -> None:
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        self.declared = int(length) if length is not None and length.isdigit() else None
        self.body_done = not self.declared and "transfer-encoding" not in headers
        self.scope = scope
        self.cap_of = cap_of
        self.cap = 0  # set at the first read, when the router has chosen the route
        self.received = 0
        self.refused = False
        self.status = 0
        self._receive = receive
        self._send = send

    async def receive(self) -> Message:
        if not self.cap:
            self.cap = self.cap_of(self.scope)
            self.refused = self.declared is not None and self.declared > self.cap
        if self.refused:
            raise BodyTooLarge(self.cap)
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if not message.get("more_body", False):
                self.body_done = True
            if self.received > self.cap:
                self.refused = True
                raise BodyTooLarge(self.cap)
        elif message["type"] == "http.disconnect":
            self.body_done = True
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            if not self.body_done:  # answered before the body is all in: do not read the rest
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"connection" for name, _ in headers):
                    headers.append((b"connection", b"close"))
                message = {**message, "headers": headers}
        await self._send(message)


class RequestGuard:
    def __init__(self, app: ASGIApp, settings: Settings, keys: KeyRing) -> None:
        self.app = app
        self.settings = settings
        self.keys = keys
        self.inflight = 0  # requests in progress in this worker (one event loop: no lock needed)
        self.largest_body = max(settings.max_request_bytes, settings.max_json_body_bytes, settings.max_import_bytes,
                                settings.max_archive_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        exchange = Exchange(scope, receive, send, self.body_cap)
        try:
            refusal = self.refusal(scope, exchange)
            if refusal is not None:
                await refusal(scope, receive, exchange.send)
                return
            self.inflight += 1
            try:
                await self.app(scope, exchange.receive, exchange.send)
            except BackendUnavailable as exc:  # only if it got past the error handlers
                if exchange.status:
                    raise
                await service_error_response(exc)(scope, receive, exchange.send)
            except BodyTooLarge as exc:  # the same: a body read outside FastAPI's body parsing
                if exchange.status:
                    raise
                await error_response(413, "request_too_large", exc.detail)(scope, receive, exchange.send)
            finally:
                self.inflight -= 1
        finally:
            template = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            metrics.REQUESTS.labels(template, method, str(exchange.status or 500)).inc()
            metrics.REQUEST_LATENCY.labels(template, method).observe(time.perf_counter() - started)

    def refusal(self, scope: Scope, exchange: Exchange) -> Response | None:
        """The answer to a request refused on its head alone, or None."""
        api = is_api(scope["path"])
        if api:
            try:
                self.keys.lookup(presented_key(Headers(scope=scope)))
            except Unauthorized as exc:
                return service_error_response(exc)
        if exchange.declared is not None and exchange.declared > self.largest_body:
            return error_response(413, "request_too_large",
                                  f"request body of {exchange.declared} bytes exceeds {self.largest_body} bytes")
        if api and self.inflight >= self.settings.max_inflight_requests:
            # answer at once rather than queue without bound: the client retries or goes elsewhere
            response = error_response(503, "overloaded", f"more than {self.settings.max_inflight_requests} "
                                      "requests in progress; retry later")
            response.headers["Retry-After"] = "1"
            return response
        return None

    def body_cap(self, scope: Scope) -> int:
        """`max_import_bytes` for an import, `max_request_bytes` for another route that takes file uploads,
        `max_json_body_bytes` for anything else."""
        path = getattr(scope.get("route"), "path", None)
        if path == IMPORT_ROUTE:
            return self.settings.max_import_bytes
        if path == JOBS_ROUTE:
            return self.settings.max_archive_bytes
        if takes_files(scope.get("route")):
            return self.settings.max_request_bytes
        return self.settings.max_json_body_bytes
