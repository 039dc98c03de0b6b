"""The gallery store interface and its records.

A store holds galleries, subjects and face embeddings durably and keeps a change feed (a monotonically increasing
sequence of face additions and removals) so that every process's in-memory FAISS index can follow it. SQLite is the
embedded default (`sqlite_store.py`); Redis serves several replicas (`redis_store.py`).
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np


@dataclass(frozen=True)
class GalleryInfo:
    name: str
    subjects: int
    faces: int
    created_at: float
    embedder: str | None = None  # the embedder that filled it (`name@checksum`); None: made before it was recorded


@dataclass(frozen=True)
class FaceRecord:
    face_id: int
    gallery: str
    subject_id: str
    box: list[float] | None
    branch: str | None
    created_at: float
    source: str | None = None  # the client's id of the photo it came from (e.g. its sha256), when given
    existing: bool = False  # in an `add_faces` answer: the subject had a face of this source already (not added)


@dataclass(frozen=True)
class Subject:
    gallery: str
    subject_id: str
    name: str | None
    metadata: dict[str, Any]
    created_at: float
    updated_at: float
    faces: list[FaceRecord] = field(default_factory=list)
    face_count: int = 0
    first_face_id: int | None = None  # the subject's oldest face (its thumbnail stands for the subject)


@dataclass(frozen=True)
class NewFace:
    """A face about to be enrolled."""

    embedding: np.ndarray
    box: list[float] | None = None
    branch: str | None = None
    thumbnail: bytes | None = None  # a small JPEG of the aligned face, kept with it (`ANYFACE_THUMBNAILS`)
    source: str | None = None  # the photo's id: a subject holds at most one face per source (idempotent enrolment)


@dataclass(frozen=True)
class Change:
    """One entry of the change feed: a face became searchable or stopped being so.

    `update` (a subject's name or metadata changed; `face_id` is 0) has no effect on an index; only stores that
    publish renames (Redis) write it, and followers ignore it.
    """

    seq: int
    kind: Literal["add", "remove", "update"]
    gallery: str
    face_id: int
    subject_id: str


@dataclass(frozen=True)
class IndexedFace:
    gallery: str
    face_id: int
    subject_id: str
    embedding: np.ndarray


@dataclass(frozen=True)
class StoredFace:
    """One face as a gallery export carries it: its record, embedding and thumbnail."""

    record: FaceRecord
    embedding: np.ndarray
    thumbnail: bytes | None


@dataclass(frozen=True)
class EmbedderCheck:
    """The embedder of a write: `name` (`model@checksum`) and whether it may extend unrecorded galleries."""

    name: str
    extends_unrecorded: bool


class EmbedderConflict(RuntimeError):
    """A write into a gallery filled by another embedder: nothing was written. `recorded` is the gallery's
    embedder (None: a gallery made before the embedder was recorded, which only the trunk may extend)."""

    def __init__(self, gallery: str, recorded: str | None) -> None:
        super().__init__(f"gallery {gallery!r} was filled by embedder {recorded or 'unrecorded'}")
        self.gallery, self.recorded = gallery, recorded


class StoreUnavailable(RuntimeError):
    """The store cannot be reached; the request may be retried later."""


class VectorEngineUnavailable(StoreUnavailable):
    """The vector engine that indexes the galleries (Milvus) cannot be reached or refused the call; the request may
    be retried."""


class StoreFull(StoreUnavailable):
    """The store has no room for a write (disk full, SQLite's `max_page_count`, Redis `maxmemory`): nothing of that
    write was kept, reads still work, and writes work again once space is freed."""


class FeedTruncated(RuntimeError):
    """The change feed no longer holds every change after the requested sequence number (it was trimmed, or the
    store was reset): the follower must rebuild its index from a snapshot (`FaissGalleryManager.load`)."""


class GalleryStore(ABC):
    """Durable galleries. Every write is committed before the call returns.

    A write that fails for lack of space raises `StoreFull` and marks the store `out_of_space`; the next write
    that commits, or a `probe_write` that succeeds (`writable`), clears the mark."""

    out_of_space: bool = False

    @abstractmethod
    def ping(self) -> None:
        """Raise `StoreUnavailable` when the store cannot serve requests."""

    @abstractmethod
    def probe_write(self) -> None:
        """Commit a small write that leaves no data behind (about one face's worth); raise `StoreFull` when there
        is no room for it, `StoreUnavailable` when the store cannot be reached."""

    def writable(self) -> bool:
        """Whether writes can be committed: True at once while no write has failed for lack of space; after one
        has, True again only when a `probe_write` commits (so this is cheap unless the store is full)."""
        if not self.out_of_space:
            return True
        try:
            self.probe_write()
        except StoreUnavailable:
            return False
        self.out_of_space = False
        return True

    @abstractmethod
    def list_galleries(self) -> list[GalleryInfo]: ...

    @abstractmethod
    def get_gallery(self, gallery: str) -> GalleryInfo | None: ...

    @abstractmethod
    def gallery_embedder(self, gallery: str) -> tuple[bool, str | None]:
        """Whether the gallery exists and the embedder recorded for it (one cheap lookup, no counting)."""

    @abstractmethod
    def create_gallery(self, gallery: str, embedder: str | None) -> bool:
        """Create an empty gallery that records `embedder`; False (nothing written) when it already exists."""

    @abstractmethod
    def delete_gallery(self, gallery: str) -> list[int] | None:
        """Delete a gallery and everything in it; return the removed face ids (None if it did not exist)."""

    @abstractmethod
    def add_faces(
        self, gallery: str, subject_id: str, name: str | None, metadata: dict[str, Any] | None, faces: list[NewFace],
        embedder: EmbedderCheck | None = None,
    ) -> tuple[Subject, list[FaceRecord]]:
        """Create the gallery and subject when new, update name/metadata when given, add the faces: one transaction.

        A face whose `source` the subject already has is not added: its stored record comes back with
        `existing=True` (so a retried or resumed enrolment adds each photo once).

        With `embedder`, a new gallery records `embedder.name`, and a gallery filled by another embedder (or an
        unrecorded one, unless `embedder.extends_unrecorded`) raises `EmbedderConflict` before anything is
        written."""

    @abstractmethod
    def get_subject(self, gallery: str, subject_id: str, with_faces: bool = True) -> Subject | None: ...

    @abstractmethod
    def list_subjects(self, gallery: str, cursor: str | None, limit: int, query: str | None = None
                      ) -> tuple[list[Subject], str | None]:
        """Subjects ordered by id after `cursor` (with `query`: those whose id or name contains it, ignoring
        case: `matches`); the next cursor, or None at the end."""

    @abstractmethod
    def subject_faces(self, gallery: str, subject_id: str) -> list[StoredFace]:
        """Every face of a subject with its embedding and thumbnail, oldest first (what an export writes)."""

    @abstractmethod
    def find_sources(self, gallery: str, subject_id: str, sources: list[str]) -> dict[str, FaceRecord]:
        """The subject's faces enrolled from any of these sources, by source."""

    @abstractmethod
    def get_thumbnail(self, gallery: str, subject_id: str, face_id: int) -> tuple[bool, bytes | None]:
        """Whether the subject has that face, and the face's thumbnail (None when it was enrolled without)."""

    @abstractmethod
    def update_subject(
        self, gallery: str, subject_id: str, name: str | None, metadata: dict[str, Any] | None
    ) -> Subject | None: ...

    @abstractmethod
    def delete_subject(self, gallery: str, subject_id: str) -> list[int] | None:
        """Delete a subject and its faces; return the removed face ids (None if it did not exist)."""

    @abstractmethod
    def delete_face(self, gallery: str, subject_id: str, face_id: int) -> bool: ...

    @abstractmethod
    def subject_embeddings(self, gallery: str, subject_id: str) -> np.ndarray:
        """`N x D` embeddings of a subject's faces (0 rows when it has none)."""

    @abstractmethod
    def subject_names(self, gallery: str, subject_ids: list[str]) -> dict[str, str | None]: ...

    @abstractmethod
    def iter_faces(self, gallery: str | None = None) -> Iterator[IndexedFace]:
        """Every stored embedding (of one gallery, or all): the index is rebuilt from this at start-up."""

    @abstractmethod
    def get_faces(self, face_ids: list[int]) -> list[IndexedFace]: ...

    @abstractmethod
    def last_seq(self) -> int:
        """The sequence number of the newest change."""

    @abstractmethod
    def changes_since(self, seq: int, limit: int = 10_000) -> list[Change]:
        """Changes with a sequence number above `seq`, oldest first.

        Raises `FeedTruncated` when some of those changes are no longer available."""

    def wait_for_changes(self, seq: int, timeout_s: float) -> bool:
        """Block until the feed may hold changes after `seq`, at most `timeout_s`; return False at once when the
        store cannot wait on its feed (the follower then polls every `follow_interval_s`)."""
        return False

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


def matches(query: str, subject_id: str, name: str | None) -> bool:
    """The subject search rule of every store: `query` (already case-folded) is part of the case-folded id or
    name."""
    return query in subject_id.casefold() or (name is not None and query in name.casefold())


def stored_metadata(text: Any, gallery: str, subject_id: str) -> dict[str, Any]:
    """A subject's metadata as stored; reading it never fails a response: text that is no JSON object (damaged, or
    written by hand) reads as {}, with a warning. What of it may be shown is the core's rule (`core/metadata.py`)."""
    try:
        value = json.loads(text)
    except (ValueError, TypeError, RecursionError) as exc:  # not JSON, too many digits, too deep to parse
        value = exc
    if isinstance(value, dict):
        return value
    logging.getLogger(__name__).warning("subject %r of gallery %r: the stored metadata is no JSON object (%s); "
                                        "read as {}", subject_id, gallery, str(value)[:200])
    return {}
