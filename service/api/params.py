"""Shared request parameters: names, uploads and metadata, parsed and checked at the HTTP edge."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Path, UploadFile

from service.core.galleries import MAX_FACE_ID
from service.core.inputs import FilterOverrides
from service.errors import EmptyImage, ImageTooLarge, InvalidMetadata, InvalidParameter

GALLERY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
SUBJECT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
# Bounds of numeric parameters, so that no value reaches a store, an index or numpy out of their range (a face id
# beyond SQLite's INTEGER was a 500): out of range is 422 `invalid_parameter`. The core still checks its own,
# configured limits (`max_top_k`, `page_size_max`; `max_faces` narrows the configured one).
MAX_COUNT = 2**31 - 1  # counts (top_k, limit, max_faces) fit a C int, FAISS's k included
MAX_FACE_SIZE = 1_000_000.0  # pixels: beyond the side of any image the decoder accepts

MIN_QUALITY_HELP = ("refuse faces whose quality (0 to 1, docs/quality.md) is below this: 422 `low_quality`; "
                    "default: the service's ANYFACE_MIN_QUALITY; 0 accepts every face")

GalleryName = Annotated[str, Path(pattern=GALLERY_PATTERN, description="gallery name: letters, digits, . _ -")]
SubjectId = Annotated[str, Path(pattern=SUBJECT_PATTERN, description="subject id: letters, digits, . _ : @ -")]
FaceId = Annotated[int, Path(ge=1, le=MAX_FACE_ID, description="face id, as enrolment answered it")]


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
              max_faces: int | None = None, min_quality: float | None = None) -> FilterOverrides:
    return FilterOverrides(min_face_size, det_score_threshold, max_faces, min_quality)


def parse_metadata(text: str | None, max_bytes: int) -> dict[str, Any] | None:
    """The metadata form field as JSON (at most `max_bytes` of text, the JSON body cap); the core checks the value."""
    if text is None or text == "":
        return None
    if len(text) > max_bytes or len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise InvalidMetadata(f"metadata: more than {max_bytes} bytes of JSON text")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, too many digits, nested too deep to parse
        raise InvalidMetadata(f"metadata: not valid JSON ({str(exc)[:200]})") from exc
    if not isinstance(value, dict):
        raise InvalidMetadata("metadata: must be a JSON object")
    return value
