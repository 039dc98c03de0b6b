"""Galleries, subjects and faces: enrolment and management."""

from __future__ import annotations

from fastapi import APIRouter, Body, File, Form, Query, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from service import metrics
from service.api.auth import authorize
from service.api.params import GalleryName, SubjectId, parse_metadata, read_upload
from service.api.schemas import (
    Deleted,
    EnrollResponse,
    FaceRecordOut,
    GalleryList,
    GalleryOut,
    SubjectOut,
    SubjectPage,
    SubjectPatch,
    gallery_out,
)
from service.errors import (
    FaceNotFound,
    GalleryNotFound,
    InvalidParameter,
    MultipleFaces,
    NoFace,
    SubjectNotFound,
)
from service.gallery.store import NewFace

router = APIRouter(tags=["galleries"])


@router.post("/v1/galleries/{gallery}/subjects/{subject_id}/faces", status_code=201, response_model=EnrollResponse)
async def enroll(
    request: Request,
    gallery: GalleryName,
    subject_id: SubjectId,
    images: list[UploadFile] | None = File(None, description="one or more photos of the subject"),
    name: str | None = Form(None, max_length=256),
    metadata: str | None = Form(None, description="a JSON object stored with the subject"),
    allow_multiple: bool = Form(False, description="enrol the largest face of a photo that shows several"),
    min_face_size: float | None = Form(None, ge=0),
    det_score_threshold: float | None = Form(None, ge=0, le=1),
) -> EnrollResponse:
    authorize(request, gallery, write=True)
    ctx = request.app.state.ctx
    if not images:
        raise InvalidParameter("images: at least one file is required", code="missing_field")
    if len(images) > ctx.settings.max_images_per_request:
        raise InvalidParameter(f"images: at most {ctx.settings.max_images_per_request} per request",
                               code="too_many_images")
    meta = parse_metadata(metadata)
    flt = ctx.face_filter(min_face_size, det_score_threshold)
    new_faces: list[NewFace] = []
    for i, upload in enumerate(images):  # every image is checked before anything is written
        field = f"images[{i}]"
        data = await read_upload(upload, ctx.settings.max_image_bytes, field)
        result = await ctx.pipeline.analyze(data, field, flt)
        metrics.FACES_PER_REQUEST.labels("enroll").observe(len(result.faces))
        if not result.faces:
            raise NoFace(f"{field}: no face found in the image")
        if len(result.faces) > 1 and not allow_multiple:
            raise MultipleFaces(f"{field}: {len(result.faces)} faces found; send a photo of one face or set "
                                "allow_multiple=true to enrol the largest")
        face = result.faces[0]
        new_faces.append(NewFace(face.embedding, [float(v) for v in face.face.box], face.branch))
    subject, records = await run_in_threadpool(ctx.gallery.enroll, gallery, subject_id, name, meta, new_faces)
    return EnrollResponse(subject=SubjectOut.of(subject), faces=[FaceRecordOut.of(r) for r in records])


@router.get("/v1/galleries", response_model=GalleryList)
async def list_galleries(request: Request) -> GalleryList:
    authorize(request, None, write=False)
    ctx = request.app.state.ctx
    infos = await run_in_threadpool(ctx.gallery.store.list_galleries)
    ring = ctx.keys
    key = ring.lookup(request.headers.get("x-api-key"))
    visible = [i for i in infos if key is None or key.allows(i.name, write=False)]
    return GalleryList(galleries=[gallery_out(i, ctx.gallery.index_kind(i.name), ctx.gallery.index_size(i.name))
                                  for i in visible])


@router.get("/v1/galleries/{gallery}", response_model=GalleryOut)
async def get_gallery(request: Request, gallery: GalleryName) -> GalleryOut:
    authorize(request, gallery, write=False)
    ctx = request.app.state.ctx
    info = await run_in_threadpool(ctx.gallery.store.get_gallery, gallery)
    if info is None:
        raise GalleryNotFound(f"gallery {gallery!r} does not exist")
    return gallery_out(info, ctx.gallery.index_kind(gallery), ctx.gallery.index_size(gallery))


@router.delete("/v1/galleries/{gallery}", response_model=Deleted)
async def delete_gallery(request: Request, gallery: GalleryName) -> Deleted:
    authorize(request, gallery, write=True)
    ctx = request.app.state.ctx
    if not await run_in_threadpool(ctx.gallery.delete_gallery, gallery):
        raise GalleryNotFound(f"gallery {gallery!r} does not exist")
    return Deleted()


@router.get("/v1/galleries/{gallery}/subjects", response_model=SubjectPage)
async def list_subjects(
    request: Request,
    gallery: GalleryName,
    cursor: str | None = Query(None, max_length=128, description="next_cursor of the previous page"),
    limit: int = Query(100, ge=1),
) -> SubjectPage:
    authorize(request, gallery, write=False)
    ctx = request.app.state.ctx
    if limit > ctx.settings.page_size_max:
        raise InvalidParameter(f"limit: at most {ctx.settings.page_size_max}")
    if await run_in_threadpool(ctx.gallery.store.get_gallery, gallery) is None:
        raise GalleryNotFound(f"gallery {gallery!r} does not exist")
    subjects, next_cursor = await run_in_threadpool(ctx.gallery.store.list_subjects, gallery, cursor, limit)
    return SubjectPage(subjects=[SubjectOut.of(s) for s in subjects], next_cursor=next_cursor)


async def _subject_or_404(request: Request, gallery: str, subject_id: str) -> None:
    store = request.app.state.ctx.gallery.store
    if await run_in_threadpool(store.get_gallery, gallery) is None:
        raise GalleryNotFound(f"gallery {gallery!r} does not exist")
    raise SubjectNotFound(f"subject {subject_id!r} does not exist in gallery {gallery!r}")


@router.get("/v1/galleries/{gallery}/subjects/{subject_id}", response_model=SubjectOut)
async def get_subject(request: Request, gallery: GalleryName, subject_id: SubjectId) -> SubjectOut:
    authorize(request, gallery, write=False)
    subject = await run_in_threadpool(request.app.state.ctx.gallery.store.get_subject, gallery, subject_id)
    if subject is None:
        await _subject_or_404(request, gallery, subject_id)
    return SubjectOut.of(subject, with_faces=True)


@router.patch("/v1/galleries/{gallery}/subjects/{subject_id}", response_model=SubjectOut)
async def update_subject(request: Request, gallery: GalleryName, subject_id: SubjectId,
                         patch: SubjectPatch = Body(...)) -> SubjectOut:
    authorize(request, gallery, write=True)
    subject = await run_in_threadpool(request.app.state.ctx.gallery.store.update_subject, gallery, subject_id,
                                      patch.name, patch.metadata)
    if subject is None:
        await _subject_or_404(request, gallery, subject_id)
    return SubjectOut.of(subject, with_faces=True)


@router.delete("/v1/galleries/{gallery}/subjects/{subject_id}", response_model=Deleted)
async def delete_subject(request: Request, gallery: GalleryName, subject_id: SubjectId) -> Deleted:
    authorize(request, gallery, write=True)
    if not await run_in_threadpool(request.app.state.ctx.gallery.delete_subject, gallery, subject_id):
        await _subject_or_404(request, gallery, subject_id)
    return Deleted()


@router.delete("/v1/galleries/{gallery}/subjects/{subject_id}/faces/{face_id}", response_model=Deleted)
async def delete_face(request: Request, gallery: GalleryName, subject_id: SubjectId, face_id: int) -> Deleted:
    authorize(request, gallery, write=True)
    ctx = request.app.state.ctx
    if not await run_in_threadpool(ctx.gallery.delete_face, gallery, subject_id, face_id):
        if await run_in_threadpool(ctx.gallery.store.get_subject, gallery, subject_id, False) is None:
            await _subject_or_404(request, gallery, subject_id)
        raise FaceNotFound(f"face {face_id} does not exist for subject {subject_id!r} in gallery {gallery!r}")
    return Deleted()
