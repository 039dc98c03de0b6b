"""The web console's delivery: the static pages under /ui (`service/console/static`, plain HTML, CSS and JS with
no build step) and the page at / that links to them and to the API's own pages.

The console calls only the public REST API, with the key the operator signs in with, so it can do exactly what a
client with that key can. Its pages hold no data and need no key; they are sent with a Content Security Policy
that lets them load nothing but this origin's files and talk to nothing but this origin's API.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

from service import __version__

STATIC = Path(__file__).resolve().parent.parent / "console" / "static"
CONSOLE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
                               "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class ConsoleFiles(StaticFiles):
    """The console's files, each answered with `CONSOLE_HEADERS`."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"],
                                      *[(k.lower().encode(), v.encode()) for k, v in CONSOLE_HEADERS.items()]]
            await send(message)

        await super().__call__(scope, receive, send_with_headers)


def root_page(console: bool) -> str:
    links = [("/docs", "API reference (OpenAPI)"), ("/readyz", "readiness"), ("/metrics", "Prometheus metrics")]
    if console:
        links.insert(0, ("/ui/", "Web console"))
    items = "".join(f'<li><a href="{href}">{text}</a></li>' for href, text in links)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>AnyFace</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"></head>'
            f"<body><h1>AnyFace {__version__}</h1><ul>{items}</ul></body></html>")


def install_console(app: FastAPI, enabled: bool) -> None:
    """/ (links) always; /ui only when the console is enabled (`ANYFACE_CONSOLE`)."""
    page = root_page(enabled)

    @app.get("/", include_in_schema=False)
    async def root() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": "default-src 'none'"})

    if enabled:
        app.mount("/ui", ConsoleFiles(directory=STATIC, html=True), name="console")
