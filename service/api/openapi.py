"""The OpenAPI schema: every status the API answers with the JSON error body, the limits that are settings, and
the API keys.

Routes declare their error statuses with `responses=errors(...)`. The limits (`limit` <= page_size_max, `top_k`
<= max_top_k, `images` <= max_images_per_request) are settings, so they are written into the generated schema
from the app's settings here. A 405 (a method a path does not have, with `Allow`) belongs to no operation: it
is the reusable response `MethodNotAllowed`.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field

from service.api.auth import KeyRing
from service.settings import Settings


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable, e.g. `unauthorized`, `no_face`, `overloaded`")
    message: str = Field(description="for people")


class ErrorBody(BaseModel):
    """Every refusal: `{"error": {"code", "message"}}`."""

    error: ErrorDetail


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, bool] = Field(description="models, store, index caught up, ...")
    error: ErrorDetail | None = Field(None, description="when not ready: code `not_ready`")


def _error(description: str, **more: Any) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description, **more}


UNPROCESSABLE = ("`invalid_parameter`, `missing_field`, `invalid_metadata`, `invalid_image`, `empty_image`, "
                 "`image_too_small`, `no_face`, `multiple_faces`")
LOW_QUALITY_422 = _error(UNPROCESSABLE + ", `low_quality` (the face to enrol or search has a quality below "
                         "`min_quality`: the request's, else ANYFACE_MIN_QUALITY; the message gives both; nothing is "
                         "written)")
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait (with `overloaded`)", "schema": {"type": "integer"}}}

ERRORS: dict[int, dict[str, Any]] = {
    400: _error("malformed body: not a well-formed multipart form or JSON document (`http_error`)"),
    401: _error("`unauthorized`: API keys are configured and the request carries none or an unknown one (a /v1 "
                "call is refused before its body is read)"),
    403: _error("`forbidden`: the API key may not read or write this gallery (/metrics: the key is limited to some "
                "galleries)"),
    404: _error("`gallery_not_found`, `subject_not_found`, `face_not_found`, `thumbnail_not_found` (the face was "
                "enrolled without one)"),
    409: _error("`embedder_mismatch`: the gallery was filled by another embedder than the one this service runs "
                "(`GET /v1/galleries/{gallery}` says which); its embeddings are not comparable"),
    413: _error("`request_too_large`: the body passed its cap (multipart: every image at its limit; other bodies: "
                "ANYFACE_MAX_JSON_BODY_BYTES), refused as it streams; `image_too_large`, `image_too_many_pixels`"),
    415: _error("`unsupported_image`: a decodable image in a form the service cannot turn into RGB"),
    422: _error(UNPROCESSABLE),
    503: _error("`overloaded` (too many requests or decodes in progress; retry after Retry-After), "
                "`store_unavailable`, `storage_full`, `vector_engine_unavailable`, `backend_unavailable`",
                headers=RETRY_AFTER),
}


def errors(*statuses: int, low_quality: bool = False) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route that answers these error statuses (`low_quality`: its 422 includes
    `low_quality`, for the routes that take `min_quality`)."""
    return {status: LOW_QUALITY_422 if low_quality and status == 422 else ERRORS[status] for status in statuses}


READINESS: dict[int | str, dict[str, Any]] = {
    200: {"model": Readiness, "description": "ready"},
    503: {"model": Readiness, "description": "not ready: `error.code` is `not_ready`"},
}

# /metrics answers the Prometheus text format (the route's response class has no media type of its own, so that
# its errors are declared as JSON, which they are).
METRICS: dict[int | str, dict[str, Any]] = {
    200: {"description": "the Prometheus text format",
          "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
    **errors(401, 403),
}

# A face's thumbnail is a JPEG; its errors are JSON.
THUMBNAIL: dict[int | str, dict[str, Any]] = {
    200: {"description": "the aligned face as JPEG (`ANYFACE_THUMBNAIL_SIZE` square)",
          "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}},
    **errors(401, 403, 404, 422, 503),
}

# A gallery export streams JSON Lines; its errors are JSON.
EXPORT: dict[int | str, dict[str, Any]] = {
    200: {"description": "the gallery as JSON Lines: header, one line per subject, end line (docs/bulk.md)",
          "content": {"application/x-ndjson": {"schema": {"type": "string"}}}},
    **errors(401, 403, 404, 422, 503),
}

METHOD_NOT_ALLOWED = {
    "description": "`method_not_allowed`: the path has no such method; `Allow` lists those it has",
    "headers": {"Allow": {"description": "the methods of the path", "schema": {"type": "string"}}},
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
}

SECURITY_SCHEMES = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "Bearer": {"type": "http", "scheme": "bearer", "description": "the same key as `Authorization: Bearer <key>`"},
}


def limits(settings: Settings) -> dict[str, tuple[str, int]]:
    """Parameter or form field name -> (JSON Schema keyword, bound)."""
    return {
        "limit": ("maximum", settings.page_size_max),
        "top_k": ("maximum", settings.max_top_k),
        "images": ("maxItems", settings.max_images_per_request),
    }


def _bound(schema: dict[str, Any], keyword: str, value: int) -> None:
    for branch in schema.get("anyOf", [schema]):
        kind = branch.get("type")
        if (keyword == "maxItems" and kind == "array") or (keyword == "maximum" and kind in ("integer", "number")):
            branch[keyword] = min(value, branch.get(keyword, value))  # a static bound may be tighter still


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        resolved: dict[str, Any] = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
        return resolved
    return schema


def apply_settings(spec: dict[str, Any], settings: Settings, keys: KeyRing) -> None:
    """Write the limits, the reusable 405 and the API keys into a generated schema."""
    bounds = limits(settings)
    components = spec.setdefault("components", {})
    components.setdefault("responses", {})["MethodNotAllowed"] = copy.deepcopy(METHOD_NOT_ALLOWED)
    components.setdefault("securitySchemes", {}).update(copy.deepcopy(SECURITY_SCHEMES))
    security: list[dict[str, list[str]]] = [{"ApiKey": []}, {"Bearer": []}]
    if not keys.enabled:
        security.append({})  # no keys configured: calls need none
    for path, operations in spec.get("paths", {}).items():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("name") in bounds:
                    _bound(parameter["schema"], *bounds[parameter["name"]])
            for media in operation.get("requestBody", {}).get("content", {}).values():
                properties = _resolve(media.get("schema", {}), spec).get("properties", {})
                for name, (keyword, value) in bounds.items():
                    if name in properties:
                        _bound(properties[name], keyword, value)
            if path.startswith("/v1/"):
                operation["security"] = security
            elif path == "/metrics":
                operation["security"] = ([{}] if not keys.enabled and keys.metrics_key is None
                                         else [{"ApiKey": []}, {"Bearer": []}])


def install_openapi(app: FastAPI, settings: Settings, keys: KeyRing) -> None:
    """Generate the schema once, as FastAPI does, with this app's settings written in."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = generate()
            apply_settings(spec, settings, keys)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
