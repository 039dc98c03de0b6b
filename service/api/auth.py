"""API keys: when keys are configured every /v1 call needs one (`X-API-Key: <key>`, or `Authorization: Bearer
<key>`); a key may be read-only or gallery-scoped. /metrics takes the metrics key or a key for every gallery.

The request guard (`api/guard.py`) checks that a /v1 call carries a known key before its body is read; the
routes check what that key may touch (`authorize`)."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from fastapi import Request

from service.errors import Forbidden, Unauthorized
from service.settings import ApiKey


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request carries: `X-API-Key`, else the credentials of `Authorization: Bearer`."""
    key = headers.get("x-api-key")
    if key:
        return key
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class KeyRing:
    def __init__(self, keys: list[ApiKey], metrics_key: str | None = None) -> None:
        self.keys = keys
        self.metrics_key = metrics_key or None

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def lookup(self, presented: str | None) -> ApiKey | None:
        """The API key presented (None when the service has no keys); `Unauthorized` for a missing or unknown
        one. The metrics key is not an API key."""
        if not self.enabled:
            return None
        if not presented:
            raise Unauthorized("this service requires an API key (X-API-Key header, or Authorization: Bearer)")
        for key in self.keys:
            if _same(key.key, presented):
                return key
        raise Unauthorized("unknown API key")

    def check_metrics(self, presented: str | None) -> None:
        """/metrics names every gallery: it needs the metrics key or an API key that sees every gallery, once any
        key is configured."""
        if not self.enabled and self.metrics_key is None:
            return
        if not presented:
            raise Unauthorized("/metrics requires the metrics key or an API key (X-API-Key or Authorization: "
                               "Bearer)")
        if self.metrics_key is not None and _same(self.metrics_key, presented):
            return
        key = next((k for k in self.keys if _same(k.key, presented)), None)
        if key is None:
            raise Unauthorized("unknown key")
        if key.galleries is not None:
            raise Forbidden("/metrics names every gallery: this API key is limited to some galleries")


def key_ring(request: Request) -> KeyRing:
    ring: KeyRing = request.app.state.keys
    return ring


def caller_key(request: Request) -> ApiKey | None:
    """The request's key (None when the service has no keys); `Unauthorized` for a missing or unknown one."""
    return key_ring(request).lookup(presented_key(request.headers))


def authorize(request: Request, gallery: str | None, write: bool) -> None:
    """Raise unless the request's key may read (or write) the gallery (None: no particular gallery)."""
    key = caller_key(request)
    if key is None:
        return
    if not key.allows(gallery, write):
        what = "write to" if write else "read"
        target = f"gallery {gallery!r}" if gallery else "this resource"
        raise Forbidden(f"this API key may not {what} {target}")


def authorize_metrics(request: Request) -> None:
    key_ring(request).check_metrics(presented_key(request.headers))
