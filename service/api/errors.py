"""How errors become HTTP answers: each domain error's status code, in one place, and the JSON error body
`{"error": {"code", "message"}}` for every refusal, including FastAPI's own (validation, 404, 405)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from service import errors, metrics
from service.gallery.store import StoreFull, StoreUnavailable, VectorEngineUnavailable

log = logging.getLogger(__name__)

STATUS: dict[type[errors.ServiceError], int] = {
    errors.InvalidImage: 422,
    errors.EmptyImage: 422,
    errors.ImageTooLarge: 413,
    errors.ImageTooManyPixels: 413,
    errors.ImageTooSmall: 422,
    errors.NoFace: 422,
    errors.MultipleFaces: 422,
    errors.LowQuality: 422,
    errors.GalleryNotFound: 404,
    errors.EmbedderMismatch: 409,
    errors.SubjectNotFound: 404,
    errors.FaceNotFound: 404,
    errors.ThumbnailNotFound: 404,
    errors.JobNotFound: 404,
    errors.InvalidParameter: 422,
    errors.InvalidMetadata: 422,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.BackendUnavailable: 503,
    errors.UnsupportedImage: 415,
    errors.DecodeOverloaded: 503,
}
HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


def status_of(exc: errors.ServiceError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def error_response(status: int, code: str, message: str) -> JSONResponse:
    metrics.ERRORS.labels(code).inc()
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def service_error_response(exc: errors.ServiceError) -> JSONResponse:
    return error_response(status_of(exc), exc.code, exc.message)


def _validation_code(exc: RequestValidationError) -> tuple[str, str]:
    parts = []
    code = "invalid_parameter"
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ())[1:]) or "request"
        parts.append(f"{where}: {err.get('msg')}")
        if err.get("type") == "missing":
            code = "missing_field"
    return code, "; ".join(parts)


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> str:
    """Every method some route serves at the request's path (Starlette's 405 names only the first route's)."""
    allowed = []
    for method in METHODS:
        probe = {"type": "http", "path": request.scope["path"], "root_path": request.scope.get("root_path", ""),
                 "method": method, "headers": []}
        if any(route.matches(probe)[0] is Match.FULL for route in request.app.routes):
            allowed.append(method)
    return ", ".join(allowed)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.ServiceError)
    async def _service_error(_: Request, exc: errors.ServiceError) -> JSONResponse:
        return service_error_response(exc)

    @app.exception_handler(StoreUnavailable)
    async def _store_down(_: Request, exc: StoreUnavailable) -> JSONResponse:
        return error_response(503, "store_unavailable", f"the gallery store is unavailable: {exc}")

    @app.exception_handler(VectorEngineUnavailable)  # a StoreUnavailable too: the galleries' other half
    async def _engine_down(_: Request, exc: VectorEngineUnavailable) -> JSONResponse:
        return error_response(503, "vector_engine_unavailable", f"the vector engine is unavailable: {exc}")

    @app.exception_handler(StoreFull)  # a StoreUnavailable, told apart so that operators see what to fix
    async def _store_full(_: Request, exc: StoreFull) -> JSONResponse:
        return error_response(503, "storage_full", f"the gallery store has no room for this write: {exc}")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        code, message = _validation_code(exc)
        return error_response(422, code, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = error_response(exc.status_code, HTTP_CODES.get(exc.status_code, "http_error"), str(exc.detail))
        response.headers.update(exc.headers or {})  # e.g. Allow on 405
        if exc.status_code == 405:
            response.headers["Allow"] = allowed_methods(request) or response.headers.get("Allow", "")
        return response

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error; see the server log")
