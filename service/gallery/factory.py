"""Build the gallery store named by the `ANYFACE_STORE` URL."""

from __future__ import annotations

from service.gallery.sqlite_store import SqliteStore, path_from_url
from service.gallery.store import GalleryStore


def build_store(url: str) -> GalleryStore:
    if url.startswith("sqlite:///"):
        return SqliteStore(path_from_url(url))
    if url.startswith(("redis://", "rediss://", "unix://")):
        from service.gallery.redis_store import RedisStore  # only deployments with Redis need the client

        return RedisStore(url)
    raise ValueError(f"ANYFACE_STORE: unsupported store URL {url!r} (use sqlite:///path or redis://host:port/db)")
