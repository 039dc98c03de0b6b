"""The FastAPI application: start-up, the request guard (body size, load shedding) and request metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

from service import __version__, metrics
from service.api.context import build_context
from service.api.errors import error_response, install_error_handlers, service_error_response
from service.api.routes import detect, galleries, health, identify, verify
from service.errors import BackendUnavailable
from service.settings import Settings, get_settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.ctx = build_context(settings)
        if not app.state.ctx.keys.enabled:
            log.warning("no API keys configured: every /v1 call is allowed; bind to 127.0.0.1 only")
        try:
            yield
        finally:
            app.state.ctx.close()

    app = FastAPI(
        title="AnyFace",
        version=__version__,
        description="Face detection, verification (1:1) and identification (1:N) with multi-resolution embeddings.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    max_body = settings.max_request_bytes
    inflight = 0  # /v1 requests in progress in this worker (one event loop: no lock needed)

    @app.middleware("http")
    async def observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        nonlocal inflight
        started = time.perf_counter()
        length = request.headers.get("content-length")
        shed = request.url.path.startswith("/v1/") and inflight >= settings.max_inflight_requests
        if length and length.isdigit() and int(length) > max_body:
            response: Response = error_response(413, "request_too_large",
                                                f"request body of {length} bytes exceeds {max_body} bytes")
        elif shed:  # answer at once rather than queue without bound: the client retries or goes elsewhere
            response = error_response(503, "overloaded", f"more than {settings.max_inflight_requests} requests "
                                      "in progress; retry later")
            response.headers["Retry-After"] = "1"
        else:
            inflight += 1
            try:
                response = await call_next(request)
            except BackendUnavailable as exc:
                response = service_error_response(exc)
            finally:
                inflight -= 1
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        metrics.REQUESTS.labels(template, request.method, str(response.status_code)).inc()
        metrics.REQUEST_LATENCY.labels(template, request.method).observe(time.perf_counter() - started)
        return response

    for module in (health, detect, verify, identify, galleries):
        app.include_router(module.router)
    return app
