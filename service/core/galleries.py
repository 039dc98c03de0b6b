"""Enrolment and gallery management, without HTTP: galleries, subjects and faces.

Writes go through `GalleryManager` (store first, then the vector engine); reads go to the store. A missing
gallery or subject is told apart in one place (`require_gallery`, `require_subject`): a subject that does not
exist in a gallery that does not exist either is `GalleryNotFound`.

A gallery belongs to the embedder that filled it (recorded by the store with its first face): searching it,
verifying against its subjects or enrolling into it with another embedder is `EmbedderMismatch`.

A subject's name and metadata follow one rule (`metadata.py`), checked before anything is written, for enrolment
and update alike; every subject this module answers has gone through `metadata.presentable`, so a response can be
built from whatever the store holds.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np
from anyio import to_thread

from service import metrics
from service.core.face_path import FaceFilter
from service.core.inputs import FilterOverrides, ImageSource
from service.core.metadata import SubjectLimits, check_metadata, check_name, presentable, shown_name
from service.core.pipeline import FacePipeline
from service.core.quality import require_quality, shown
from service.errors import (
    EmbedderMismatch,
    FaceNotFound,
    GalleryNotFound,
    InvalidParameter,
    MultipleFaces,
    NoFace,
    SubjectNotFound,
    ThumbnailNotFound,
)
from service.gallery.index import Hit
from service.gallery.manager import GalleryManager
from service.gallery.store import (
    EmbedderCheck,
    EmbedderConflict,
    FaceRecord,
    GalleryInfo,
    GalleryStore,
    NewFace,
    Subject,
)
from service.metrics import stage
from service.settings import Settings

MAX_FACE_ID = 2**63 - 1  # face ids are positive signed 64-bit integers in every store
SUBJECT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")  # the API's subject id rule (api/params.py)
SOURCE_PATTERN = re.compile(r"[\x21-\x7e]{1,128}")  # a photo's id: printable ASCII, no space (a sha256 fits)


def encode_thumbnail(crop: np.ndarray, quality: int) -> bytes:
    """An aligned RGB crop as JPEG bytes."""
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise RuntimeError("could not encode a thumbnail")
    return bytes(jpeg)


def embedder_mismatch(gallery: str, recorded: str | None, current: str) -> EmbedderMismatch:
    filled_by = f"embedder {recorded!r}" if recorded else "the default trunk (before embedders were recorded)"
    return EmbedderMismatch(
        f"gallery {gallery!r} was filled by {filled_by}; this service embeds with {current!r}, whose embeddings "
        "are not comparable. Serve it with the embedder that filled it (ANYFACE_EMBEDDER), or re-embed its "
        f"subjects into a new gallery: python -m service.reembed --gallery {gallery} --into <new gallery> "
        "--photos <folder> (docs/variants.md)")


@dataclass(frozen=True)
class GalleryView:
    """A gallery as the store counts it and as this process's index holds it."""

    info: GalleryInfo
    index_type: str
    indexed_faces: int
    index_params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Enrolment:
    subject: Subject
    faces: list[FaceRecord]
    qualities: list[float | None] = field(default_factory=list)  # of the faces, in order (None: not analysed)
    added: int = 0  # faces written by this enrolment (the others were there already: their source was known)


class Galleries:
    def __init__(self, settings: Settings, manager: GalleryManager, pipeline: FacePipeline,
                 embedder: EmbedderCheck) -> None:
        self.settings = settings
        self.manager = manager
        self.pipeline = pipeline
        self.limits = SubjectLimits.of(settings)
        self.embedder = embedder

    @property
    def _store(self) -> GalleryStore:
        return self.manager.store

    # -- existence ------------------------------------------------------------------------------------------
    async def require_gallery(self, gallery: str) -> None:
        """`GalleryNotFound` unless the gallery exists (in this process's index or in the store)."""
        if not await to_thread.run_sync(self.manager.has_gallery, gallery):
            raise GalleryNotFound(f"gallery {gallery!r} does not exist")

    async def require_writable_by_embedder(self, gallery: str) -> None:
        """`EmbedderMismatch` when the gallery exists and this service's embedder may not extend it (a new
        gallery is fine)."""
        exists, recorded = await to_thread.run_sync(self._store.gallery_embedder, gallery)
        if exists:
            self._require_compatible(gallery, recorded)

    async def require_searchable(self, gallery: str) -> None:
        """`GalleryNotFound` unless the gallery exists, `EmbedderMismatch` unless this service's embedder filled it."""
        exists, recorded = await to_thread.run_sync(self._store.gallery_embedder, gallery)
        if not exists:
            raise GalleryNotFound(f"gallery {gallery!r} does not exist")
        self._require_compatible(gallery, recorded)

    def _require_compatible(self, gallery: str, recorded: str | None) -> None:
        if recorded == self.embedder.name or (recorded is None and self.embedder.extends_unrecorded):
            return
        raise embedder_mismatch(gallery, recorded, self.embedder.name)

    async def require_subject(self, gallery: str, subject_id: str, with_faces: bool = True) -> Subject:
        subject = await to_thread.run_sync(self._store.get_subject, gallery, subject_id, with_faces)
        if subject is None:
            await self._subject_missing(gallery, subject_id)
        return self._shown(subject)  # type: ignore[arg-type]

    def _shown(self, subject: Subject) -> Subject:
        return presentable(subject, self.limits)

    async def _subject_missing(self, gallery: str, subject_id: str) -> None:
        """Raise the right 'not found' for a subject that is not there."""
        await self.require_gallery(gallery)
        raise SubjectNotFound(f"subject {subject_id!r} does not exist in gallery {gallery!r}")

    # -- enrolment ------------------------------------------------------------------------------------------
    async def enroll(self, gallery: str, subject_id: str, images: Sequence[ImageSource], name: str | None = None,
                     metadata: dict[str, Any] | None = None, allow_multiple: bool = False,
                     overrides: FilterOverrides | None = None, sources: Sequence[str] | None = None) -> Enrolment:
        """Create the gallery and subject when new and add one face per photo, all or nothing: every photo is
        checked (exactly one face, or its main face with `allow_multiple`; its quality at least `min_quality`,
        the request's or the configured one), and the name and metadata, before anything is written.

        `sources` (one per image) makes enrolment idempotent: a photo whose source the subject already has is
        neither analysed nor added again; its stored face comes back, marked `existing`."""
        if not images:
            raise InvalidParameter("images: at least one file is required", code="missing_field")
        if len(images) > self.settings.max_images_per_request:
            raise InvalidParameter(f"images: at most {self.settings.max_images_per_request} per request",
                                   code="too_many_images")
        name = check_name(name, self.limits)
        metadata = check_metadata(metadata, self.limits)
        given = self._check_sources(sources, len(images))
        exists, recorded = await to_thread.run_sync(self._store.gallery_embedder, gallery)
        if exists:  # refused before the photos are analysed; the store checks again as it writes
            self._require_compatible(gallery, recorded)
        known: dict[str, FaceRecord] = {}
        if exists and any(given):
            known = await to_thread.run_sync(self._store.find_sources, gallery, subject_id, [s for s in given if s])
        o = overrides or FilterOverrides()
        flt = FaceFilter.of(self.settings.detection, o.min_face_size, o.score_threshold)
        minimum = self.settings.min_quality if o.min_quality is None else o.min_quality
        new_faces: list[NewFace] = []
        qualities: list[float | None] = []
        thumbnail_size = self.settings.thumbnail_size if self.settings.thumbnails else None
        for image, source in zip(images, given, strict=True):
            if source is not None and source in known:
                continue
            result = await self.pipeline.analyze(await image.read(), image.field, flt, thumbnail=thumbnail_size)
            metrics.FACES_PER_REQUEST.labels("enroll").observe(len(result.faces))
            if not result.faces:
                raise NoFace(f"{image.field}: no face found in the image")
            if len(result.faces) > 1 and not allow_multiple:
                raise MultipleFaces(f"{image.field}: {len(result.faces)} faces found; send a photo of one face or "
                                    "set allow_multiple=true to enrol the largest")
            face = result.faces[0]
            require_quality(face.quality, minimum, image.field)
            qualities.append(shown(face.quality))
            thumbnail = (encode_thumbnail(result.thumbnail, self.settings.thumbnail_quality)
                         if result.thumbnail is not None else None)
            new_faces.append(NewFace(face.embedding, [float(v) for v in face.face.box], face.branch,  # type: ignore[arg-type]
                                     thumbnail, source))
        if new_faces or name is not None or metadata is not None:
            try:
                subject, written = await to_thread.run_sync(self.manager.enroll, gallery, subject_id, name, metadata,
                                                            new_faces, self.embedder)
            except EmbedderConflict as exc:
                raise embedder_mismatch(gallery, exc.recorded, self.embedder.name) from exc
        else:  # every photo was enrolled before: nothing to write
            subject, written = await self.require_subject(gallery, subject_id, with_faces=False), []
        if known:  # a retry: make sure what the store has is searchable (an engine write may have failed)
            await to_thread.run_sync(self.manager.ensure_indexed, gallery, [r.face_id for r in known.values()])
        fresh, quality_of = iter(written), iter(qualities)
        records: list[FaceRecord] = []
        shown_qualities: list[float | None] = []
        for source in given:
            if source is not None and source in known:
                records.append(replace(known[source], existing=True))
                shown_qualities.append(None)
            else:
                records.append(next(fresh))
                shown_qualities.append(next(quality_of))
        return Enrolment(self._shown(subject), records, shown_qualities, sum(not r.existing for r in records))

    @staticmethod
    def _check_sources(sources: Sequence[str] | None, count: int) -> list[str | None]:
        if not sources:
            return [None] * count
        if len(sources) != count:
            raise InvalidParameter(f"sources: one per image, in order ({len(sources)} for {count} images)")
        for source in sources:
            if not SOURCE_PATTERN.fullmatch(source):
                raise InvalidParameter("sources: each is 1 to 128 printable ASCII characters without spaces")
        return list(sources)

    # -- queries --------------------------------------------------------------------------------------------
    def _view(self, info: GalleryInfo) -> GalleryView:
        return GalleryView(info, self.manager.index_kind(info.name), self.manager.index_size(info.name),
                           self.manager.index_params(info.name))

    async def list_galleries(self, visible: Callable[[str], bool] | None = None) -> list[GalleryView]:
        """Every gallery (that `visible` lets the caller see)."""
        infos = await to_thread.run_sync(self._store.list_galleries)
        return [self._view(i) for i in infos if visible is None or visible(i.name)]

    async def create_gallery(self, gallery: str) -> tuple[GalleryView, bool]:
        """Create an empty gallery for this service's embedder; the gallery and whether it was created (False: it
        existed already, and is answered as it is)."""
        created = await to_thread.run_sync(self._store.create_gallery, gallery, self.embedder.name)
        return await self.get_gallery(gallery), created

    async def get_gallery(self, gallery: str) -> GalleryView:
        info = await to_thread.run_sync(self._store.get_gallery, gallery)
        if info is None:
            raise GalleryNotFound(f"gallery {gallery!r} does not exist")
        return self._view(info)

    async def list_subjects(self, gallery: str, cursor: str | None, limit: int, query: str | None = None
                            ) -> tuple[list[Subject], str | None]:
        """One page of subjects ordered by id after `cursor` (with `query`: those whose id or name contains it,
        ignoring case), and the next cursor (None at the end)."""
        if not 1 <= limit <= self.settings.page_size_max:
            raise InvalidParameter(f"limit: from 1 to {self.settings.page_size_max}")
        if await to_thread.run_sync(self._store.get_gallery, gallery) is None:
            raise GalleryNotFound(f"gallery {gallery!r} does not exist")

        def page() -> tuple[list[Subject], str | None]:  # checking up to page_size_max metadata: off the event loop
            subjects, next_cursor = self._store.list_subjects(gallery, cursor, limit, query or None)
            return [self._shown(s) for s in subjects], next_cursor

        return await to_thread.run_sync(page)

    async def update_subject(self, gallery: str, subject_id: str, name: str | None,
                             metadata: dict[str, Any] | None) -> Subject:
        """Replace the name and/or the metadata that are given (None leaves a field as it is)."""
        name = check_name(name, self.limits)
        metadata = check_metadata(metadata, self.limits)
        subject = await to_thread.run_sync(self._store.update_subject, gallery, subject_id, name, metadata)
        if subject is None:
            await self._subject_missing(gallery, subject_id)
        return self._shown(subject)  # type: ignore[arg-type]

    async def thumbnail(self, gallery: str, subject_id: str, face_id: int) -> bytes:
        """The JPEG thumbnail of one enrolled face."""
        found, jpeg = (False, None)
        if 1 <= face_id <= MAX_FACE_ID:
            found, jpeg = await to_thread.run_sync(self._store.get_thumbnail, gallery, subject_id, face_id)
        if not found:
            await self.require_subject(gallery, subject_id, with_faces=False)
            raise FaceNotFound(f"face {face_id} does not exist for subject {subject_id!r} in gallery {gallery!r}")
        if jpeg is None:
            raise ThumbnailNotFound(f"face {face_id} was enrolled without a thumbnail (ANYFACE_THUMBNAILS was off, "
                                    "or it predates thumbnails)")
        return jpeg

    # -- deletion -------------------------------------------------------------------------------------------
    async def delete_gallery(self, gallery: str) -> None:
        if not await to_thread.run_sync(self.manager.delete_gallery, gallery):
            raise GalleryNotFound(f"gallery {gallery!r} does not exist")

    async def delete_subject(self, gallery: str, subject_id: str) -> None:
        if not await to_thread.run_sync(self.manager.delete_subject, gallery, subject_id):
            await self._subject_missing(gallery, subject_id)

    async def delete_face(self, gallery: str, subject_id: str, face_id: int) -> None:
        in_range = 1 <= face_id <= MAX_FACE_ID  # no store holds another (SQLite could not even look it up)
        if not (in_range and await to_thread.run_sync(self.manager.delete_face, gallery, subject_id, face_id)):
            await self.require_subject(gallery, subject_id, with_faces=False)
            raise FaceNotFound(f"face {face_id} does not exist for subject {subject_id!r} in gallery {gallery!r}")

    # -- search (called from worker threads) ----------------------------------------------------------------
    def subject_embeddings(self, gallery: str, subject_id: str) -> np.ndarray:
        return self._store.subject_embeddings(gallery, subject_id)

    def search(self, gallery: str, embeddings: np.ndarray, top_k: int, threshold: float
               ) -> tuple[list[list[Hit]], dict[str, str | None]]:
        """For each embedding the gallery's best `top_k` subjects at or above `threshold`, and their names."""
        with stage("search"):
            hits = self.manager.search(gallery, embeddings, top_k)
            kept = [[h for h in face_hits if h.similarity >= threshold] for face_hits in hits]
            names = self._store.subject_names(gallery, sorted({h.subject_id for hs in kept for h in hs}))
        return kept, {subject_id: shown_name(name) for subject_id, name in names.items()}
