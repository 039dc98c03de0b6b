"""Shared request parameters: names, uploads and metadata, parsed and checked at the HTTP edge."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Path, UploadFile

from service.core.inputs import FilterOverrides
from service.errors import EmptyImage, ImageTooLarge, InvalidParameter

GALLERY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
SUBJECT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
MAX_METADATA_CHARS = 16_384

GalleryName = Annotated[str, Path(pattern=GALLERY_PATTERN, description="gallery name: letters, digits, . _ -")]
SubjectId = Annotated[str, Path(pattern=SUBJECT_PATTERN, description="subject id: letters, digits, . _ : @ -")]


@dataclass(frozen=True)
class UploadImage:
    """An uploaded file as the core's `ImageSource`: read when the core gets to it, never more than `limit`
    bytes."""

    upload: UploadFile | None
    limit: int
    field: str

    async def read(self) -> bytes:
        if self.upload is None:
            raise InvalidParameter(f"{self.field}: a file is required", code="missing_field")
        data = await self.upload.read(self.limit + 1)
        if len(data) > self.limit:
            raise ImageTooLarge(f"{self.field}: the upload exceeds the limit of {self.limit} bytes")
        if not data:
            raise EmptyImage(f"{self.field}: the upload is empty (0 bytes)")
        return data


def overrides(min_face_size: float | None = None, det_score_threshold: float | None = None,
              max_faces: int | None = None) -> FilterOverrides:
    return FilterOverrides(min_face_size, det_score_threshold, max_faces)


def parse_metadata(text: str | None) -> dict[str, Any] | None:
    if text is None or text == "":
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidParameter(f"metadata: not valid JSON ({exc})", code="invalid_metadata") from exc
    if not isinstance(value, dict):
        raise InvalidParameter("metadata: must be a JSON object", code="invalid_metadata")
    if len(text) > MAX_METADATA_CHARS:
        raise InvalidParameter("metadata: at most 16 KiB of JSON", code="invalid_metadata")
    return value
