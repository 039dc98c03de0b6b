"""Bulk enrolment jobs: a zip of subject folders enrolled in the background (`core/jobs.py`), its progress and a
result per photo."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Path, Query, Request, UploadFile
from pydantic import BaseModel, Field

from service.api.auth import authorize
from service.api.context import core_of
from service.api.openapi import errors
from service.api.params import GalleryName
from service.core.jobs import JOB_ID_PATTERN, JobView
from service.errors import InvalidParameter

router = APIRouter(tags=["jobs"])
JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="the job id that submission answered")]


class JobOut(BaseModel):
    job_id: str
    gallery: str
    status: str = Field(description="queued, running, done, or failed (`error` says why)")
    created_at: float
    finished_at: float | None
    photos: int = Field(description="files in the archive")
    handled: int = Field(description="photos with a result so far")
    enrolled: int
    skipped: int = Field(description="already enrolled for the subject (the same photo): not added again")
    refused: int
    error: str | None = None

    @classmethod
    def of(cls, view: JobView) -> JobOut:
        return cls(**view.__dict__)


class JobResult(BaseModel):
    index: int = Field(description="the file's position in the archive")
    name: str = Field(description="its name in the archive")
    subject_id: str | None
    status: str = Field(description="enrolled, skipped (already enrolled) or refused")
    face_id: int | None = None
    code: str | None = Field(None, description="refused: the error code, as the enrolment API answers it, or "
                                               "`unsafe_path`, `bad_layout`, `invalid_subject_id`")
    message: str | None = None


class JobResults(BaseModel):
    results: list[JobResult]
    next_offset: int | None


@router.post("/v1/galleries/{gallery}/jobs", status_code=202, response_model=JobOut,
             responses=errors(400, 401, 403, 409, 413, 422, 503))
async def submit_job(
    request: Request,
    gallery: GalleryName,
    archive: UploadFile | None = File(None, description="a zip with one folder per subject (named by its id) "
                                                        "holding its photos; at most max_archive_bytes"),
    allow_multiple: bool = Form(False, description="enrol the main face of photos that show several"),
) -> JobOut:
    """Enrol a whole archive in the background: answered at once with the job's id; `GET /v1/jobs/{job_id}`
    follows it. The job survives a restart, and adds each photo once."""
    authorize(request, gallery, write=True)
    if archive is None:
        raise InvalidParameter("archive: a zip file is required", code="missing_field")
    return JobOut.of(await core_of(request).jobs.submit(gallery, archive.file, allow_multiple))


@router.get("/v1/jobs/{job_id}", response_model=JobOut, responses=errors(401, 403, 404, 422, 503))
async def get_job(request: Request, job_id: JobId) -> JobOut:
    jobs = core_of(request).jobs
    authorize(request, await jobs.gallery_of(job_id), write=False)
    return JobOut.of(await jobs.view(job_id))


@router.get("/v1/jobs/{job_id}/results", response_model=JobResults, responses=errors(401, 403, 404, 422, 503))
async def job_results(request: Request, job_id: JobId, offset: int = Query(0, ge=0, le=2**31 - 1),
                      limit: int = Query(100, ge=1, le=1000)) -> JobResults:
    """The photos handled so far, in the order they were handled."""
    jobs = core_of(request).jobs
    authorize(request, await jobs.gallery_of(job_id), write=False)
    page: list[dict[str, Any]] = await jobs.results(job_id, offset, limit)
    more = len(page) == limit
    return JobResults(results=[JobResult(**r) for r in page], next_offset=offset + limit if more else None)
