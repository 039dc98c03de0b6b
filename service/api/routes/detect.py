"""`POST /v1/detect`: every face with box, landmarks, score, size, quality and the branch it would be embedded by."""

from __future__ import annotations

from fastapi import APIRouter, File, Form, Request, UploadFile

from service.api.auth import authorize
from service.api.context import core_of
from service.api.openapi import errors
from service.api.params import MAX_COUNT, MAX_FACE_SIZE, UploadImage, overrides
from service.api.schemas import DetectResponse, FaceOut, ImageSize

router = APIRouter(tags=["faces"])


@router.post("/v1/detect", response_model=DetectResponse, responses=errors(400, 401, 413, 415, 422, 503))
async def detect(
    request: Request,
    image: UploadFile | None = File(None, description="the photo"),
    min_face_size: float | None = Form(None, ge=0, le=MAX_FACE_SIZE, allow_inf_nan=False,
                                       description="drop faces smaller than this (pixels)"),
    det_score_threshold: float | None = Form(None, ge=0, le=1, allow_inf_nan=False),
    max_faces: int | None = Form(None, ge=1, le=MAX_COUNT),
) -> DetectResponse:
    authorize(request, None, write=False)
    core = core_of(request)
    result = await core.recognition.detect(UploadImage(image, core.settings.decode.max_image_bytes, "image"),
                                           overrides(min_face_size, det_score_threshold, max_faces))
    return DetectResponse(image=ImageSize(width=result.width, height=result.height),
                          faces=[FaceOut.of(f) for f in result.faces], rotation=result.rotation)
