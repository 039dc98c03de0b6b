"""`POST /v1/identify`: who is this? 1:N search of a gallery for each face of a photo."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, File, Form, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from service import metrics
from service.api.auth import authorize
from service.api.params import GALLERY_PATTERN, read_upload
from service.api.schemas import Candidate, FaceOut, IdentifiedFace, IdentifyResponse
from service.errors import GalleryNotFound, InvalidParameter, NoFace
from service.gallery.index import Hit
from service.pipeline import stage

router = APIRouter(tags=["faces"])


@router.post("/v1/identify", response_model=IdentifyResponse)
async def identify(
    request: Request,
    image: UploadFile | None = File(None),
    gallery: str = Form(..., pattern=GALLERY_PATTERN),
    top_k: int = Form(5, ge=1),
    threshold: float | None = Form(None, ge=-1, le=1, description="cosine similarity; default: calibrated"),
    all_faces: bool = Form(False, description="identify every face, not only the largest"),
    min_face_size: float | None = Form(None, ge=0),
    det_score_threshold: float | None = Form(None, ge=0, le=1),
    max_faces: int | None = Form(None, ge=1),
) -> IdentifyResponse:
    authorize(request, gallery, write=False)
    ctx = request.app.state.ctx
    if top_k > ctx.settings.max_top_k:
        raise InvalidParameter(f"top_k: at most {ctx.settings.max_top_k}")
    if not await run_in_threadpool(ctx.gallery.has_gallery, gallery):
        raise GalleryNotFound(f"gallery {gallery!r} does not exist")
    thr = ctx.thresholds.identify if threshold is None else threshold
    data = await read_upload(image, ctx.settings.max_image_bytes, "image")
    result = await ctx.pipeline.analyze(data, "image", ctx.face_filter(min_face_size, det_score_threshold,
                                                                         max_faces if all_faces else 1))
    metrics.FACES_PER_REQUEST.labels("identify").observe(len(result.faces))
    if not result.faces:
        raise NoFace("image: no face found in the image")
    faces = result.faces if all_faces else result.faces[:1]

    def search() -> tuple[list[list[Hit]], dict[str, str | None]]:
        with stage("search"):
            hits = ctx.gallery.search(gallery, np.stack([f.embedding for f in faces]), top_k)
            kept = [[h for h in face_hits if h.similarity >= thr] for face_hits in hits]
            names = ctx.gallery.store.subject_names(gallery, sorted({h.subject_id for hs in kept for h in hs}))
        return kept, names

    kept, names = await run_in_threadpool(search)
    return IdentifyResponse(
        gallery=gallery, threshold=thr, top_k=top_k,
        faces=[
            IdentifiedFace(face=FaceOut.of(face), candidates=[
                Candidate(subject_id=h.subject_id, name=names.get(h.subject_id), similarity=round(h.similarity, 6),
                          face_id=h.face_id) for h in face_hits])
            for face, face_hits in zip(faces, kept, strict=True)
        ],
    )
