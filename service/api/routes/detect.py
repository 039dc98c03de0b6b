"""`POST /v1/detect`: every face with box, landmarks, score and size."""

from __future__ import annotations

from fastapi import APIRouter, File, Form, Request, UploadFile

from service import metrics
from service.api.auth import authorize
from service.api.params import read_upload
from service.api.schemas import DetectResponse, FaceOut, ImageSize

router = APIRouter(tags=["faces"])


@router.post("/v1/detect", response_model=DetectResponse)
async def detect(
    request: Request,
    image: UploadFile | None = File(None, description="the photo"),
    min_face_size: float | None = Form(None, ge=0, description="drop faces smaller than this (pixels)"),
    det_score_threshold: float | None = Form(None, ge=0, le=1),
    max_faces: int | None = Form(None, ge=1),
) -> DetectResponse:
    authorize(request, None, write=False)
    ctx = request.app.state.ctx
    data = await read_upload(image, ctx.settings.max_image_bytes, "image")
    result = await ctx.pipeline.analyze(data, "image", ctx.face_filter(min_face_size, det_score_threshold, max_faces),
                                        embed=False)
    metrics.FACES_PER_REQUEST.labels("detect").observe(len(result.faces))
    return DetectResponse(image=ImageSize(width=result.width, height=result.height),
                          faces=[FaceOut.of(f, embedded=False) for f in result.faces])
