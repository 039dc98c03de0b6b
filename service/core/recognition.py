"""Detect, verify (1:1) and identify (1:N): the recognition use cases, without HTTP.

Every method takes photos as `ImageSource`s and answers domain objects or raises `service.errors` exceptions;
thresholds default to the calibrated ones (`thresholds.Thresholds`), and the main face of a photo is the most
prominent one (`face_path.rank_by_prominence`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

import numpy as np
from anyio import to_thread

from service import metrics
from service.core.face_path import AnalyzedFace, AnalyzedImage, FaceFilter
from service.core.galleries import Galleries
from service.core.inputs import FilterOverrides, ImageSource
from service.core.pipeline import FacePipeline
from service.core.quality import require_quality, shown
from service.core.thresholds import Thresholds
from service.errors import InvalidParameter, NoFace
from service.gallery.index import Hit
from service.metrics import stage
from service.settings import Settings


@dataclass(frozen=True)
class Verification:
    similarity: float
    threshold: float
    face_a: AnalyzedFace
    face_b: AnalyzedFace | None = None  # photo against photo
    gallery: str | None = None  # photo against an enrolled subject
    subject_id: str | None = None
    subject_name: str | None = None

    @property
    def match(self) -> bool:
        return self.similarity >= self.threshold


@dataclass(frozen=True)
class Candidate:
    subject_id: str
    name: str | None
    similarity: float
    face_id: int


@dataclass(frozen=True)
class IdentifiedFace:
    face: AnalyzedFace
    candidates: list[Candidate]  # above the threshold, best first; empty: unknown (or not searched)
    skipped: str | None = None  # why the face was not searched: "low_quality" (below min_quality, all_faces only)


@dataclass(frozen=True)
class Identification:
    gallery: str
    threshold: float
    top_k: int
    faces: list[IdentifiedFace]


class Recognition:
    def __init__(self, settings: Settings, pipeline: FacePipeline, galleries: Galleries,
                 thresholds: Thresholds) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.galleries = galleries
        self.thresholds = thresholds

    def face_filter(self, overrides: FilterOverrides | None = None) -> FaceFilter:
        o = overrides or FilterOverrides()
        return FaceFilter.of(self.settings.detection, o.min_face_size, o.score_threshold, o.max_faces)

    def min_quality(self, overrides: FilterOverrides | None = None) -> float:
        """The request's `min_quality`, else the configured one."""
        requested = (overrides or FilterOverrides()).min_quality
        return self.settings.min_quality if requested is None else requested

    async def _analyze(self, image: ImageSource, flt: FaceFilter, operation: str, embed: bool = True
                       ) -> AnalyzedImage:
        result = await self.pipeline.analyze(await image.read(), image.field, flt, embed=embed)
        metrics.FACES_PER_REQUEST.labels(operation).observe(len(result.faces))
        return result

    async def detect(self, image: ImageSource, overrides: FilterOverrides | None = None) -> AnalyzedImage:
        """Every face of a photo (box, landmarks, score, size), the main face first; nothing is embedded."""
        return await self._analyze(image, self.face_filter(overrides), "detect", embed=False)

    async def verify_photos(self, image_a: ImageSource, image_b: ImageSource, threshold: float | None = None,
                            overrides: FilterOverrides | None = None) -> Verification:
        """Are the main faces of two photos the same person?"""
        flt = self.face_filter(overrides)
        data_a, data_b = await image_a.read(), await image_b.read()
        a, b = await asyncio.gather(self.pipeline.analyze(data_a, image_a.field, flt),
                                    self.pipeline.analyze(data_b, image_b.field, flt))
        for result in (a, b):
            metrics.FACES_PER_REQUEST.labels("verify").observe(len(result.faces))
        face_a, face_b = a.main_face(image_a.field), b.main_face(image_b.field)
        require_quality(face_a.quality, self.min_quality(overrides), image_a.field)
        require_quality(face_b.quality, self.min_quality(overrides), image_b.field)
        similarity = float(np.dot(face_a.embedding, face_b.embedding))  # type: ignore[arg-type]
        return Verification(round(similarity, 6), self._threshold(threshold, self.thresholds.verify), face_a,
                            face_b=face_b)

    async def verify_subject(self, image: ImageSource, gallery: str, subject_id: str,
                             threshold: float | None = None, overrides: FilterOverrides | None = None
                             ) -> Verification:
        """Is the main face of a photo the enrolled subject? Its best match among the subject's faces."""
        subject = await self.galleries.require_subject(gallery, subject_id, with_faces=False)
        await self.galleries.require_searchable(gallery)
        probe = await self._analyze(image, self.face_filter(overrides), "verify")
        face = probe.main_face(image.field)
        require_quality(face.quality, self.min_quality(overrides), image.field)

        def compare() -> float:
            with stage("search"):
                enrolled = self.galleries.subject_embeddings(gallery, subject_id)
                return float((enrolled @ face.embedding).max()) if len(enrolled) else -1.0

        similarity = await to_thread.run_sync(compare)
        return Verification(round(similarity, 6), self._threshold(threshold, self.thresholds.verify), face,
                            gallery=gallery, subject_id=subject_id, subject_name=subject.name)

    async def identify(self, image: ImageSource, gallery: str, top_k: int = 5, threshold: float | None = None,
                       all_faces: bool = False, overrides: FilterOverrides | None = None) -> Identification:
        """Who is this? The gallery's best subjects above the threshold for the main face (or every face).

        A main face below `min_quality` is refused (`LowQuality`); with `all_faces`, faces below it are not
        searched and come back with no candidates and `skipped="low_quality"`."""
        if top_k > self.settings.max_top_k:
            raise InvalidParameter(f"top_k: at most {self.settings.max_top_k}")
        await self.galleries.require_searchable(gallery)
        thr = self._threshold(threshold, self.thresholds.identify)
        o = overrides or FilterOverrides()
        flt = self.face_filter(replace(o, max_faces=o.max_faces if all_faces else 1))
        minimum = self.min_quality(o)
        result = await self._analyze(image, flt, "identify")
        if not result.faces:
            raise NoFace(f"{image.field}: no face found in the image")
        faces = result.faces if all_faces else result.faces[:1]
        if not all_faces:
            require_quality(faces[0].quality, minimum, image.field)
        searched = [f for f in faces if shown(f.quality) >= minimum]
        hits: list[list[Hit]] = []
        names: dict[str, str | None] = {}
        if searched:
            embeddings = np.stack([f.embedding for f in searched])  # type: ignore[misc]
            hits, names = await to_thread.run_sync(self.galleries.search, gallery, embeddings, top_k, thr)
        found = {id(face): face_hits for face, face_hits in zip(searched, hits, strict=True)}
        return Identification(gallery, thr, top_k, [
            IdentifiedFace(face, [Candidate(h.subject_id, names.get(h.subject_id), round(h.similarity, 6), h.face_id)
                                  for h in found[id(face)]])
            if id(face) in found else IdentifiedFace(face, [], skipped="low_quality")
            for face in faces
        ])

    @staticmethod
    def _threshold(requested: float | None, default: float) -> float:
        return default if requested is None else requested
