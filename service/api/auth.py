"""API keys: `X-API-Key` on every /v1 call when keys are configured; a key may be read-only or gallery-scoped."""

from __future__ import annotations

import hmac

from fastapi import Request

from service.errors import Forbidden, Unauthorized
from service.settings import ApiKey


class KeyRing:
    def __init__(self, keys: list[ApiKey]) -> None:
        self.keys = keys

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def lookup(self, presented: str | None) -> ApiKey | None:
        if not self.enabled:
            return None
        if not presented:
            raise Unauthorized("this service requires an API key in the X-API-Key header")
        for key in self.keys:
            if hmac.compare_digest(key.key.encode(), presented.encode()):
                return key
        raise Unauthorized("unknown API key")


def caller_key(request: Request) -> ApiKey | None:
    """The request's key (None when the service has no keys); `Unauthorized` for a missing or unknown one."""
    ring: KeyRing = request.app.state.ctx.keys
    return ring.lookup(request.headers.get("x-api-key"))


def authorize(request: Request, gallery: str | None, write: bool) -> None:
    """Raise unless the request's key may read (or write) the gallery (None: no particular gallery)."""
    key = caller_key(request)
    if key is None:
        return
    if not key.allows(gallery, write):
        what = "write to" if write else "read"
        target = f"gallery {gallery!r}" if gallery else "this resource"
        raise Forbidden(f"this API key may not {what} {target}")
