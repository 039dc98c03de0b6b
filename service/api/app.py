"""The FastAPI application: start-up, the request guard (API key before the body, body caps, load shedding,
request metrics: `api/guard.py`), the routes and the OpenAPI schema (`api/openapi.py`)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service import __version__
from service.api.auth import KeyRing
from service.api.console import install_console
from service.api.context import build_context
from service.api.errors import install_error_handlers
from service.api.guard import RequestGuard
from service.api.openapi import install_openapi
from service.api.routes import account, detect, galleries, health, identify, jobs, verify
from service.settings import Settings, get_settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    keys = KeyRing(settings.all_api_keys(), settings.metrics_key)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.ctx = build_context(settings)
        if not keys.enabled:
            log.warning("no API keys configured: every /v1 call is allowed; bind to 127.0.0.1 only")
        app.state.ctx.core.jobs.start()
        try:
            yield
        finally:
            await app.state.ctx.core.jobs.stop()
            app.state.ctx.close()

    app = FastAPI(
        title="AnyFace",
        version=__version__,
        description="Face detection, verification (1:1) and identification (1:N) with multi-resolution embeddings.",
        lifespan=lifespan,
    )
    app.state.keys = keys  # the guard and the routes check the same keys, from start-up on
    install_error_handlers(app)
    app.add_middleware(RequestGuard, settings=settings, keys=keys)
    for module in (health, account, detect, verify, identify, galleries, jobs):
        app.include_router(module.router)
    install_console(app, settings.console)
    install_openapi(app, settings, keys)
    return app
