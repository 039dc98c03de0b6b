"""`POST /v1/verify`: are two faces the same person? Photo against photo, or photo against an enrolled subject."""

from __future__ import annotations

from fastapi import APIRouter, File, Form, Request, UploadFile

from service.api.auth import authorize
from service.api.context import core_of
from service.api.openapi import errors
from service.api.params import (
    GALLERY_PATTERN,
    MAX_FACE_SIZE,
    MIN_QUALITY_HELP,
    SUBJECT_PATTERN,
    UploadImage,
    overrides,
)
from service.api.schemas import VerifyResponse
from service.errors import InvalidParameter

router = APIRouter(tags=["faces"])


@router.post("/v1/verify", response_model=VerifyResponse,
             responses=errors(400, 401, 403, 404, 409, 413, 415, 422, 503, low_quality=True))
async def verify(
    request: Request,
    image_a: UploadFile | None = File(None, description="first photo (with image_b)"),
    image_b: UploadFile | None = File(None, description="second photo (with image_a)"),
    image: UploadFile | None = File(None, description="photo to check against an enrolled subject"),
    gallery: str | None = Form(None, pattern=GALLERY_PATTERN),
    subject_id: str | None = Form(None, pattern=SUBJECT_PATTERN),
    threshold: float | None = Form(None, ge=-1, le=1, allow_inf_nan=False,
                                   description="cosine similarity; default: calibrated"),
    min_face_size: float | None = Form(None, ge=0, le=MAX_FACE_SIZE, allow_inf_nan=False),
    det_score_threshold: float | None = Form(None, ge=0, le=1, allow_inf_nan=False),
    min_quality: float | None = Form(None, ge=0, le=1, allow_inf_nan=False,
                                     description=MIN_QUALITY_HELP + " (the main face of each photo)"),
) -> VerifyResponse:
    core = core_of(request)
    limit = core.settings.decode.max_image_bytes
    flt = overrides(min_face_size, det_score_threshold, min_quality=min_quality)
    if image_a is not None or image_b is not None:
        if image_a is None or image_b is None or image is not None:
            raise InvalidParameter("send both image_a and image_b, or image with gallery and subject_id",
                                   code="missing_field")
        authorize(request, None, write=False)
        result = await core.recognition.verify_photos(UploadImage(image_a, limit, "image_a"),
                                                      UploadImage(image_b, limit, "image_b"), threshold, flt)
        return VerifyResponse.of(result)
    if image is None or gallery is None or subject_id is None:
        raise InvalidParameter("send image_a and image_b, or image with gallery and subject_id", code="missing_field")
    authorize(request, gallery, write=False)
    result = await core.recognition.verify_subject(UploadImage(image, limit, "image"), gallery, subject_id,
                                                   threshold, flt)
    return VerifyResponse.of(result)
