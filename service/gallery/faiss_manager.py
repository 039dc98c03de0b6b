"""The galleries with an in-memory FAISS index per gallery in every process (`vector_engine=faiss`, the default),
kept in agreement with the durable store.

Start-up loads every embedding from the store; afterwards a follower thread applies the store's change feed, so
writes made by other processes (uvicorn workers on one SQLite file, API replicas on one Redis) become searchable
here too. Own writes go to the store first (committed) and then to the index; applying a change twice is a no-op.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import defaultdict
from typing import Any

import numpy as np

from service import metrics
from service.gallery.index import GalleryIndex, Hit
from service.gallery.manager import GalleryManager
from service.gallery.store import FaceRecord, FeedTruncated, GalleryStore, IndexedFace, NewFace, StoreUnavailable
from service.settings import IndexSettings

log = logging.getLogger(__name__)


class FaissGalleryManager(GalleryManager):
    def __init__(self, store: GalleryStore, dim: int, params: IndexSettings, follow_interval_s: float = 0.5) -> None:
        super().__init__(store, dim)
        self.params = params
        self.follow_interval_s = follow_interval_s
        self._indexes: dict[str, GalleryIndex] = {}
        self._apply_lock = threading.Lock()
        self._applied_seq = 0
        self._loaded = False
        self._caught_up = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- life cycle -----------------------------------------------------------------------------------------
    def load(self) -> None:
        """Build every gallery's index from a snapshot of the store, then catch up with the change feed."""
        with self._apply_lock:
            seq = self.store.last_seq()
            grouped: dict[str, list[IndexedFace]] = defaultdict(list)
            for face in self.store.iter_faces():
                grouped[face.gallery].append(face)
            indexes = {}
            for gallery, faces in grouped.items():
                index = GalleryIndex(self.dim, self.params)
                index.add([f.face_id for f in faces], [f.subject_id for f in faces],
                          np.vstack([f.embedding for f in faces]))
                indexes[gallery] = index
            self._indexes = indexes
            self._applied_seq = seq
        self.catch_up()
        self._loaded = True
        for gallery in list(self._indexes):
            self._update_gauges(gallery)
        log.info("gallery indexes loaded: %d galleries, %d faces", len(self._indexes),
                 sum(len(i) for i in self._indexes.values()))

    def start_following(self) -> None:
        self._thread = threading.Thread(target=self._follow, name="gallery-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _wait(self) -> bool:
        """Wait until the feed may hold new changes (at most `follow_interval_s`); False once stopping."""
        if self.ready:
            try:  # stores that can block on their feed (Redis) wake up as soon as a change arrives
                if self.store.wait_for_changes(self._applied_seq, self.follow_interval_s):
                    return not self._stop.is_set()
            except StoreUnavailable:
                pass
        return not self._stop.wait(self.follow_interval_s)

    def _follow(self) -> None:
        while self._wait():
            try:
                if not self._loaded:
                    self.load()
                else:
                    self.catch_up()
            except StoreUnavailable as exc:
                self._caught_up = False
                log.warning("gallery store unavailable: %s", exc)
            except FeedTruncated as exc:  # missed changes that the feed no longer holds: rebuild from a snapshot
                self._caught_up = False
                self._loaded = False
                log.warning("gallery change feed truncated (%s); reloading the indexes", exc)
            except Exception:  # keep following whatever one round did
                self._caught_up = False
                log.exception("gallery follower round failed")

    def catch_up(self) -> int:
        """Apply every change newer than the last applied one; return how many were applied."""
        applied = 0
        with self._apply_lock:
            while True:
                changes = self.store.changes_since(self._applied_seq)
                if not changes:
                    break
                adds = [c.face_id for c in changes if c.kind == "add"]
                current = {f.face_id: f for f in self.store.get_faces(adds)}
                touched: set[str] = set()
                for change in changes:
                    if change.kind == "add" and change.face_id in current:
                        face = current[change.face_id]
                        self._index(face.gallery, create=True).add(  # type: ignore[union-attr]
                            [face.face_id], [face.subject_id], face.embedding[None, :])
                    elif change.kind == "remove":
                        index = self._indexes.get(change.gallery)
                        if index is not None:
                            index.remove([change.face_id])
                    touched.add(change.gallery)
                self._applied_seq = changes[-1].seq
                applied += len(changes)
                for gallery in touched:
                    self._drop_if_gone(gallery)
                    self._update_gauges(gallery)
        self._caught_up = True
        return applied

    @property
    def ready(self) -> bool:
        return self._loaded and self._caught_up

    @property
    def applied_seq(self) -> int:
        return self._applied_seq

    # -- indexes --------------------------------------------------------------------------------------------
    def _index(self, gallery: str, create: bool = False) -> GalleryIndex | None:
        index = self._indexes.get(gallery)
        if index is None and create:
            index = self._indexes.setdefault(gallery, GalleryIndex(self.dim, self.params))
        return index

    def _drop_if_gone(self, gallery: str) -> None:
        index = self._indexes.get(gallery)
        if index is not None and len(index) == 0 and self.store.get_gallery(gallery) is None:
            del self._indexes[gallery]

    def _update_gauges(self, gallery: str) -> None:
        index = self._indexes.get(gallery)
        if index is None:
            for gauge in (metrics.GALLERY_FACES, metrics.GALLERY_SUBJECTS):
                with contextlib.suppress(KeyError):
                    gauge.remove(gallery)
            return
        metrics.GALLERY_FACES.labels(gallery).set(len(index))
        info = self.store.get_gallery(gallery)
        if info is not None:
            metrics.GALLERY_SUBJECTS.labels(gallery).set(info.subjects)

    def index_kind(self, gallery: str) -> str:
        index = self._indexes.get(gallery)
        return index.kind if index is not None else self.params.index_type

    def index_size(self, gallery: str) -> int:
        index = self._indexes.get(gallery)
        return len(index) if index is not None else 0

    def index_params(self, gallery: str) -> dict[str, Any]:
        p = self.params
        kind = self.index_kind(gallery)
        if kind == "hnsw":
            return {"M": p.hnsw_m, "efConstruction": p.hnsw_ef_construction, "efSearch": p.hnsw_ef_search}
        if kind == "ivfpq":
            return {"nlist": p.ivf_nlist, "m": p.pq_m, "nprobe": p.ivf_nprobe, "refine": p.pq_refine}
        if kind == "auto":  # no index yet: what it will become
            return {"exact_up_to": p.index_auto_exact_max}
        return {}

    # -- what the engine does -----------------------------------------------------------------------------------
    def _index_enrolled(self, gallery: str, subject_id: str, records: list[FaceRecord],
                        faces: list[NewFace]) -> None:
        added = [(r, f) for r, f in zip(records, faces, strict=True) if not r.existing]
        with self._apply_lock:
            index = self._index(gallery, create=True)
            assert index is not None
            if added:
                index.add([r.face_id for r, _ in added], [subject_id] * len(added),
                          np.vstack([f.embedding for _, f in added]))
            self._update_gauges(gallery)

    def ensure_indexed(self, gallery: str, face_ids: list[int]) -> None:
        """This index follows the store's change feed, so it has every stored face already."""

    def _drop_gallery(self, gallery: str) -> None:
        with self._apply_lock:
            self._indexes.pop(gallery, None)
            self._update_gauges(gallery)

    def _remove_from_index(self, gallery: str, face_ids: list[int]) -> None:
        with self._apply_lock:
            index = self._indexes.get(gallery)
            if index is not None:
                index.remove(face_ids)
            self._update_gauges(gallery)

    def search(self, gallery: str, embeddings: np.ndarray, top_k: int) -> list[list[Hit]]:
        index = self._indexes.get(gallery)
        if index is None:
            return [[] for _ in range(len(embeddings))]
        return index.search(embeddings, top_k)

    def has_gallery(self, gallery: str) -> bool:
        return gallery in self._indexes or super().has_gallery(gallery)
