"""What the service asks of its galleries, whatever holds their vectors: `GalleryManager`, the base of the FAISS
manager (faiss_manager.py, an index in every process) and the Milvus one (milvus.py, the index in Milvus).

The base owns the write order. The store is written first and committed, then the vector engine; an engine write
is idempotent (by face id), so a change applied twice is harmless, and the store stays the source of truth.
Subclasses say how faces enter and leave their engine and how it is searched.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from service.gallery.index import Hit
from service.gallery.store import EmbedderCheck, FaceRecord, GalleryStore, NewFace, StoreUnavailable, Subject


class GalleryManager(ABC):
    def __init__(self, store: GalleryStore, dim: int) -> None:
        self.store = store
        self.dim = dim

    # -- life cycle (an engine that keeps nothing in the process needs none of it) ----------------------------
    def load(self) -> None:  # noqa: B027  (a hook: engines that load nothing keep this)
        """Make the galleries searchable at start-up."""

    def start_following(self) -> None:  # noqa: B027
        """Start following other processes' writes, where the engine needs it."""

    def stop(self) -> None:  # noqa: B027
        """Stop what `start_following` started."""

    @property
    @abstractmethod
    def ready(self) -> bool:
        """Whether searches answer from an engine that holds every acknowledged face."""

    # -- what the engine does -----------------------------------------------------------------------------------
    @abstractmethod
    def _index_enrolled(self, gallery: str, subject_id: str, records: list[FaceRecord],
                        faces: list[NewFace]) -> None:
        """Make an enrolment's faces searchable; `records[i]` is where the store keeps `faces[i]`."""

    @abstractmethod
    def _remove_from_index(self, gallery: str, face_ids: list[int]) -> None: ...

    @abstractmethod
    def _drop_gallery(self, gallery: str) -> None: ...

    @abstractmethod
    def ensure_indexed(self, gallery: str, face_ids: list[int]) -> None:
        """Make faces the store already holds searchable (a retried enrolment answered from the store)."""

    @abstractmethod
    def search(self, gallery: str, embeddings: np.ndarray, top_k: int) -> list[list[Hit]]:
        """For each embedding, the best face of each of the `top_k` most similar subjects."""

    @abstractmethod
    def index_kind(self, gallery: str) -> str: ...

    @abstractmethod
    def index_size(self, gallery: str) -> int: ...

    @abstractmethod
    def index_params(self, gallery: str) -> dict[str, Any]:
        """The index's build and search parameters, as `GET /v1/galleries/{g}` reports them."""

    # -- operations: the store first, then the engine ------------------------------------------------------------
    def enroll(self, gallery: str, subject_id: str, name: str | None, metadata: dict[str, Any] | None,
               faces: list[NewFace], embedder: EmbedderCheck | None = None) -> tuple[Subject, list[FaceRecord]]:
        subject, records = self.store.add_faces(gallery, subject_id, name, metadata, faces, embedder)
        self._index_enrolled(gallery, subject_id, records, faces)
        return subject, records

    def delete_gallery(self, gallery: str) -> bool:
        if self.store.delete_gallery(gallery) is None:
            return False
        self._drop_gallery(gallery)
        return True

    def delete_subject(self, gallery: str, subject_id: str) -> bool:
        removed = self.store.delete_subject(gallery, subject_id)
        if removed is None:
            return False
        self._remove_from_index(gallery, removed)
        return True

    def delete_face(self, gallery: str, subject_id: str, face_id: int) -> bool:
        if not self.store.delete_face(gallery, subject_id, face_id):
            return False
        self._remove_from_index(gallery, [face_id])
        return True

    def has_gallery(self, gallery: str) -> bool:
        return self.store.get_gallery(gallery) is not None


def ensure_store_available(store: GalleryStore) -> bool:
    try:
        store.ping()
    except StoreUnavailable:
        return False
    return True
