"""`POST /v1/verify`: are two faces the same person? Photo against photo, or photo against an enrolled subject.
`POST /v1/verify/batch`: one photo against many photos or subjects, or many pairs, each photo embedded once."""

from __future__ import annotations

import json
import re
from typing import Any

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
from service.api.schemas import (
    BatchVerifyResponse,
    ComparisonOut,
    ErrorOut,
    FaceOut,
    FaceSimilarity,
    PairOut,
    PhotoResult,
    SubjectComparisonOut,
    VerifyResponse,
)
from service.core.batch_verify import Compared
from service.errors import InvalidParameter, ServiceError

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


def _json_list(text: str | None, field: str, limit: int) -> list[Any]:
    if not text:
        return []
    if len(text) > limit:
        raise InvalidParameter(f"{field}: more than {limit} bytes of JSON")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidParameter(f"{field}: not valid JSON ({str(exc)[:120]})") from exc
    if not isinstance(value, list):
        raise InvalidParameter(f"{field}: must be a JSON list")
    return value


def _subjects(text: str | None, limit: int) -> list[tuple[str, str]]:
    found = []
    for item in _json_list(text, "subjects", limit):
        if not (isinstance(item, dict) and isinstance(item.get("gallery"), str)
                and isinstance(item.get("subject_id"), str) and re.fullmatch(GALLERY_PATTERN, item["gallery"])
                and re.fullmatch(SUBJECT_PATTERN, item["subject_id"])):
            raise InvalidParameter('subjects: a list of {"gallery": ..., "subject_id": ...} with valid names')
        found.append((item["gallery"], item["subject_id"]))
    return found


def _pairs(text: str | None, limit: int) -> list[tuple[int, int]]:
    found = []
    for item in _json_list(text, "pairs", limit):
        if not (isinstance(item, list) and len(item) == 2 and all(type(i) is int for i in item)):
            raise InvalidParameter("pairs: a list of [i, j] photo indices")
        found.append((item[0], item[1]))
    return found


def _error(exc: ServiceError | None) -> ErrorOut | None:
    return ErrorOut(code=exc.code, message=exc.message) if exc is not None else None


@router.post("/v1/verify/batch", response_model=BatchVerifyResponse,
             responses=errors(400, 401, 403, 413, 415, 422, 503, low_quality=True))
async def verify_batch(
    request: Request,
    image: UploadFile | None = File(None, description="the probe: compared with every photo and subject"),
    photos: list[UploadFile] | None = File(None, description="photos to compare with the probe, or among "
                                                             "themselves with `pairs` (at most max_batch_photos)"),
    subjects: str | None = Form(None, description='JSON list of {"gallery", "subject_id"}: compare the probe with '
                                                  "each subject's enrolled faces (at most max_batch_subjects)"),
    pairs: str | None = Form(None, description="JSON list of [i, j] indices into photos, without a probe (at most "
                                               "max_batch_pairs)"),
    threshold: float | None = Form(None, ge=-1, le=1, allow_inf_nan=False,
                                   description="cosine similarity; default: calibrated"),
    min_face_size: float | None = Form(None, ge=0, le=MAX_FACE_SIZE, allow_inf_nan=False),
    det_score_threshold: float | None = Form(None, ge=0, le=1, allow_inf_nan=False),
    min_quality: float | None = Form(None, ge=0, le=1, allow_inf_nan=False,
                                     description=MIN_QUALITY_HELP + " (a photo below it is answered with its error)"),
) -> BatchVerifyResponse:
    """One photo against many, or many pairs, in one request: each photo is embedded once."""
    core = core_of(request)
    limit = core.settings.decode.max_image_bytes
    wanted = _subjects(subjects, core.settings.max_json_body_bytes)
    for gallery in {g for g, _ in wanted}:
        authorize(request, gallery, write=False)
    if not wanted:
        authorize(request, None, write=False)
    wanted_pairs = _pairs(pairs, core.settings.max_json_body_bytes)
    result = await core.batch.verify(
        UploadImage(image, limit, "image") if image is not None else None,
        [UploadImage(p, limit, f"photos[{i}]") for i, p in enumerate(photos or [])], wanted, wanted_pairs, threshold,
        overrides(min_face_size, det_score_threshold, min_quality=min_quality))

    def compared(c: Compared) -> dict[str, Any]:
        return {"similarity": c.similarity, "error": _error(c.error),
                "match": None if c.similarity is None else c.similarity >= result.threshold}

    return BatchVerifyResponse(
        threshold=result.threshold, probe=FaceOut.of(result.probe) if result.probe is not None else None,
        photos=[PhotoResult(face=FaceOut.of(o.face) if o.face is not None else None, error=_error(o.error))
                for o in result.photos],
        against_photos=[ComparisonOut(**compared(c)) for c in result.against_photos],
        against_subjects=[SubjectComparisonOut(gallery=g, subject_id=s, name=c.name, **compared(c),
                                               faces=[FaceSimilarity(face_id=i, similarity=v) for i, v in c.faces])
                          for (g, s), c in zip(wanted, result.against_subjects, strict=True)],
        pairs=[PairOut(a=a, b=b, **compared(c)) for (a, b), c in zip(wanted_pairs, result.pairs, strict=True)])
