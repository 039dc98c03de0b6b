"""The FAISS index of one gallery: inner-product search over unit-norm embeddings, keyed by face id.

Kinds: `flat` (exact, the default), `hnsw` (graph, approximate, deletions by tombstone and periodic rebuild),
`ivfpq` (inverted lists of PQ codes, trained once the gallery holds enough faces, exact flat search until then;
by default the PQ candidates are re-ranked with the exact vectors, `IndexRefineFlat`, which is what brings
recall@1 to 0.99 on face embeddings, see docs/index.md) and `auto` (exact up to a size, then IVF-PQ: on 1M
LFW-like faces it reached recall@1 0.99 at 7 ms per query, built in 41 s and took 535 MiB, where HNSW needed
efSearch 2048, a 9-minute build and 755 MiB).
A flat index goes to the GPU(s) when FAISS has GPU support and `IndexSettings.faiss_gpu` allows it.
Every method is thread-safe.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import faiss
import numpy as np

from service.settings import IndexSettings

MIN_TRAIN_PER_LIST = 39  # FAISS wants ~39 training points per IVF list
# Exact search of a batch of at least this many queries goes through BLAS (sgemm) rather than FAISS's SIMD loop;
# set here deliberately (it is FAISS's default, 20): bench.index measured no gain from moving it (docs/index.md).
BLAS_THRESHOLD = 20
faiss.cvar.distance_compute_blas_threshold = BLAS_THRESHOLD


def gpu_count() -> int:
    """GPUs FAISS can use: 0 with the faiss-cpu package (the default install)."""
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


@dataclass(frozen=True)
class Hit:
    face_id: int
    subject_id: str
    similarity: float


class GalleryIndex:
    def __init__(self, dim: int, params: IndexSettings) -> None:
        self.dim = dim
        self.params = params
        self._lock = threading.RLock()
        self._subject_of: dict[int, str] = {}
        self._tombstones: set[int] = set()
        self._index = self._flat()
        self.kind = "flat"
        self._gpu_index: faiss.Index | None = None  # GPU copy of a flat index, made on first search

    # -- construction ---------------------------------------------------------------------------------------
    def _flat(self) -> faiss.Index:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    def _hnsw(self) -> faiss.Index:
        inner = faiss.IndexHNSWFlat(self.dim, self.params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = self.params.hnsw_ef_construction
        inner.hnsw.efSearch = self.params.hnsw_ef_search
        return faiss.IndexIDMap2(inner)

    def _ivfpq(self, vectors: np.ndarray) -> faiss.Index:
        nlist = min(self.params.ivf_nlist, max(1, len(vectors) // MIN_TRAIN_PER_LIST))
        quantizer = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFPQ(quantizer, self.dim, nlist, self.params.pq_m, 8, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = min(self.params.ivf_nprobe, nlist)
        if not self.params.pq_refine:
            return index
        refine = faiss.IndexRefineFlat(index)  # keeps the exact vectors: re-ranking, and rebuilds from itself
        refine.k_factor = float(self.params.pq_refine)
        return faiss.IndexIDMap2(refine)

    def _target_kind(self, size: int) -> str:
        kind = self.params.index_type
        if kind == "auto":
            kind = "ivfpq" if size > self.params.index_auto_exact_max else "flat"
        if kind == "ivfpq" and size < self.params.ivf_nlist * MIN_TRAIN_PER_LIST:
            return "flat"  # too few faces to train the quantisers: stay exact until there are enough
        return kind

    @property
    def _uses_tombstones(self) -> bool:
        """HNSW and the re-ranked IVF-PQ (`IndexRefineFlat`) cannot delete: ids are hidden, then rebuilt."""
        return self.kind == "hnsw" or (self.kind == "ivfpq" and bool(self.params.pq_refine))

    def _all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        ids = np.array([i for i in self._subject_of if i not in self._tombstones], dtype=np.int64)
        if self.kind == "ivfpq" and not self.params.pq_refine:
            raise RuntimeError("an IVF-PQ index without exact vectors cannot be rebuilt from itself")
        vectors = np.vstack([self._index.reconstruct(int(i)) for i in ids]) if len(ids) else np.zeros((0, self.dim))
        return ids, vectors.astype(np.float32)

    def _rebuild(self, kind: str, ids: np.ndarray, vectors: np.ndarray) -> None:
        index = self._ivfpq(vectors) if kind == "ivfpq" else self._hnsw() if kind == "hnsw" else self._flat()
        if len(ids):
            index.add_with_ids(vectors, ids)
        for face_id in self._tombstones:
            self._subject_of.pop(face_id, None)
        self._tombstones.clear()
        self._index, self.kind = index, kind
        self._gpu_index = None

    # -- updates --------------------------------------------------------------------------------------------
    def add(self, face_ids: list[int], subject_ids: list[str], vectors: np.ndarray) -> int:
        """Add faces not yet present (adding an id twice is a no-op); return how many were added."""
        with self._lock:
            fresh = [i for i, face_id in enumerate(face_ids) if face_id not in self._subject_of]
            if not fresh:
                return 0
            ids = np.array([face_ids[i] for i in fresh], dtype=np.int64)
            vecs = np.ascontiguousarray(vectors[fresh], dtype=np.float32)
            target = self._target_kind(len(self) + len(ids))
            if target != self.kind and self.kind != "ivfpq":
                old_ids, old_vecs = self._all_vectors()
                for i in fresh:
                    self._subject_of[face_ids[i]] = subject_ids[i]
                self._rebuild(target, np.concatenate([old_ids, ids]), np.vstack([old_vecs, vecs]))
                return len(ids)
            self._index.add_with_ids(vecs, ids)
            if self._gpu_index is not None:
                self._gpu_index.add_with_ids(vecs, ids)
            for i in fresh:
                self._subject_of[face_ids[i]] = subject_ids[i]
            return len(ids)

    def remove(self, face_ids: list[int]) -> int:
        with self._lock:
            present = [f for f in face_ids if f in self._subject_of and f not in self._tombstones]
            if not present:
                return 0
            if self._uses_tombstones:  # cannot delete: hide the ids and rebuild once enough are hidden
                self._tombstones.update(present)
                if len(self._tombstones) > 0.1 * len(self._subject_of):
                    ids, vectors = self._all_vectors()
                    self._rebuild(self._target_kind(len(ids)), ids, vectors)
            else:
                self._index.remove_ids(np.array(present, dtype=np.int64))  # type: ignore[arg-type]
                self._gpu_index = None  # copied again on the next search
                for face_id in present:
                    del self._subject_of[face_id]
            return len(present)

    def __len__(self) -> int:
        return len(self._subject_of) - len(self._tombstones)

    def subject_of(self, face_id: int) -> str | None:
        return self._subject_of.get(face_id)

    # -- search ---------------------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, top_k: int) -> list[list[Hit]]:
        """For each query the best `top_k` subjects (best face per subject), most similar first."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.params.faiss_threads:
            # OpenMP's thread count belongs to the calling thread, and searches run in the server's worker
            # threads: set it here. Left at every core, a one-query search of a tiny index costs ~8 ms of
            # OpenMP start-up on 2 busy cores instead of ~10 us.
            faiss.omp_set_num_threads(self.params.faiss_threads)
        with self._lock:
            total = len(self)
            if total == 0:
                return [[] for _ in range(len(queries))]
            index = self._searchable()
            k = min(total + len(self._tombstones), max(4 * top_k, 16))
            while True:
                sims, ids = index.search(queries, k)
                results = [self._best_per_subject(s, i, top_k) for s, i in zip(sims, ids, strict=True)]
                if all(len(r) >= top_k for r in results) or k >= total + len(self._tombstones):
                    return results
                k = min(total + len(self._tombstones), k * 4)

    def _searchable(self) -> faiss.Index:
        """The index to search: a GPU copy of a flat index where there is a GPU (not exercised on CPU hosts)."""
        if self.kind != "flat" or not self.params.faiss_gpu or gpu_count() == 0:
            return self._index
        if self._gpu_index is None:
            self._gpu_index = faiss.index_cpu_to_all_gpus(self._index)
        return self._gpu_index

    def _best_per_subject(self, sims: np.ndarray, ids: np.ndarray, top_k: int) -> list[Hit]:
        hits: list[Hit] = []
        seen: set[str] = set()
        for sim, face_id in zip(sims, ids, strict=True):
            if face_id < 0 or face_id in self._tombstones:
                continue
            subject = self._subject_of.get(int(face_id))
            if subject is None or subject in seen:
                continue
            seen.add(subject)
            hits.append(Hit(int(face_id), subject, float(sim)))
            if len(hits) == top_k:
                break
        return hits

    def memory_bytes(self) -> int:
        with self._lock:
            return int(faiss.serialize_index(self._index).nbytes)
