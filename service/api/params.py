"""Shared request parameters: names, uploads and their validation."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import Path, UploadFile

from service.errors import EmptyImage, ImageTooLarge, InvalidParameter

GALLERY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
SUBJECT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"

GalleryName = Annotated[str, Path(pattern=GALLERY_PATTERN, description="gallery name: letters, digits, . _ -")]
SubjectId = Annotated[str, Path(pattern=SUBJECT_PATTERN, description="subject id: letters, digits, . _ : @ -")]


async def read_upload(upload: UploadFile | None, limit: int, field: str) -> bytes:
    """The upload's bytes, refusing more than `limit` without reading them all."""
    if upload is None:
        raise InvalidParameter(f"{field}: a file is required", code="missing_field")
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise ImageTooLarge(f"{field}: the upload exceeds the limit of {limit} bytes")
    if not data:
        raise EmptyImage(f"{field}: the upload is empty (0 bytes)")
    return data


def parse_metadata(text: str | None) -> dict[str, Any] | None:
    if text is None or text == "":
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidParameter(f"metadata: not valid JSON ({exc})", code="invalid_metadata") from exc
    if not isinstance(value, dict):
        raise InvalidParameter("metadata: must be a JSON object", code="invalid_metadata")
    if len(text) > 16_384:
        raise InvalidParameter("metadata: at most 16 KiB of JSON", code="invalid_metadata")
    return value
