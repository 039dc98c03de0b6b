"""`python -m service`: run the API with uvicorn on the configured host and port.

Without API keys the service refuses to listen beyond 127.0.0.1, and says so.
"""

from __future__ import annotations

import logging

import uvicorn

from service.settings import get_settings

LOOPBACK = "127.0.0.1"


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    host = settings.host
    if not settings.all_api_keys() and host not in (LOOPBACK, "localhost", "::1"):
        logging.getLogger("service").warning(
            "no API keys configured (ANYFACE_API_KEYS / ANYFACE_API_KEYS_FILE): binding to %s instead of %s",
            LOOPBACK, host)
        host = LOOPBACK
    elif not settings.all_api_keys():
        logging.getLogger("service").warning("no API keys configured: listening on %s only", host)
    uvicorn.run("service.api.app:create_app", factory=True, host=host, port=settings.port, workers=settings.workers,
                log_level="info", timeout_graceful_shutdown=10)


if __name__ == "__main__":
    main()
