"""`GET /v1/me`: what the calling API key may do, so that a client (the console) can show only that."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.api.auth import caller_key, key_ring
from service.api.openapi import errors
from service.api.schemas import KeyOut

router = APIRouter(tags=["account"])


@router.get("/v1/me", response_model=KeyOut, responses=errors(401, 503))
async def me(request: Request) -> KeyOut:
    key = caller_key(request)
    if key is None:
        open_metrics = key_ring(request).metrics_key is None
        return KeyOut(auth_required=False, read_only=False, galleries=None, metrics=open_metrics)
    return KeyOut(auth_required=True, name=key.name or None, read_only=key.read_only, galleries=key.galleries,
                  metrics=key.galleries is None)
