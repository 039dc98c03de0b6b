"""`POST /v1/verify`: are two faces the same person? Photo against photo, or photo against an enrolled subject."""

from __future__ import annotations

import asyncio

import numpy as np
from fastapi import APIRouter, File, Form, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from service import metrics
from service.api.auth import authorize
from service.api.params import GALLERY_PATTERN, SUBJECT_PATTERN, read_upload
from service.api.schemas import FaceOut, SubjectRef, VerifyResponse
from service.errors import GalleryNotFound, InvalidParameter, SubjectNotFound
from service.pipeline import stage

router = APIRouter(tags=["faces"])


@router.post("/v1/verify", response_model=VerifyResponse)
async def verify(
    request: Request,
    image_a: UploadFile | None = File(None, description="first photo (with image_b)"),
    image_b: UploadFile | None = File(None, description="second photo (with image_a)"),
    image: UploadFile | None = File(None, description="photo to check against an enrolled subject"),
    gallery: str | None = Form(None, pattern=GALLERY_PATTERN),
    subject_id: str | None = Form(None, pattern=SUBJECT_PATTERN),
    threshold: float | None = Form(None, ge=-1, le=1, description="cosine similarity; default: calibrated"),
    min_face_size: float | None = Form(None, ge=0),
    det_score_threshold: float | None = Form(None, ge=0, le=1),
) -> VerifyResponse:
    ctx = request.app.state.ctx
    limit = ctx.settings.max_image_bytes
    flt = ctx.face_filter(min_face_size, det_score_threshold)
    thr = ctx.thresholds.verify if threshold is None else threshold
    if image_a is not None or image_b is not None:
        if image_a is None or image_b is None or image is not None:
            raise InvalidParameter("send both image_a and image_b, or image with gallery and subject_id",
                                   code="missing_field")
        authorize(request, None, write=False)
        data_a, data_b = await read_upload(image_a, limit, "image_a"), await read_upload(image_b, limit, "image_b")
        a, b = await asyncio.gather(ctx.pipeline.analyze(data_a, "image_a", flt),
                                    ctx.pipeline.analyze(data_b, "image_b", flt))
        metrics.FACES_PER_REQUEST.labels("verify").observe(len(a.faces))
        metrics.FACES_PER_REQUEST.labels("verify").observe(len(b.faces))
        face_a, face_b = a.largest("image_a"), b.largest("image_b")
        similarity = float(np.dot(face_a.embedding, face_b.embedding))
        return VerifyResponse(similarity=round(similarity, 6), threshold=thr, match=similarity >= thr,
                              face_a=FaceOut.of(face_a), face_b=FaceOut.of(face_b))
    if image is None or gallery is None or subject_id is None:
        raise InvalidParameter("send image_a and image_b, or image with gallery and subject_id", code="missing_field")
    authorize(request, gallery, write=False)
    store = ctx.gallery.store
    subject = await run_in_threadpool(store.get_subject, gallery, subject_id, False)
    if subject is None:
        if await run_in_threadpool(store.get_gallery, gallery) is None:
            raise GalleryNotFound(f"gallery {gallery!r} does not exist")
        raise SubjectNotFound(f"subject {subject_id!r} does not exist in gallery {gallery!r}")
    data = await read_upload(image, limit, "image")
    probe = await ctx.pipeline.analyze(data, "image", flt)
    metrics.FACES_PER_REQUEST.labels("verify").observe(len(probe.faces))
    face = probe.largest("image")

    def compare() -> float:
        with stage("search"):
            enrolled = store.subject_embeddings(gallery, subject_id)
            return float((enrolled @ face.embedding).max()) if len(enrolled) else -1.0

    similarity = await run_in_threadpool(compare)
    return VerifyResponse(similarity=round(similarity, 6), threshold=thr, match=similarity >= thr,
                          face_a=FaceOut.of(face), subject=SubjectRef(gallery=gallery, subject_id=subject_id,
                                                                      name=subject.name))
