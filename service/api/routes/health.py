"""Liveness, readiness and Prometheus metrics (which need a key once keys are configured: they name every
gallery)."""

from __future__ import annotations

import os

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from starlette.concurrency import run_in_threadpool

from service import metrics
from service.api.auth import authorize_metrics
from service.api.openapi import METRICS, READINESS

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses=READINESS)
async def readyz(request: Request) -> JSONResponse:
    ctx = getattr(request.app.state, "ctx", None)
    checks = {"models": ctx is not None}
    if ctx is not None:
        checks.update(await run_in_threadpool(ctx.core.readiness))
    ready = all(checks.values())
    metrics.READY.set(1 if ready else 0)
    body = {"ready": ready, "checks": checks}
    if not ready:
        body["error"] = {"code": "not_ready", "message": "failing checks: " + ", ".join(k for k, v in checks.items()
                                                                                           if not v)}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response, responses=METRICS)
async def prometheus_metrics(request: Request) -> Response:
    authorize_metrics(request)
    registry: CollectorRegistry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
