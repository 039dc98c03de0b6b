"""What the core takes from its callers: photos as `ImageSource`s, read only when the core gets to them (so a
request is refused for a missing gallery before its upload is read), and face-filter overrides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from service.errors import EmptyImage


class ImageSource(Protocol):
    """A photo from a caller: the name it goes by in errors (an upload field, a file name) and its bytes."""

    @property
    def field(self) -> str: ...

    async def read(self) -> bytes: ...


@dataclass(frozen=True)
class BytesImage:
    """A photo already in memory (the command line, bulk imports, tests)."""

    data: bytes
    field: str = "image"

    async def read(self) -> bytes:
        if not self.data:
            raise EmptyImage(f"{self.field}: the upload is empty (0 bytes)")
        return self.data


@dataclass(frozen=True)
class FilterOverrides:
    """A request's own detection filter values; None keeps the configured one. `min_quality` does not drop faces:
    a face below it is refused (`LowQuality`) where a face is enrolled or searched."""

    min_face_size: float | None = None
    score_threshold: float | None = None
    max_faces: int | None = None
    min_quality: float | None = None
