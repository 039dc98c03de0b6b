"""What the API holds for its requests: the application core and the API keys, built once at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from service.api.auth import KeyRing
from service.core.wiring import Core, build_core
from service.settings import Settings


@dataclass
class ApiContext:
    core: Core
    keys: KeyRing

    def close(self) -> None:
        self.core.close()


def build_context(settings: Settings) -> ApiContext:
    return ApiContext(build_core(settings), KeyRing(settings.all_api_keys()))


def core_of(request: Request) -> Core:
    return request.app.state.ctx.core
