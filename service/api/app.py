"""The FastAPI application: start-up, error rendering and request metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import __version__, metrics
from service.api.context import build_context
from service.api.routes import detect, galleries, health, identify, verify
from service.errors import BackendUnavailable, ServiceError
from service.gallery.store import StoreUnavailable
from service.settings import Settings, get_settings

log = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str) -> JSONResponse:
    metrics.ERRORS.labels(code).inc()
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _validation_code(exc: RequestValidationError) -> tuple[str, str]:
    errors = exc.errors()
    parts = []
    code = "invalid_parameter"
    for err in errors:
        where = ".".join(str(p) for p in err.get("loc", ())[1:]) or "request"
        parts.append(f"{where}: {err.get('msg')}")
        if err.get("type") == "missing":
            code = "missing_field"
    return code, "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(StoreUnavailable)
    async def _store_down(_: Request, exc: StoreUnavailable) -> JSONResponse:
        return error_response(503, "store_unavailable", f"the gallery store is unavailable: {exc}")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        code, message = _validation_code(exc)
        return error_response(422, code, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(exc.status_code,
                                                                                          "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error; see the server log")


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
    max_body = settings.max_image_bytes * settings.max_images_per_request + 1024 * 1024
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
                response = error_response(exc.status, exc.code, exc.message)
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
