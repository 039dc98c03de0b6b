"""Galleries, subjects and faces: enrolment and management."""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter, Body, File, Form, Query, Request, Response, UploadFile
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool

from service.api.auth import authorize, caller_key
from service.api.context import core_of
from service.api.openapi import EXPORT, THUMBNAIL, errors
from service.api.params import (
    MAX_COUNT,
    MAX_FACE_SIZE,
    MIN_QUALITY_HELP,
    FaceId,
    GalleryName,
    SubjectId,
    UploadImage,
    overrides,
    parse_metadata,
)
from service.api.schemas import (
    Deleted,
    EnrollResponse,
    FaceRecordOut,
    GalleryList,
    GalleryOut,
    ImportOut,
    SubjectOut,
    SubjectPage,
    SubjectPatch,
)
from service.errors import InvalidParameter

router = APIRouter(tags=["galleries"])


@router.post("/v1/galleries/{gallery}/subjects/{subject_id}/faces", status_code=201, response_model=EnrollResponse,
             responses={200: {"model": EnrollResponse, "description": "every photo's source was enrolled for the "
                                                                      "subject before: nothing was added"},
                        **errors(400, 401, 403, 404, 409, 413, 415, 422, 503, low_quality=True)})
async def enroll(
    request: Request,
    gallery: GalleryName,
    subject_id: SubjectId,
    images: list[UploadFile] | None = File(None, description="one or more photos of the subject"),
    name: str | None = Form(None, description="at most max_name_chars (256) characters"),
    metadata: str | None = Form(None, description="a JSON object stored with the subject (the rules of PATCH)"),
    allow_multiple: bool = Form(False, description="enrol the largest face of a photo that shows several"),
    min_face_size: float | None = Form(None, ge=0, le=MAX_FACE_SIZE, allow_inf_nan=False),
    det_score_threshold: float | None = Form(None, ge=0, le=1, allow_inf_nan=False),
    min_quality: float | None = Form(None, ge=0, le=1, allow_inf_nan=False,
                                     description=MIN_QUALITY_HELP + " (every photo's face must reach it)"),
    sources: list[str] | None = Form(
        None, description="one per image, in order: the photo's id (e.g. its sha256, 1-128 printable ASCII). A "
        "photo whose source this subject already has is not enrolled again: its face is answered with "
        "`duplicate: true`, so a retried or resumed enrolment adds each photo once"),
    response: Response = None,  # type: ignore[assignment]
) -> EnrollResponse:
    authorize(request, gallery, write=True)
    core = core_of(request)
    limit = core.settings.decode.max_image_bytes
    uploads = [UploadImage(upload, limit, f"images[{i}]") for i, upload in enumerate(images or [])]
    enrolment = await core.galleries.enroll(gallery, subject_id, uploads, name,
                                            parse_metadata(metadata, core.settings.max_json_body_bytes)
                                            if uploads else None, allow_multiple,
                                            overrides(min_face_size, det_score_threshold, min_quality=min_quality),
                                            sources)
    if enrolment.added == 0:
        response.status_code = 200  # every photo was enrolled before: nothing was added
    return EnrollResponse(subject=SubjectOut.of(enrolment.subject),
                          faces=[FaceRecordOut.of(r, q) for r, q in zip(enrolment.faces, enrolment.qualities,
                                                                        strict=True)])


@router.get("/v1/galleries", response_model=GalleryList, responses=errors(401, 503))
async def list_galleries(request: Request) -> GalleryList:
    authorize(request, None, write=False)
    key = caller_key(request)
    views = await core_of(request).galleries.list_galleries(
        None if key is None else (lambda name: key.allows(name, write=False)))
    return GalleryList(galleries=[GalleryOut.of(v) for v in views])


@router.put("/v1/galleries/{gallery}", response_model=GalleryOut, status_code=201,
            responses={200: {"model": GalleryOut, "description": "the gallery existed already: answered as it is"},
                       **errors(401, 403, 422, 503)})
async def create_gallery(request: Request, response: Response, gallery: GalleryName) -> GalleryOut:
    """Create an empty gallery for the embedder this service runs (enrolment also creates one on its first
    face)."""
    authorize(request, gallery, write=True)
    view, created = await core_of(request).galleries.create_gallery(gallery)
    if not created:
        response.status_code = 200
    return GalleryOut.of(view)


@router.get("/v1/galleries/{gallery}", response_model=GalleryOut, responses=errors(401, 403, 404, 422, 503))
async def get_gallery(request: Request, gallery: GalleryName) -> GalleryOut:
    authorize(request, gallery, write=False)
    return GalleryOut.of(await core_of(request).galleries.get_gallery(gallery))


@router.delete("/v1/galleries/{gallery}", response_model=Deleted, responses=errors(401, 403, 404, 422, 503))
async def delete_gallery(request: Request, gallery: GalleryName) -> Deleted:
    authorize(request, gallery, write=True)
    await core_of(request).galleries.delete_gallery(gallery)
    return Deleted()


@router.get("/v1/galleries/{gallery}/export", response_class=StreamingResponse, responses=EXPORT)
async def export_gallery(request: Request, gallery: GalleryName) -> StreamingResponse:
    """Every subject, its metadata and faces (box, embedding, thumbnail) and the embedder, as JSON Lines, streamed:
    a backup, or the way to another store (docs/bulk.md)."""
    authorize(request, gallery, write=False)
    core = core_of(request)
    await core.galleries.get_gallery(gallery)  # 404 before the stream starts
    return StreamingResponse(iterate_in_threadpool(core.transfer.export_lines(gallery)),
                             media_type="application/x-ndjson",
                             headers={"Content-Disposition": f'attachment; filename="{gallery}.jsonl"'})


@router.post("/v1/galleries/{gallery}/import", response_model=ImportOut,
             responses=errors(400, 401, 403, 409, 413, 422, 503))
async def import_gallery(request: Request, gallery: GalleryName,
                         file: UploadFile | None = File(None, description="an export (JSON Lines), whole or a run of "
                                                                          "its subject lines after its header")
                         ) -> ImportOut:
    """Import an export into a new or existing gallery, refusing one made by another embedder (409); importing the
    same file again adds nothing twice."""
    authorize(request, gallery, write=True)
    if file is None:
        raise InvalidParameter("file: an export is required", code="missing_field")
    result = await to_thread.run_sync(core_of(request).transfer.import_file, gallery, file.file)
    return ImportOut(gallery=gallery, subjects=result.subjects, faces_added=result.faces_added,
                     faces_existing=result.faces_existing)


@router.get("/v1/galleries/{gallery}/subjects", response_model=SubjectPage,
            responses=errors(401, 403, 404, 422, 503))
async def list_subjects(
    request: Request,
    gallery: GalleryName,
    cursor: str | None = Query(None, max_length=128, description="next_cursor of the previous page"),
    limit: int = Query(100, ge=1, le=MAX_COUNT, description="page size, at most page_size_max"),
    q: str | None = Query(None, max_length=128, description="only subjects whose id or name contains this, ignoring "
                                                            "case (the cursor pages through the matches)"),
) -> SubjectPage:
    authorize(request, gallery, write=False)
    subjects, next_cursor = await core_of(request).galleries.list_subjects(gallery, cursor, limit, q)
    return SubjectPage(subjects=[SubjectOut.of(s) for s in subjects], next_cursor=next_cursor)


@router.get("/v1/galleries/{gallery}/subjects/{subject_id}", response_model=SubjectOut,
            responses=errors(401, 403, 404, 422, 503))
async def get_subject(request: Request, gallery: GalleryName, subject_id: SubjectId) -> SubjectOut:
    authorize(request, gallery, write=False)
    return SubjectOut.of(await core_of(request).galleries.require_subject(gallery, subject_id), with_faces=True)


@router.patch("/v1/galleries/{gallery}/subjects/{subject_id}", response_model=SubjectOut,
              responses=errors(400, 401, 403, 404, 413, 422, 503))
async def update_subject(request: Request, gallery: GalleryName, subject_id: SubjectId,
                         patch: SubjectPatch = Body(...)) -> SubjectOut:
    authorize(request, gallery, write=True)
    subject = await core_of(request).galleries.update_subject(gallery, subject_id, patch.name, patch.metadata)
    return SubjectOut.of(subject, with_faces=True)


@router.delete("/v1/galleries/{gallery}/subjects/{subject_id}", response_model=Deleted,
               responses=errors(401, 403, 404, 422, 503))
async def delete_subject(request: Request, gallery: GalleryName, subject_id: SubjectId) -> Deleted:
    authorize(request, gallery, write=True)
    await core_of(request).galleries.delete_subject(gallery, subject_id)
    return Deleted()


@router.get("/v1/galleries/{gallery}/subjects/{subject_id}/faces/{face_id}/thumbnail", response_class=Response,
            responses=THUMBNAIL)
async def face_thumbnail(request: Request, gallery: GalleryName, subject_id: SubjectId, face_id: FaceId) -> Response:
    """The face's aligned crop as it was enrolled (kept while `ANYFACE_THUMBNAILS` is on)."""
    authorize(request, gallery, write=False)
    jpeg = await core_of(request).galleries.thumbnail(gallery, subject_id, face_id)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@router.delete("/v1/galleries/{gallery}/subjects/{subject_id}/faces/{face_id}", response_model=Deleted,
               responses=errors(401, 403, 404, 422, 503))
async def delete_face(request: Request, gallery: GalleryName, subject_id: SubjectId, face_id: FaceId) -> Deleted:
    authorize(request, gallery, write=True)
    await core_of(request).galleries.delete_face(gallery, subject_id, face_id)
    return Deleted()
