"""Response models: what clients read, and what OpenAPI at /docs shows."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from service.core.face_path import AnalyzedFace
from service.core.galleries import GalleryView
from service.core.metadata import UnreadableMetadata
from service.core.quality import shown
from service.core.recognition import Identification, Verification
from service.gallery.store import FaceRecord, Subject


class Box(BaseModel):
    x1: float
    y1: float
    x2: float
    y2: float


class FaceOut(BaseModel):
    box: Box
    landmarks: list[tuple[float, float]] = Field(description="left eye, right eye, nose, left and right mouth corner")
    score: float
    size: float = Field(description="larger side of the box in source pixels: the resolution indicator")
    resolution: int | None = Field(None, description="input resolution of the embedder branch this face is (detect: "
                                                     "would be) embedded by, chosen by its size")
    branch: str | None = Field(None, description="name of that embedder branch")
    quality: float = Field(
        ge=0, le=1, description="how well this face can be expected to match its own identity, 0 to 1: about the "
        "chance that it scores at or above the verify threshold against a typical clean photo of the same person "
        "(detector score, landmark agreement, sharpness, size, pose; docs/quality.md). Enrolment and search refuse "
        "faces below `min_quality`")

    @classmethod
    def of(cls, face: AnalyzedFace) -> FaceOut:
        f = face.face
        return cls(
            box=Box(x1=round(float(f.box[0]), 2), y1=round(float(f.box[1]), 2),
                    x2=round(float(f.box[2]), 2), y2=round(float(f.box[3]), 2)),
            landmarks=[(round(float(x), 2), round(float(y), 2)) for x, y in f.landmarks],
            score=round(f.score, 4),
            size=round(f.size, 2),
            resolution=face.resolution,
            branch=face.branch,
            quality=shown(face.quality),
        )


class ImageSize(BaseModel):
    width: int
    height: int


class DetectResponse(BaseModel):
    image: ImageSize
    faces: list[FaceOut]
    rotation: int = Field(0, description="clockwise degrees the photo was turned by, as the rotation search found "
                                         "(`ANYFACE_ROTATION_SEARCH`); 0 when its faces were found upright. "
                                         "Coordinates are always in the photo as sent")


class SubjectRef(BaseModel):
    gallery: str
    subject_id: str
    name: str | None


class VerifyResponse(BaseModel):
    similarity: float
    threshold: float
    match: bool
    face_a: FaceOut
    face_b: FaceOut | None = None
    subject: SubjectRef | None = None

    @classmethod
    def of(cls, v: Verification) -> VerifyResponse:
        subject = None
        if v.gallery is not None and v.subject_id is not None:
            subject = SubjectRef(gallery=v.gallery, subject_id=v.subject_id, name=v.subject_name)
        return cls(similarity=v.similarity, threshold=v.threshold, match=v.match, face_a=FaceOut.of(v.face_a),
                   face_b=FaceOut.of(v.face_b) if v.face_b is not None else None, subject=subject)


class ErrorOut(BaseModel):
    code: str
    message: str


class PhotoResult(BaseModel):
    """One photo of a batch: its main face, or why it has none to compare."""

    face: FaceOut | None = None
    error: ErrorOut | None = None


class ComparisonOut(BaseModel):
    similarity: float | None = Field(None, description="null when not compared: `error` says why")
    match: bool | None = None
    error: ErrorOut | None = None


class FaceSimilarity(BaseModel):
    face_id: int
    similarity: float


class SubjectComparisonOut(ComparisonOut):
    """`similarity` is the best of the subject's faces (as verify-against-subject answers); `faces` has each."""

    gallery: str
    subject_id: str
    name: str | None = None
    faces: list[FaceSimilarity] = Field(default_factory=list, description="every enrolled face's similarity")


class PairOut(ComparisonOut):
    a: int = Field(description="index into photos")
    b: int


class BatchVerifyResponse(BaseModel):
    threshold: float
    probe: FaceOut | None = Field(None, description="the main face of `image` (probe mode)")
    photos: list[PhotoResult] = Field(description="one per photo sent, in order")
    against_photos: list[ComparisonOut] = Field(description="probe mode: the probe against each photo, in order")
    against_subjects: list[SubjectComparisonOut] = Field(description="probe mode: against each subject, in order")
    pairs: list[PairOut] = Field(description="pairs mode: one per pair, in order")


class Candidate(BaseModel):
    subject_id: str
    name: str | None
    similarity: float
    face_id: int


class IdentifiedFace(BaseModel):
    face: FaceOut
    candidates: list[Candidate]
    skipped: Literal["low_quality"] | None = Field(
        None, description="why this face was not searched (`candidates` is then empty): `low_quality`, its quality "
        "is below min_quality (only with all_faces; a main face below it is refused with 422 `low_quality`)")


class IdentifyResponse(BaseModel):
    gallery: str
    threshold: float
    top_k: int
    faces: list[IdentifiedFace]

    @classmethod
    def of(cls, result: Identification) -> IdentifyResponse:
        return cls(gallery=result.gallery, threshold=result.threshold, top_k=result.top_k, faces=[
            IdentifiedFace(face=FaceOut.of(f.face), candidates=[
                Candidate(subject_id=c.subject_id, name=c.name, similarity=c.similarity, face_id=c.face_id)
                for c in f.candidates], skipped=f.skipped)
            for f in result.faces
        ])


class FaceRecordOut(BaseModel):
    face_id: int
    box: list[float] | None
    branch: str | None
    created_at: float
    quality: float | None = Field(
        None, description="the face's quality when it was enrolled: in the enrolment answer only (not stored)")
    source: str | None = Field(None, description="the id of the photo it was enrolled from, when one was sent")
    duplicate: bool = Field(False, description="in an enrolment answer: this photo's source was enrolled for the "
                                               "subject before, so nothing was added for it")

    @classmethod
    def of(cls, record: FaceRecord, quality: float | None = None) -> FaceRecordOut:
        return cls(face_id=record.face_id, box=record.box, branch=record.branch, created_at=record.created_at,
                   quality=quality, source=record.source, duplicate=record.existing)


class SubjectOut(BaseModel):
    gallery: str
    subject_id: str
    name: str | None
    metadata: dict[str, Any]
    metadata_error: str | None = Field(
        None, description="why the stored metadata is not shown (metadata is then {}): it breaks the metadata rules "
        "(written before them, or under larger limits); PATCH new metadata to replace it")
    face_count: int
    first_face_id: int | None = Field(
        None, description="the subject's oldest face: its thumbnail stands for the subject (null without faces)")
    created_at: float
    updated_at: float
    faces: list[FaceRecordOut] | None = None

    @classmethod
    def of(cls, subject: Subject, with_faces: bool = False) -> SubjectOut:
        unreadable = subject.metadata.reason if isinstance(subject.metadata, UnreadableMetadata) else None
        return cls(
            gallery=subject.gallery, subject_id=subject.subject_id, name=subject.name, metadata=subject.metadata,
            metadata_error=unreadable, face_count=subject.face_count, first_face_id=subject.first_face_id,
            created_at=subject.created_at,
            updated_at=subject.updated_at, faces=[FaceRecordOut.of(f) for f in subject.faces] if with_faces else None,
        )


class EnrollResponse(BaseModel):
    subject: SubjectOut
    faces: list[FaceRecordOut]


class GalleryOut(BaseModel):
    name: str
    subjects: int
    faces: int
    created_at: float
    index_type: str = Field(description="the gallery's index: flat, hnsw or ivfpq in this process (FAISS), or "
                            "milvus-<type> when Milvus is the vector engine")
    index_params: dict[str, Any] = Field(
        default_factory=dict, description="the index's build and search parameters (FAISS: from the settings; "
        "Milvus: the collection's index as Milvus reports it, and the search parameters)")
    indexed_faces: int
    embedder: str | None = Field(
        None, description="the embedder that filled the gallery (`model@checksum`); only that embedder may search "
        "or extend it. null: a gallery made before embedders were recorded (the default trunk's)")

    @classmethod
    def of(cls, view: GalleryView) -> GalleryOut:
        info = view.info
        return cls(name=info.name, subjects=info.subjects, faces=info.faces, created_at=info.created_at,
                   index_type=view.index_type, index_params=view.index_params, indexed_faces=view.indexed_faces,
                   embedder=info.embedder)


class GalleryList(BaseModel):
    galleries: list[GalleryOut]


class SubjectPage(BaseModel):
    subjects: list[SubjectOut]
    next_cursor: str | None


class SubjectPatch(BaseModel):
    """Each field that is given replaces the stored one. The name and metadata rules (lengths, depth, size, values)
    are the core's, the same as for enrolment (`core/metadata.py`, `ANYFACE_MAX_NAME_CHARS`,
    `ANYFACE_MAX_METADATA_BYTES`, `ANYFACE_MAX_METADATA_DEPTH`)."""

    name: str | None = Field(None, description="at most max_name_chars (256) characters")
    metadata: dict[str, Any] | None = Field(
        None, description="a JSON object: at most max_metadata_bytes (16 KiB) as compact JSON, max_metadata_depth "
        "(16) levels deep, finite numbers")


class KeyOut(BaseModel):
    """What the calling key may do: the console shows and enables only that."""

    auth_required: bool = Field(description="whether this service checks API keys (false: every call is allowed)")
    name: str | None = Field(None, description="the key's name from the key settings")
    read_only: bool
    galleries: list[str] | None = Field(description="the galleries it may touch; null: every gallery")
    metrics: bool = Field(description="whether it may read /metrics (a key for every gallery)")


class ImportOut(BaseModel):
    gallery: str
    subjects: int = Field(description="subject lines imported")
    faces_added: int
    faces_existing: int = Field(description="faces the gallery had already (the same source): not added again")


class Deleted(BaseModel):
    deleted: bool = True
