"""The store fixtures of `test_redis_store.py` (a real redis-server, and `store` over SQLite and Redis), shared by
every test module of this folder."""

from tests.gallery.test_redis_store import redis_server, redis_server_bin, store  # noqa: F401
