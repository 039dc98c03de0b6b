"""`POST /v1/identify`: who is this? 1:N search of a gallery for each face of a photo."""

from __future__ import annotations

from fastapi import APIRouter, File, Form, Request, UploadFile

from service.api.auth import authorize
from service.api.context import core_of
from service.api.openapi import errors
from service.api.params import GALLERY_PATTERN, MAX_COUNT, MAX_FACE_SIZE, MIN_QUALITY_HELP, UploadImage, overrides
from service.api.schemas import IdentifyResponse

router = APIRouter(tags=["faces"])


@router.post("/v1/identify", response_model=IdentifyResponse,
             responses=errors(400, 401, 403, 404, 409, 413, 415, 422, 503, low_quality=True))
async def identify(
    request: Request,
    image: UploadFile | None = File(None),
    gallery: str = Form(..., pattern=GALLERY_PATTERN),
    top_k: int = Form(5, ge=1, le=MAX_COUNT, description="at most max_top_k"),
    threshold: float | None = Form(None, ge=-1, le=1, allow_inf_nan=False,
                                   description="cosine similarity; default: calibrated"),
    all_faces: bool = Form(False, description="identify every face, not only the largest"),
    min_face_size: float | None = Form(None, ge=0, le=MAX_FACE_SIZE, allow_inf_nan=False),
    det_score_threshold: float | None = Form(None, ge=0, le=1, allow_inf_nan=False),
    max_faces: int | None = Form(None, ge=1, le=MAX_COUNT),
    min_quality: float | None = Form(
        None, ge=0, le=1, allow_inf_nan=False, description=MIN_QUALITY_HELP + " (the main face); with all_faces, "
        "faces below it are not searched and come back with `skipped: low_quality` and no candidates"),
) -> IdentifyResponse:
    authorize(request, gallery, write=False)
    core = core_of(request)
    result = await core.recognition.identify(UploadImage(image, core.settings.decode.max_image_bytes, "image"),
                                             gallery, top_k, threshold, all_faces,
                                             overrides(min_face_size, det_score_threshold, max_faces, min_quality))
    return IdentifyResponse.of(result)
