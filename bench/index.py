"""Gallery index at scale: flat vs HNSW vs IVF-PQ on real LFW embeddings plus synthetic distractors.

Gallery: one photo per LFW identity (`<Name>_0001.jpg`, every identity whose photo has a detected face), embedded
through the service's face path (`evaluation.embed.FacePathEmbedder`, cached in `.cache/anyface/`), then synthetic
distractors up to 10k / 100k / 1M faces. Distractors are drawn from a Gaussian fitted to the real gallery
embeddings (their mean and full 128 x 128 covariance) and L2-normalised, so they occupy the same cone of the sphere
as real faces (isotropic noise would be far from every query and make approximate search look better than it is).
Queries: `<Name>_0002.jpg` of identities in the gallery (a different photo of an enrolled person).

Every index is the service's own `service.gallery.index.GalleryIndex` (face ids, best face per subject, `top_k=1`).
Recall@1 is the share of queries whose top-1 face id equals that of exact inner-product search (`IndexFlatIP`);
rank-1 is the share whose top-1 subject is the query's identity. Latency is per `search` call (one query, or a
batch of 64); batch 1 runs on 1 OpenMP thread, batch 64 on `--threads` (default 1; flat also on every core);
see docs/index.md for why.

    python -m bench.index                        # 10k, 100k, 1M; writes runs/bench-index/{results.json,table.md}
    python -m bench.index --sizes 10000 --queries 200
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from tqdm import tqdm

from service.gallery.index import BLAS_THRESHOLD, GalleryIndex
from service.settings import IndexSettings

_DEFAULT = IndexSettings()  # the service's index defaults, for the command-line defaults

OUT = Path("runs/bench-index")
BANDWIDTH_GBS = 30.0  # the machine's memory bandwidth the flat scan is compared against
BATCH = 64
HNSW_EF = "64,128,256,512,1024,2048"  # search-time sweeps: each stops at the first value reaching TARGET_RECALL
IVF_NPROBE = "32,64,128,256,512,1024"
TARGET_RECALL = 0.99


@dataclass
class Row:
    size: int
    requested: str  # the kind asked for (`ivfpq-pq`: IVF-PQ without re-ranking)
    kind: str  # what GalleryIndex actually built
    setting: str  # the search-time knob of this row
    build_s: float
    faiss_mb: float  # faiss.serialize_index of the index
    rss_mb: float  # RSS growth while building (FAISS + the id -> subject map)
    p50_b1_ms: float
    p50_b64_ms: float
    recall_at_1: float
    rank1: float
    extra: dict[str, Any] = field(default_factory=dict)


# -- data ---------------------------------------------------------------------------------------------------------
def real_embeddings() -> tuple[np.ndarray, list[str], np.ndarray, list[str]]:
    """Gallery (one photo per identity) and query (second photo) embeddings of LFW, through the face path."""
    from evaluation.embed import FacePathEmbedder
    from evaluation.lfw import image_name, images_dir, lfw_root

    root = images_dir(lfw_root())
    people = sorted(p.name for p in root.iterdir() if p.is_dir())
    enrol = [image_name(n, 1) for n in people]
    probe = [image_name(n, 2) for n in people if (root / image_name(n, 2)).exists()]
    emb = FacePathEmbedder().embed_files(root, enrol + probe, desc="LFW embeddings")
    g_names = [p.split("/")[0] for p in enrol if p in emb]
    gallery = np.stack([emb[p] for p in enrol if p in emb]).astype(np.float32)
    enrolled = set(g_names)
    q_paths = [p for p in probe if p in emb and p.split("/")[0] in enrolled]
    queries = np.stack([emb[p] for p in q_paths]).astype(np.float32)
    return gallery, g_names, queries, [p.split("/")[0] for p in q_paths]


def distractors(real: np.ndarray, n: int, seed: int = 0, chunk: int = 200_000) -> np.ndarray:
    """`n` unit vectors from N(mean, cov) of the real embeddings, L2-normalised."""
    mean = real.mean(axis=0).astype(np.float64)
    cov = np.cov(real.astype(np.float64), rowvar=False) + 1e-6 * np.eye(real.shape[1])
    chol = np.linalg.cholesky(cov).astype(np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((n, real.shape[1]), dtype=np.float32)
    for start in tqdm(range(0, n, chunk), desc="distractors", unit="chunk", leave=False):
        stop = min(n, start + chunk)
        z = rng.standard_normal((stop - start, real.shape[1]), dtype=np.float32)
        x = z @ chol.T + mean.astype(np.float32)
        out[start:stop] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def drawn_queries(queries: np.ndarray, names: list[str], n: int) -> tuple[np.ndarray, list[str]]:
    """`n` of the query embeddings, drawn at random (seed 1): the same draw for every bench of the index."""
    pick = np.random.default_rng(1).permutation(len(queries))[:n]
    return np.ascontiguousarray(queries[pick]), [names[i] for i in pick]


def gallery_of_size(real: np.ndarray, real_names: list[str], all_distractors: np.ndarray, size: int,
                    queries: np.ndarray) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """The gallery of `size` faces (the real ones, then distractors): face ids (from 1), subjects, vectors, and
    the face id exact inner-product search puts first for each query."""
    vectors = np.ascontiguousarray(np.vstack([real, all_distractors[:size - len(real)]]))
    subjects = real_names + [f"distractor-{i}" for i in range(size - len(real))]
    ids = np.arange(size, dtype=np.int64) + 1
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    return ids, subjects, vectors, ids[exact.search(queries, 1)[1][:, 0]]


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# -- measuring ----------------------------------------------------------------------------------------------------
def timed_searches(index: GalleryIndex, queries: np.ndarray, batch: int, threads: int, repeats: int,
                   limit: int | None = None) -> tuple[float, list[int], list[str]]:
    """p50 milliseconds per `search` call and the top-1 face id / subject of every query (first pass)."""
    faiss.omp_set_num_threads(threads)
    starts = list(range(0, len(queries), batch))
    if limit is not None:
        starts = starts[:limit]
    index.search(queries[:batch], 1)  # warm-up
    times: list[float] = []
    top_ids: list[int] = []
    top_subjects: list[str] = []
    for rep in range(repeats):
        for s in starts:
            q = queries[s:s + batch]
            if len(q) < batch and batch > 1:
                continue
            t0 = time.perf_counter()
            hits = index.search(q, 1)
            times.append((time.perf_counter() - t0) * 1000)
            if rep == 0:
                top_ids += [h[0].face_id if h else -1 for h in hits]
                top_subjects += [h[0].subject_id if h else "" for h in hits]
    return float(np.median(times)), top_ids, top_subjects


def measure(index: GalleryIndex, requested: str, setting: str, built: tuple[float, float, float], size: int,
            queries: np.ndarray, names: list[str], exact: np.ndarray, b1_queries: int, threads: int) -> Row:
    p50_b1, _, _ = timed_searches(index, queries, 1, 1, 1, limit=b1_queries)
    p50_b64, ids64, subjects = timed_searches(index, queries, BATCH, threads, 2)
    n = len(ids64)
    recall = float(np.mean(np.array(ids64) == exact[:n]))
    rank1 = float(np.mean([s == q for s, q in zip(subjects, names[:n], strict=True)]))
    return Row(size, requested, index.kind, setting, *built, p50_b1, p50_b64, recall, rank1)


def build(params: IndexSettings, ids: np.ndarray, subjects: list[str], vectors: np.ndarray,
          cores: int) -> tuple[GalleryIndex, tuple[float, float, float]]:
    gc.collect()
    faiss.omp_set_num_threads(cores)  # building parallelises over vectors: every core
    before = rss_mb()
    t0 = time.perf_counter()
    index = GalleryIndex(vectors.shape[1], params)
    index.add(ids.tolist(), subjects, vectors)
    build_s = time.perf_counter() - t0
    rss = rss_mb() - before
    return index, (build_s, index.memory_bytes() / 2**20, rss)


def set_knob(index: GalleryIndex, value: int) -> None:
    raw = index._index  # the benchmark reaches in to sweep a search-time knob without rebuilding
    if index.kind == "hnsw":
        idmap: Any = faiss.downcast_index(raw)
        hnsw: Any = faiss.downcast_index(idmap.index)
        hnsw.hnsw.efSearch = value
    elif index.kind == "ivfpq":
        faiss.extract_index_ivf(raw).nprobe = value


def run(sizes: list[int], kinds: list[str], n_queries: int, b1_queries: int, params: IndexSettings,
        threads: int, sweeps: dict[str, list[int]]) -> list[Row]:
    cores = os.cpu_count() or 1
    real, real_names, queries, q_names = real_embeddings()
    queries, q_names = drawn_queries(queries, q_names, n_queries)
    print(f"real gallery {len(real)} identities, {len(queries)} queries; {cores} cores; "
          f"BLAS threshold {faiss.cvar.distance_compute_blas_threshold}; load {os.getloadavg()}")
    all_distractors = distractors(real, max(sizes) - len(real))
    rows: list[Row] = []
    for size in sizes:
        ids, subjects, vectors, exact = gallery_of_size(real, real_names, all_distractors, size, queries)
        for kind in tqdm(kinds, desc=f"{size:,} faces", unit="index"):
            kind_params = (params.model_copy(update=dict(index_type="ivfpq", pq_refine=0)) if kind == "ivfpq-pq"
                           else params.model_copy(update=dict(index_type=kind)))
            index, built = build(kind_params, ids, subjects, vectors, cores)
            if index.kind == "flat":
                for t in sorted({threads, cores}):
                    row = measure(index, kind, f"exact, batch 64 on {t} thread(s)", built, size, queries, q_names,
                                  exact, b1_queries, t)
                    rows.append(row)
                    print(row)
                if size == max(sizes) and kind == "flat":  # batch 64 through the SIMD loop instead of BLAS
                    faiss.cvar.distance_compute_blas_threshold = BATCH + 1
                    row = measure(index, kind, f"exact, batch 64 on {threads} thread(s), no BLAS", built, size,
                                  queries, q_names, exact, b1_queries, threads)
                    faiss.cvar.distance_compute_blas_threshold = BLAS_THRESHOLD
                    rows.append(row)
                    print(row)
            else:
                knobs = sweeps[index.kind]
                name = "efSearch" if index.kind == "hnsw" else "nprobe"
                for value in knobs:
                    set_knob(index, value)
                    row = measure(index, kind, f"{name}={value}", built, size, queries, q_names, exact,
                                  b1_queries, threads)
                    if index.kind == "ivfpq":
                        ivf = faiss.extract_index_ivf(index._index)
                        row.extra = {"nlist": ivf.nlist, "m": kind_params.pq_m, "refine": kind_params.pq_refine}
                    else:
                        row.extra = {"M": params.hnsw_m, "efC": params.hnsw_ef_construction}
                    rows.append(row)
                    print(row)
                    if row.recall_at_1 >= TARGET_RECALL:  # the first setting that reaches the target ends the sweep
                        break
            del index
            gc.collect()
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        "| faces | index | search setting | build s | FAISS MB | RSS +MB | p50 batch 1 ms | p50 batch 64 ms "
        "| recall@1 vs exact | rank-1 |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        build_info = ", ".join(f"{k}={v}" for k, v in r.extra.items())
        kind = f"{r.kind} ({build_info})" if build_info else r.kind
        if r.requested != r.kind:
            kind = f"{kind}, asked {r.requested}"
        lines.append(
            f"| {r.size:,} | {kind} | {r.setting} | {r.build_s:.1f} | {r.faiss_mb:.0f} | {r.rss_mb:.0f} "
            f"| {r.p50_b1_ms:.2f} | {r.p50_b64_ms:.1f} | {r.recall_at_1:.3f} | {r.rank1:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--kinds", default="flat,hnsw,ivfpq")
    parser.add_argument("--queries", type=int, default=512, help="queries for recall and batch-64 latency")
    parser.add_argument("--b1-queries", type=int, default=200, help="single-query searches timed per row")
    parser.add_argument("--hnsw-m", type=int, default=_DEFAULT.hnsw_m)
    parser.add_argument("--ef-construction", type=int, default=_DEFAULT.hnsw_ef_construction)
    parser.add_argument("--nlist", type=int, default=_DEFAULT.ivf_nlist)
    parser.add_argument("--pq-m", type=int, default=_DEFAULT.pq_m)
    parser.add_argument("--threads", type=int, default=1,
                        help="OpenMP threads for batch 64 (flat is also measured on every core)")
    parser.add_argument("--ef-search", default=HNSW_EF, help="HNSW efSearch values to sweep")
    parser.add_argument("--nprobe", default=IVF_NPROBE, help="IVF nprobe values to sweep")
    parser.add_argument("--pq-refine", type=int, default=_DEFAULT.pq_refine)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    kinds = args.kinds.split(",")
    params = IndexSettings(index_type="flat", hnsw_m=args.hnsw_m, hnsw_ef_construction=args.ef_construction,
                           ivf_nlist=args.nlist, pq_m=args.pq_m, pq_refine=args.pq_refine)
    load = os.getloadavg()
    t0 = time.perf_counter()
    sweeps = {"hnsw": [int(v) for v in args.ef_search.split(",")], "ivfpq": [int(v) for v in args.nprobe.split(",")]}
    rows = run(sizes, kinds, args.queries, args.b1_queries, params, args.threads, sweeps)
    text = table(sorted(rows, key=lambda r: (r.size, kinds.index(r.requested))))
    flat_1m = [r for r in rows if r.requested == "flat" and r.size == max(sizes)]
    floor_ms = max(sizes) * 128 * 4 / (BANDWIDTH_GBS * 1e9) * 1000
    notes = [f"BLAS threshold {BLAS_THRESHOLD}; batch 1 on 1 thread; {os.cpu_count()} cores; "
             f"load average at start {load}, "
             f"at end {os.getloadavg()}; {platform.processor() or platform.machine()}; "
             f"total {time.perf_counter() - t0:.0f} s"]
    for r in flat_1m:
        notes.append(f"flat {r.size:,} ({r.setting}): p50 batch 1 {r.p50_b1_ms:.1f} ms = "
                     f"{r.p50_b1_ms / floor_ms:.2f} x the {floor_ms:.1f} ms bandwidth floor; batch 64 "
                     f"{r.p50_b64_ms:.1f} ms = {r.p50_b64_ms / floor_ms:.2f} x")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps([asdict(r) for r in rows], indent=1))
    (args.out / "table.md").write_text(text + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n")
    print(text)
    print("\n".join(notes))


if __name__ == "__main__":
    main()
