"""Batch verification: one photo against many (other photos, or the enrolled faces of subjects), or many pairs of
photos, in one request. Each photo is analysed and embedded once, however many comparisons it is in.

A photo of the batch that cannot be compared (no face, a quality below `min_quality`, not an image) is answered
with its error in its place; the other comparisons go on. A subject that does not exist, or sits in a gallery
filled by another embedder, gets its error in its place too. Only the probe's own problem refuses the request,
since no comparison is left without it. Each comparison's similarity is the one `POST /v1/verify` answers for
the same two photos (a subject: its best-matching enrolled face).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from anyio import to_thread

from service.core.face_path import AnalyzedFace
from service.core.inputs import FilterOverrides, ImageSource
from service.core.quality import require_quality
from service.core.recognition import Recognition
from service.errors import InvalidParameter, ServiceError


@dataclass(frozen=True)
class PhotoOutcome:
    """The main face of one photo of the batch, or why there is none to compare."""

    face: AnalyzedFace | None
    error: ServiceError | None = None


@dataclass(frozen=True)
class Compared:
    similarity: float | None  # None: not compared (`error` says why)
    error: ServiceError | None = None
    name: str | None = None  # a subject's name
    faces: tuple[tuple[int, float], ...] = ()  # a subject: (face id, similarity) of each enrolled face


@dataclass(frozen=True)
class BatchVerification:
    threshold: float
    probe: AnalyzedFace | None
    photos: list[PhotoOutcome]  # one per photo of the batch, in order
    against_photos: list[Compared]  # probe mode: the probe against each photo
    against_subjects: list[Compared]  # probe mode: the probe against each subject
    pairs: list[Compared]  # pairs mode: one per pair


class BatchVerifier:
    def __init__(self, recognition: Recognition) -> None:
        self.recognition = recognition
        self.settings = recognition.settings

    async def _outcome(self, image: ImageSource, overrides: FilterOverrides | None) -> PhotoOutcome:
        try:
            face = await self._main_face(image, overrides)
        except ServiceError as exc:
            if exc.code in ("overloaded", "backend_unavailable", "store_unavailable"):
                raise  # the service's trouble, not the photo's: the request is refused
            return PhotoOutcome(None, exc)
        return PhotoOutcome(face)

    async def _main_face(self, image: ImageSource, overrides: FilterOverrides | None) -> AnalyzedFace:
        r = self.recognition
        result = await r.pipeline.analyze(await image.read(), image.field, r.face_filter(overrides))
        face = result.main_face(image.field)
        require_quality(face.quality, r.min_quality(overrides), image.field)
        return face

    def _check(self, photos: int, subjects: int, pairs: int) -> None:
        s = self.settings
        for what, count, limit in (("photos", photos, s.max_batch_photos), ("subjects", subjects, s.max_batch_subjects),
                                   ("pairs", pairs, s.max_batch_pairs)):
            if count > limit:
                raise InvalidParameter(f"{what}: at most {limit} per request", code="too_many_images"
                                       if what == "photos" else "invalid_parameter")

    async def verify(self, probe: ImageSource | None, photos: Sequence[ImageSource],
                     subjects: Sequence[tuple[str, str]], pairs: Sequence[tuple[int, int]],
                     threshold: float | None = None, overrides: FilterOverrides | None = None) -> BatchVerification:
        self._check(len(photos), len(subjects), len(pairs))
        if probe is None:
            if subjects or not pairs:
                raise InvalidParameter("send image (the probe) with photos and/or subjects, or photos with pairs",
                                       code="missing_field")
        elif pairs:
            raise InvalidParameter("pairs compare photos with each other: send them without image",
                                   code="invalid_parameter")
        elif not photos and not subjects:
            raise InvalidParameter("send photos and/or subjects to compare image with", code="missing_field")
        for a, b in pairs:
            if not (0 <= a < len(photos) and 0 <= b < len(photos)):
                raise InvalidParameter(f"pairs: [{a}, {b}] names a photo beyond the {len(photos)} sent")
        thr = threshold if threshold is not None else self.recognition.thresholds.verify
        probe_face = await self._main_face(probe, overrides) if probe is not None else None
        outcomes = list(await asyncio.gather(*(self._outcome(p, overrides) for p in photos)))

        def against(face: AnalyzedFace, other: PhotoOutcome) -> Compared:
            if other.face is None:
                return Compared(None, other.error)
            return Compared(round(float(np.dot(face.embedding, other.face.embedding)), 6))  # type: ignore[arg-type]

        against_photos = [against(probe_face, o) for o in outcomes] if probe_face is not None else []
        against_subjects = [await self._subject(probe_face, g, s) for g, s in subjects] if probe_face else []
        compared_pairs = []
        for a, b in pairs:
            first, second = outcomes[a], outcomes[b]
            compared_pairs.append(against(first.face, second) if first.face is not None
                                  else Compared(None, first.error))
        return BatchVerification(thr, probe_face, outcomes, against_photos, against_subjects, compared_pairs)

    async def _subject(self, face: AnalyzedFace, gallery: str, subject_id: str) -> Compared:
        galleries = self.recognition.galleries
        try:
            subject = await galleries.require_subject(gallery, subject_id, with_faces=False)
            await galleries.require_searchable(gallery)
        except ServiceError as exc:
            if exc.code in ("store_unavailable", "storage_full"):
                raise
            return Compared(None, exc)

        def each() -> tuple[tuple[int, float], ...]:
            stored = galleries.manager.store.subject_faces(gallery, subject_id)
            return tuple((f.record.face_id, round(float(f.embedding @ face.embedding), 6)) for f in stored)

        faces = await to_thread.run_sync(each)
        best = max((s for _, s in faces), default=-1.0)
        return Compared(best, name=subject.name, faces=faces)
