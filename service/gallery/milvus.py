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

import json
import logging
from typing import Any

import numpy as np

from service.gallery.index import Hit
from service.gallery.manager import GalleryManager
from service.gallery.store import EmbedderCheck, FaceRecord, GalleryStore, NewFace, Subject, VectorEngineUnavailable
from service.settings import IndexSettings, MilvusSettings

log = logging.getLogger(__name__)
BATCH = 1000


class MilvusEngine:
    """The collection: face_id (INT64 primary key), gallery, subject_id and the embedding."""

    def __init__(self, settings: MilvusSettings, dim: int) -> None:
        self.settings = settings
        self.dim = dim
        self._client: Any = None

    @property
    def index_kind(self) -> str:
        return f"milvus-{self.settings.milvus_index_type.lower()}"

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
            return
        schema = client.create_schema(auto_id=False)
        schema.add_field("face_id", DataType.INT64, is_primary=True)
        schema.add_field("gallery", DataType.VARCHAR, max_length=64)
        schema.add_field("subject_id", DataType.VARCHAR, max_length=128)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=self.dim)
        index = client.prepare_index_params()
        index.add_index("embedding", index_type=self.settings.milvus_index_type, metric_type="IP",
                        params=json.loads(self.settings.milvus_index_params or "{}"))
        client.create_collection(name, schema=schema, index_params=index,
                                 consistency_level=self.settings.milvus_consistency)
        log.info("milvus collection %s created (%s)", name, self.settings.milvus_index_type)

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

    def face_ids(self) -> list[int]:
        rows = self._call("query", filter="face_id >= 0", output_fields=["face_id"])
        return [int(r["face_id"]) for r in rows]

    def search(self, gallery: str, embeddings: np.ndarray, top_k: int) -> list[list[Hit]]:
        """For each embedding, the best face of each of the `top_k` best subjects (the FAISS index's rule): asks
        for `milvus_search_factor` x top_k faces, so that subjects with several faces still fill top_k."""
        limit = max(1, min(top_k * self.settings.milvus_search_factor, 16_384))
        found = self._call("search", data=[e.astype(np.float32).tolist() for e in embeddings], limit=limit,
                           filter=f'gallery == "{gallery}"', output_fields=["subject_id"],
                           search_params={"metric_type": "IP",
                                          "params": json.loads(self.settings.milvus_search_params or "{}")})
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
    """The galleries with Milvus as their index: no in-process index and no change feed to follow."""

    def __init__(self, store: GalleryStore, dim: int, params: IndexSettings, engine: MilvusEngine) -> None:
        super().__init__(store, dim, params)
        self.engine = engine

    def load(self) -> None:
        self._loaded = self._caught_up = True

    def start_following(self) -> None:
        return None

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

    def enroll(self, gallery: str, subject_id: str, name: str | None, metadata: dict[str, Any] | None,
               faces: list[NewFace], embedder: EmbedderCheck | None = None) -> tuple[Subject, list[FaceRecord]]:
        subject, records = self.store.add_faces(gallery, subject_id, name, metadata, faces, embedder)
        if records:  # every face, also those the store had: a retry makes a half-written enrolment whole
            self.engine.upsert(gallery, [r.face_id for r in records], [subject_id] * len(records),
                               np.vstack([f.embedding for f in faces]))
        return subject, records

    def delete_gallery(self, gallery: str) -> bool:
        if self.store.delete_gallery(gallery) is None:
            return False
        self.engine.delete_gallery(gallery)
        return True

    def ensure_indexed(self, gallery: str, face_ids: list[int]) -> None:
        faces = self.store.get_faces(face_ids)
        if faces:
            self.engine.upsert(gallery, [f.face_id for f in faces], [f.subject_id for f in faces],
                               np.vstack([f.embedding for f in faces]))

    def _remove_from_index(self, gallery: str, face_ids: list[int]) -> None:
        self.engine.delete(face_ids)

    def search(self, gallery: str, embeddings: np.ndarray, top_k: int) -> list[list[Hit]]:
        hits = self.engine.search(gallery, embeddings, top_k)
        known = {f.face_id for f in self.store.get_faces(sorted({h.face_id for hs in hits for h in hs}))}
        return [[h for h in face_hits if h.face_id in known] for face_hits in hits]

    def has_gallery(self, gallery: str) -> bool:
        return self.store.get_gallery(gallery) is not None


def repair(store: GalleryStore, engine: MilvusEngine) -> dict[str, int]:
    """Make Milvus hold exactly the store's faces: upsert every face of the store, delete every vector whose face
    the store no longer has."""
    seen: set[int] = set()
    batch: list[tuple[str, int, str, np.ndarray]] = []

    def flush() -> None:
        by_gallery: dict[str, list[tuple[int, str, np.ndarray]]] = {}
        for gallery, face_id, subject_id, vector in batch:
            by_gallery.setdefault(gallery, []).append((face_id, subject_id, vector))
        for gallery, rows in by_gallery.items():
            engine.upsert(gallery, [r[0] for r in rows], [r[1] for r in rows], np.vstack([r[2] for r in rows]))
        batch.clear()

    for face in store.iter_faces():
        seen.add(face.face_id)
        batch.append((face.gallery, face.face_id, face.subject_id, face.embedding))
        if len(batch) >= BATCH:
            flush()
    flush()
    engine.flush()
    orphans = [f for f in engine.face_ids() if f not in seen]
    engine.delete(orphans)
    return {"upserted": len(seen), "removed": len(orphans)}
