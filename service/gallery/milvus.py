"""Milvus as the vector engine of the galleries (`ANYFACE_VECTOR_ENGINE=milvus`): embeddings are written to and
searched in one Milvus collection, the face id its primary key and the gallery a filtered field. Subjects,
metadata, thumbnails and the embeddings themselves stay in the store, which remains the source of truth.
Replicas then hold no index: they start at once, and galleries grow past one machine's memory.

Write order: the store first, then Milvus (an upsert by face id, so writing twice is harmless). A write whose
Milvus half fails is answered 503 `vector_engine_unavailable`. Its faces are then in the store but not yet
searchable, and any of these makes them searchable:
- a retry with the same `sources`: it upserts the faces the store already has (`ensure_indexed`);
- `python -m service.gallery.repair`, which reconciles Milvus with the store.
A delete whose Milvus half fails leaves vectors of faces that no longer exist: searches drop them (every hit is
checked against the store), and the repair removes them.

Consistency: searches use Milvus's `Strong` level, so a client sees its own enrolment in the very next search,
from any replica.
"""

from __future__ import annotations

import contextlib
import json
import logging
from array import array
from typing import Any

import numpy as np

from service import metrics
from service.gallery.index import Hit
from service.gallery.manager import GalleryManager
from service.gallery.store import FaceRecord, GalleryInfo, GalleryStore, NewFace, VectorEngineUnavailable
from service.settings import MilvusSettings

log = logging.getLogger(__name__)
BATCH = 1000
_INDEX_STATE = {"field_name", "index_name", "total_rows", "indexed_rows", "pending_index_rows", "state"}
ID_PAGE = 10_000  # face ids per page when the repair lists the collection


class MilvusEngine:
    """The collection: face_id (INT64 primary key), gallery, subject_id and the embedding."""

    def __init__(self, settings: MilvusSettings, dim: int) -> None:
        self.settings = settings
        self.dim = dim
        self._client: Any = None
        self._index: dict[str, Any] = {}  # the collection's vector index, as Milvus described it on connecting
        self._build_params: dict[str, Any] = json.loads(settings.milvus_index_params or "{}")
        self._search_params: dict[str, Any] = json.loads(settings.milvus_search_params or "{}")

    @property
    def index_kind(self) -> str:
        return f"milvus-{str(self.index_params()['index_type']).lower()}"

    def index_params(self) -> dict[str, Any]:
        """The collection's index as Milvus described it when this process connected (the settings' where it has
        not connected yet, or Milvus does not report them), the search parameters and the consistency level."""
        described = {k: v for k, v in self._index.items() if k not in _INDEX_STATE}
        build = {k: v for k, v in described.items() if k not in ("index_type", "metric_type")}
        return {"index_type": described.get("index_type", self.settings.milvus_index_type),
                "metric_type": described.get("metric_type", "IP"),
                "build": build or self._build_params,
                "search": self._search_params,
                "consistency": self.settings.milvus_consistency}

    def _connect(self) -> Any:
        if self._client is None:
            from pymilvus import MilvusClient  # imported only when Milvus is the engine

            try:
                client = MilvusClient(uri=self.settings.milvus_uri, token=self.settings.milvus_token or "",
                                      timeout=self.settings.milvus_timeout_s)
                self._ensure_collection(client)
            except Exception as exc:
                raise VectorEngineUnavailable(f"milvus at {self.settings.milvus_uri}: {exc}") from exc
            self._client = client
        return self._client

    def _ensure_collection(self, client: Any) -> None:
        from pymilvus import DataType

        name = self.settings.milvus_collection
        if client.has_collection(name):
            client.load_collection(name)  # a collection Milvus restarted with is released until loaded
            self._describe_index(client)
            return
        schema = client.create_schema(auto_id=False)
        schema.add_field("face_id", DataType.INT64, is_primary=True)
        schema.add_field("gallery", DataType.VARCHAR, max_length=64)
        schema.add_field("subject_id", DataType.VARCHAR, max_length=128)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=self.dim)
        index = client.prepare_index_params()
        index.add_index("embedding", index_type=self.settings.milvus_index_type, metric_type="IP",
                        params=self._build_params)
        client.create_collection(name, schema=schema, index_params=index,
                                 consistency_level=self.settings.milvus_consistency)
        log.info("milvus collection %s created (%s)", name, self.settings.milvus_index_type)
        self._describe_index(client)

    def _describe_index(self, client: Any) -> None:
        name = self.settings.milvus_collection
        self._index = dict(client.describe_index(name, "embedding") or {})
        actual = str(self._index.get("index_type", "")).upper()
        if actual and actual != self.settings.milvus_index_type:
            log.warning("milvus collection %s has a %s index, the settings ask for %s: index settings apply to a new "
                        "collection (ANYFACE_MILVUS_COLLECTION) only", name, actual, self.settings.milvus_index_type)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        client = self._connect()
        try:
            return getattr(client, method)(self.settings.milvus_collection, *args, **kwargs)
        except Exception as exc:
            self._client = None  # reconnect on the next call: Milvus may be back by then
            raise VectorEngineUnavailable(f"milvus {method}: {exc}") from exc

    def ping(self) -> None:
        self._call("describe_collection")

    def upsert(self, gallery: str, face_ids: list[int], subject_ids: list[str], vectors: np.ndarray) -> None:
        rows = [{"face_id": int(f), "gallery": gallery, "subject_id": s, "embedding": v.astype(np.float32).tolist()}
                for f, s, v in zip(face_ids, subject_ids, vectors, strict=True)]
        for start in range(0, len(rows), BATCH):
            self._call("upsert", rows[start:start + BATCH])

    def flush(self) -> None:
        """Seal what was written, so that it is searched through the index (Milvus also does this by itself as
        segments fill; bulk loads call it at their end)."""
        self._call("flush")

    def delete(self, face_ids: list[int]) -> None:
        if face_ids:
            self._call("delete", ids=[int(f) for f in face_ids])

    def delete_gallery(self, gallery: str) -> None:
        self._call("delete", filter=f'gallery == "{gallery}"')  # gallery names are [A-Za-z0-9._-]: no quoting

    def count(self, gallery: str) -> int:
        rows = self._call("query", filter=f'gallery == "{gallery}"', output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def face_ids(self) -> np.ndarray:
        """Every face id in the collection, read page by page (one query may answer at most 16,384 rows)."""
        client = self._connect()
        pages: list[np.ndarray] = []
        try:
            iterator = client.query_iterator(self.settings.milvus_collection, batch_size=ID_PAGE, filter="face_id >= 0",
                                             output_fields=["face_id"])
            try:
                while page := iterator.next():
                    pages.append(np.fromiter((r["face_id"] for r in page), dtype=np.int64, count=len(page)))
            finally:
                iterator.close()
        except Exception as exc:
            self._client = None
            raise VectorEngineUnavailable(f"milvus query_iterator: {exc}") from exc
        return np.concatenate(pages) if pages else np.empty(0, dtype=np.int64)

    def search(self, gallery: str, embeddings: np.ndarray, top_k: int) -> list[list[Hit]]:
        """For each embedding, the best face of each of the `top_k` best subjects (the FAISS index's rule): asks
        for `milvus_search_factor` x top_k faces, so that subjects with several faces still fill top_k."""
        limit = max(1, min(top_k * self.settings.milvus_search_factor, 16_384))
        found = self._call("search", data=[e.astype(np.float32).tolist() for e in embeddings], limit=limit,
                           filter=f'gallery == "{gallery}"', output_fields=["subject_id"],
                           search_params={"metric_type": "IP", "params": self._search_params})
        results = []
        for hits in found:
            best: dict[str, Hit] = {}
            for hit in hits:
                subject = hit["entity"]["subject_id"]
                if subject not in best:
                    best[subject] = Hit(int(hit["id"] if "id" in hit else hit["face_id"]), subject,
                                        float(hit["distance"]))
            results.append(sorted(best.values(), key=lambda h: -h.similarity)[:top_k])
        return results


class MilvusGalleryManager(GalleryManager):
    """The galleries with Milvus as their index: nothing to load or follow in the process."""

    def __init__(self, store: GalleryStore, dim: int, engine: MilvusEngine) -> None:
        super().__init__(store, dim)
        self.engine = engine

    def load(self) -> None:
        """Connect, and check the collection's index against the settings; nothing to load. The gallery gauges
        start from the store's counts."""
        self.engine.ping()
        for info in self.store.list_galleries():
            _set_gauges(info.name, info)

    @property
    def ready(self) -> bool:
        try:
            self.engine.ping()
        except VectorEngineUnavailable:
            return False
        return True

    def index_kind(self, gallery: str) -> str:
        return self.engine.index_kind

    def index_size(self, gallery: str) -> int:
        try:
            return self.engine.count(gallery)
        except VectorEngineUnavailable:
            return 0

    def index_params(self, gallery: str) -> dict[str, Any]:
        return self.engine.index_params()

    def _index_enrolled(self, gallery: str, subject_id: str, records: list[FaceRecord],
                        faces: list[NewFace]) -> None:
        if records:  # every face, also those the store had: a retry makes a half-written enrolment whole
            self.engine.upsert(gallery, [r.face_id for r in records], [subject_id] * len(records),
                               np.vstack([f.embedding for f in faces]))
        _set_gauges(gallery, self.store.get_gallery(gallery))

    def ensure_indexed(self, gallery: str, face_ids: list[int]) -> None:
        faces = self.store.get_faces(face_ids)
        if faces:
            self.engine.upsert(gallery, [f.face_id for f in faces], [f.subject_id for f in faces],
                               np.vstack([f.embedding for f in faces]))

    def _drop_gallery(self, gallery: str) -> None:
        self.engine.delete_gallery(gallery)
        _set_gauges(gallery, None)

    def _remove_from_index(self, gallery: str, face_ids: list[int]) -> None:
        self.engine.delete(face_ids)
        _set_gauges(gallery, self.store.get_gallery(gallery))

    def search(self, gallery: str, embeddings: np.ndarray, top_k: int) -> list[list[Hit]]:
        """Milvus's hits, each checked against the store: a face whose delete reached only the store is dropped."""
        hits = self.engine.search(gallery, embeddings, top_k)
        known = {f.face_id for f in self.store.get_faces(sorted({h.face_id for hs in hits for h in hs}))}
        return [[h for h in face_hits if h.face_id in known] for face_hits in hits]


def _set_gauges(gallery: str, info: GalleryInfo | None) -> None:
    """The gallery gauges from the store's counts, which the engine holds once its write succeeded. Each replica
    sets them on its own writes and at start; the dashboard takes the largest per gallery."""
    if info is None:
        for gauge in (metrics.GALLERY_FACES, metrics.GALLERY_SUBJECTS):
            with contextlib.suppress(KeyError):
                gauge.remove(gallery)
        return
    metrics.GALLERY_FACES.labels(gallery).set(info.faces)
    metrics.GALLERY_SUBJECTS.labels(gallery).set(info.subjects)


def repair(store: GalleryStore, engine: MilvusEngine) -> dict[str, int]:
    """Make Milvus hold exactly the store's faces: upsert every face of the store, delete every vector whose face
    the store no longer has."""
    seen = array("q")  # the store's face ids, 8 bytes each
    batch: list[tuple[str, int, str, np.ndarray]] = []

    def flush() -> None:
        by_gallery: dict[str, list[tuple[int, str, np.ndarray]]] = {}
        for gallery, face_id, subject_id, vector in batch:
            by_gallery.setdefault(gallery, []).append((face_id, subject_id, vector))
        for gallery, rows in by_gallery.items():
            engine.upsert(gallery, [r[0] for r in rows], [r[1] for r in rows], np.vstack([r[2] for r in rows]))
        batch.clear()

    for face in store.iter_faces():
        seen.append(face.face_id)
        batch.append((face.gallery, face.face_id, face.subject_id, face.embedding))
        if len(batch) >= BATCH:
            flush()
    flush()
    engine.flush()
    candidates = np.setdiff1d(engine.face_ids(), np.frombuffer(seen, dtype=np.int64)).tolist()
    removed = 0
    for start in range(0, len(candidates), BATCH):
        # a face enrolled after the store was read is in Milvus too (the store is written first): ask the store
        # again, so that the repair never removes an acknowledged face, also while the service runs
        chunk = candidates[start:start + BATCH]
        stored = {f.face_id for f in store.get_faces(chunk)}
        orphans = [f for f in chunk if f not in stored]
        engine.delete(orphans)
        removed += len(orphans)
    return {"upserted": len(seen), "removed": removed}
