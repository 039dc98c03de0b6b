"""GalleryIndex on synthetic data: ids, best face per subject, kinds and their switches, approximate recall, GPU hook.

Fast (no models, no LFW): small clustered unit vectors. bench/index.py measures the same class at 10k-1M faces.
"""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from service.gallery import index as index_module
from service.gallery.index import MIN_TRAIN_PER_LIST, GalleryIndex
from service.settings import IndexSettings

DIM = 64


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, clusters: int = 50, spread: float = 0.35, seed: int = 0) -> np.ndarray:
    """Unit vectors around `clusters` random centres: structured like face embeddings, not isotropic noise."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((clusters, DIM)))
    return unit(centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, DIM)) / np.sqrt(DIM) * 4)


def filled(params: IndexSettings, n: int, seed: int = 0) -> tuple[GalleryIndex, np.ndarray]:
    vectors = clustered(n, seed=seed)
    index = GalleryIndex(DIM, params)
    index.add(list(range(1, n + 1)), [f"s{i}" for i in range(1, n + 1)], vectors)
    return index, vectors


SMALL_IVF = IndexSettings(index_type="ivfpq", ivf_nlist=8, ivf_nprobe=8, pq_m=16)
TRAIN_SIZE = SMALL_IVF.ivf_nlist * MIN_TRAIN_PER_LIST


def test_add_and_remove_are_idempotent() -> None:
    index, vectors = filled(IndexSettings(), 100)
    assert index.add([1, 2, 3], ["s1", "s2", "s3"], vectors[:3]) == 0
    assert len(index) == 100
    assert index.add([1, 101], ["s1", "s101"], vectors[:2]) == 1  # only the new id goes in
    assert len(index) == 101
    assert index.remove([5, 6]) == 2
    assert index.remove([5, 6, 999]) == 0
    assert len(index) == 99
    assert all(h.face_id not in (5, 6) for hits in index.search(vectors[4:6], 10) for h in hits)


def test_best_face_per_subject() -> None:
    rng = np.random.default_rng(1)
    query = unit(rng.standard_normal((1, DIM)))
    near = unit(query + 0.05 * rng.standard_normal((3, DIM)))
    far = unit(query + 0.5 * rng.standard_normal((1, DIM)))
    index = GalleryIndex(DIM, IndexSettings())
    index.add([10, 11, 12, 20], ["alice", "alice", "alice", "bob"], np.vstack([near, far]))
    hits = index.search(query, 2)[0]
    assert [h.subject_id for h in hits] == ["alice", "bob"]
    best_alice = 10 + int(np.argmax(near @ query[0]))
    assert hits[0].face_id == best_alice
    assert hits[0].similarity == pytest.approx(float(near[best_alice - 10] @ query[0]), abs=1e-5)


def test_top_k_larger_than_subjects_returns_each_subject_once() -> None:
    vectors = clustered(40)
    index = GalleryIndex(DIM, IndexSettings())
    index.add(list(range(40)), [f"s{i % 7}" for i in range(40)], vectors)  # 7 subjects, ~6 faces each
    hits = index.search(vectors[:3], 50)
    for row in hits:
        assert sorted(h.subject_id for h in row) == sorted(f"s{i}" for i in range(7))
        assert [h.similarity for h in row] == sorted((h.similarity for h in row), reverse=True)


def test_hnsw_tombstones_then_rebuild() -> None:
    index, vectors = filled(IndexSettings(index_type="hnsw", hnsw_ef_search=64), 500)
    assert index.kind == "hnsw"
    gone = list(range(1, 21))  # 4%: hidden, not yet rebuilt
    assert index.remove(gone) == 20
    assert index._tombstones == set(gone)
    assert len(index) == 480
    for hits in index.search(vectors[:20], 5):
        assert all(h.face_id not in gone for h in hits)
    more = list(range(21, 61))  # 12% in all: rebuilt without them
    index.remove(more)
    assert index._tombstones == set()
    assert index._index.ntotal == 440 and len(index) == 440
    assert index.subject_of(30) is None and index.subject_of(61) == "s61"
    top = index.search(vectors[60:70], 1)
    assert [h[0].face_id for h in top] == list(range(61, 71))


def test_ivfpq_stays_flat_below_training_size_then_switches() -> None:
    vectors = clustered(TRAIN_SIZE + 100)
    index = GalleryIndex(DIM, SMALL_IVF)
    index.add(list(range(TRAIN_SIZE - 1)), ["s"] * (TRAIN_SIZE - 1), vectors[: TRAIN_SIZE - 1])
    assert index.kind == "flat"
    index.add(list(range(TRAIN_SIZE - 1, TRAIN_SIZE + 100)), ["t"] * 101, vectors[TRAIN_SIZE - 1:])
    assert index.kind == "ivfpq"
    assert index._index.ntotal == TRAIN_SIZE + 100
    assert faiss.extract_index_ivf(index._index).nlist == SMALL_IVF.ivf_nlist
    assert index.search(vectors[-1:], 1)[0][0].face_id == TRAIN_SIZE + 99


def test_ivfpq_removal_with_and_without_refine() -> None:
    n = TRAIN_SIZE + 50
    refined, vectors = filled(SMALL_IVF, n)
    assert refined.remove([1, 2]) == 2 and refined._tombstones == {1, 2}  # IndexRefineFlat cannot remove_ids
    refined.remove(list(range(3, n // 8)))  # over 10% hidden: rebuilt from its own exact vectors
    assert refined._tombstones == set() and refined.kind == "ivfpq" and len(refined) == n - n // 8 + 1
    assert refined.search(vectors[-1:], 1)[0][0].face_id == n

    plain, _ = filled(SMALL_IVF.model_copy(update=dict(pq_refine=0)), n)
    assert plain.remove([1, 2]) == 2 and plain._tombstones == set() and plain._index.ntotal == n - 2


def test_auto_switches_to_ivfpq_above_exact_max() -> None:
    params = SMALL_IVF.model_copy(update=dict(index_type="auto", index_auto_exact_max=TRAIN_SIZE + 50))
    vectors = clustered(TRAIN_SIZE + 100)
    index = GalleryIndex(DIM, params)
    index.add(list(range(TRAIN_SIZE + 50)), ["a"] * (TRAIN_SIZE + 50), vectors[: TRAIN_SIZE + 50])
    assert index.kind == "flat"  # trainable, but not above auto_exact_max yet
    index.add(list(range(TRAIN_SIZE + 50, TRAIN_SIZE + 100)), ["b"] * 50, vectors[TRAIN_SIZE + 50:])
    assert index.kind == "ivfpq"
    assert index._index.ntotal == TRAIN_SIZE + 100
    assert index.search(vectors[-3:-2], 1)[0][0].face_id == TRAIN_SIZE + 97
    index.remove(list(range(TRAIN_SIZE // 5)))  # over 10% gone: rebuilt, and below the size again: exact
    assert index.kind == "flat" and len(index) == TRAIN_SIZE + 100 - TRAIN_SIZE // 5


def test_auto_stays_exact_while_too_small_to_train() -> None:
    params = IndexSettings(index_type="auto", index_auto_exact_max=100, ivf_nlist=64)  # 64 lists want 2,496 faces
    index, _ = filled(params, 500)
    assert index.kind == "flat"


@pytest.mark.parametrize("params", [
    IndexSettings(index_type="hnsw", hnsw_m=16, hnsw_ef_search=64),
    IndexSettings(index_type="ivfpq", ivf_nlist=32, ivf_nprobe=24, pq_m=16),
], ids=["hnsw", "ivfpq"])
def test_approximate_recall_at_1_against_flat(params: IndexSettings) -> None:
    """Same top-1 face as exact search for >= 99% of queries. Not a formality: on this set HNSW with M=4 scores
    0.38, IVF-PQ without re-ranking (`pq_refine=0`) 0.97 and with re-ranking 0.9975 (nprobe 24 of 32 lists)."""
    n = 32 * MIN_TRAIN_PER_LIST + 3000
    gallery = clustered(n, clusters=100, spread=0.5, seed=3)
    rng = np.random.default_rng(4)
    queries = unit(gallery[rng.choice(n, 400, replace=False)] + 0.15 * rng.standard_normal((400, DIM)))
    ids, subjects = list(range(n)), [f"s{i}" for i in range(n)]
    exact = GalleryIndex(DIM, IndexSettings())
    exact.add(ids, subjects, gallery)
    approx = GalleryIndex(DIM, params)
    approx.add(ids, subjects, gallery)
    assert approx.kind == params.index_type
    truth = [h[0].face_id for h in exact.search(queries, 1)]
    found = [h[0].face_id for h in approx.search(queries, 1)]
    recall = float(np.mean(np.array(truth) == np.array(found)))
    assert recall >= 0.99, recall


def test_flat_index_goes_to_gpu_when_faiss_has_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU path with a stand-in for `index_cpu_to_all_gpus` (a CPU clone): copied once, kept in step."""
    copies: list[faiss.Index] = []

    def to_gpu(cpu: faiss.Index) -> faiss.Index:
        copies.append(faiss.clone_index(cpu))
        return copies[-1]

    monkeypatch.setattr(index_module, "gpu_count", lambda: 1)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", to_gpu)
    index, vectors = filled(IndexSettings(), 50)
    index.search(vectors[:1], 1)
    index.search(vectors[:1], 1)
    assert len(copies) == 1
    index.add([51], ["s51"], vectors[:1])
    assert copies[0].ntotal == 51  # adds go to the copy too
    index.remove([51])
    assert index.search(vectors[:1], 2)[0][0].face_id == 1
    assert len(copies) == 2 and copies[1].ntotal == 50  # a removal makes a fresh copy

    cpu_only, _ = filled(IndexSettings(faiss_gpu=False), 10)
    cpu_only.search(vectors[:1], 1)
    assert len(copies) == 2
