"""The two vector engines side by side, from one run: the embedded FAISS index (`GalleryIndex`, in the process) and
Milvus (the service's `MilvusEngine` against a milvus-lite server started here, or the Milvus at `--uri`), on the
same galleries and the same queries.

Galleries are those of `bench.index`: one LFW embedding per identity through the service's face path, plus
distractors drawn from their fitted Gaussian, up to 100k and 1M faces. Each engine runs with the service's
defaults for it (FAISS: `IndexSettings`; Milvus: `MilvusSettings`), so a row is what a deployment gets. Per size
and index:
- build s: FAISS `GalleryIndex.add` of every face (on every core); Milvus upserts by 10,000, a flush (sealed
  segments are searched through the index; growing ones by brute force) and the first search (index built, loaded);
- memory: the growth of the FAISS process's RSS while building; the growth of the Milvus server's RSS over the
  empty server (its total is in results.json);
- p50/p99 of one single-query search as the service makes it (FAISS on 1 thread; Milvus through the gallery
  filter), and, for Milvus, the p50 of the same search without the filter, to show what the filter costs;
- recall@1 against exact inner-product search (FAISS `IndexFlatIP`) and rank-1.

    python -m bench.engines                       # 100k and 1M; runs/bench-engines/{results.json,table.md}
    python -m bench.engines --sizes 100000 --queries 50
    python -m bench.engines --sizes 1000000 --faiss-kinds '' --milvus-kinds HNSW --milvus-ef 512,1024,2048
    python -m bench.engines --uri http://milvus:19530  # a Milvus server instead of milvus-lite
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from tqdm import tqdm

from bench.index import build, distractors, drawn_queries, gallery_of_size, real_embeddings
from bench.milvus_lite import LiteServer, milvus_lite_server
from service.gallery.index import Hit
from service.gallery.milvus import MilvusEngine
from service.settings import IndexSettings, MilvusSettings

OUT = Path("runs/bench-engines")
GALLERY = "bench"
UPSERT_CHUNK = 10_000
FAISS_KINDS = ("flat", "hnsw", "ivfpq")  # flat: the default; ivfpq: what `auto` picks past 200k faces
MILVUS_KINDS = ("FLAT", "HNSW")
TARGET_RECALL = 0.99


@dataclass
class Row:
    size: int
    engine: str
    index: str  # kind and the parameters it ran with
    build_s: float
    memory_mb: float  # RSS growth: the FAISS process while building, or the Milvus server over its empty self
    p50_ms: float
    p99_ms: float
    p50_unfiltered_ms: float | None  # Milvus only: the same search without the gallery filter
    recall_at_1: float
    rank1: float
    queries: int
    server_rss_mb: float | None = None


def _latencies(search: Callable[[np.ndarray], Hit | None], queries: np.ndarray) -> tuple[list[float], list[Hit | None]]:
    search(queries[:1])  # warm-up
    times, top = [], []
    for i in tqdm(range(len(queries)), desc="queries", leave=False):
        t = time.perf_counter()
        top.append(search(queries[i:i + 1]))
        times.append((time.perf_counter() - t) * 1000)
    return times, top


def _scores(top: list[Hit | None], truth: np.ndarray, names: list[str]) -> tuple[float, float]:
    recall = float(np.mean([h is not None and h.face_id == truth[i] for i, h in enumerate(top)]))
    rank1 = float(np.mean([h is not None and h.subject_id == names[i] for i, h in enumerate(top)]))
    return recall, rank1


def faiss_row(kind: str, ids: np.ndarray, subjects: list[str], vectors: np.ndarray, queries: np.ndarray,
              truth: np.ndarray, names: list[str]) -> Row:
    params = IndexSettings(index_type=kind)
    index, (build_s, _, memory) = build(params, ids, subjects, vectors, os.cpu_count() or 1)
    faiss.omp_set_num_threads(params.faiss_threads or os.cpu_count() or 1)  # searches as the service makes them

    def search(q: np.ndarray) -> Hit | None:
        [hits] = index.search(q, 1)
        return hits[0] if hits else None

    times, top = _latencies(search, queries)
    recall, rank1 = _scores(top, truth, names)
    described = {"flat": "exact", "hnsw": f"M={params.hnsw_m}, efC={params.hnsw_ef_construction}; "
                 f"efSearch={params.hnsw_ef_search}",
                 "ivfpq": f"nlist={params.ivf_nlist}, m={params.pq_m}, refine={params.pq_refine}; "
                 f"nprobe={params.ivf_nprobe}"}[index.kind]
    if index.kind != kind:
        described += f"; asked {kind}, below its training size"
    return Row(len(ids), "FAISS (in process)", f"{index.kind} ({described})", round(build_s, 1), round(memory),
               *_percentiles(times), None, recall, rank1, len(queries))


def milvus_rows(kind: str, ids: np.ndarray, subjects: list[str], vectors: np.ndarray, queries: np.ndarray,
                truth: np.ndarray, names: list[str], uri: str | None, ef_values: list[int]) -> list[Row]:
    """One row per search setting on one built collection: the service's default, then for HNSW each of
    `ef_values` (a sweep, as `bench.index` does for FAISS)."""
    defaults = MilvusSettings()
    build_params = defaults.milvus_index_params if kind == "HNSW" else "{}"
    search_settings = ([defaults.milvus_search_params] + [json.dumps({"ef": ef}) for ef in ef_values]
                       if kind == "HNSW" else ["{}"])
    collection = f"bench_{kind.lower()}_{len(ids)}"
    engine_name = "Milvus (milvus-lite)" if uri is None else f"Milvus ({uri})"
    rows = []
    with tempfile.TemporaryDirectory(prefix="anyface-milvus-") as tmp:
        server_cm: AbstractContextManager[LiteServer | None] = (
            milvus_lite_server(Path(tmp)) if uri is None else nullcontext())
        with server_cm as server:
            settings = MilvusSettings(milvus_uri=server.uri if server else uri, milvus_collection=collection,
                                      milvus_index_type=kind,
                                      milvus_index_params=build_params, milvus_timeout_s=600)
            engine = MilvusEngine(settings, vectors.shape[1])
            empty_rss = server.rss_mb() if server else float("nan")
            started = time.perf_counter()
            for s in tqdm(range(0, len(ids), UPSERT_CHUNK), desc=f"milvus {kind} upserts", unit="chunk",
                          leave=False):
                engine.upsert(GALLERY, ids[s:s + UPSERT_CHUNK].tolist(), subjects[s:s + UPSERT_CHUNK],
                              vectors[s:s + UPSERT_CHUNK])
            engine.flush()
            engine.search(GALLERY, queries[:1], 1)  # the index is built and loaded by the first search at the latest
            build_s = time.perf_counter() - started
            server_rss = server.rss_mb() if server else float("nan")
            for n, search_params in enumerate(search_settings):
                searcher = MilvusEngine(settings.model_copy(update={"milvus_search_params": search_params}),
                                        vectors.shape[1])

                def search(q: np.ndarray, searcher: MilvusEngine = searcher) -> Hit | None:
                    [hits] = searcher.search(GALLERY, q, 1)
                    return hits[0] if hits else None

                times, top = _latencies(search, queries)
                unfiltered = _unfiltered_p50(engine, queries, json.loads(search_params)) if n == 0 else None
                recall, rank1 = _scores(top, truth, names)
                described = "exact" if kind == "FLAT" else f"{build_params}; {search_params}"
                rows.append(Row(len(ids), engine_name, f"{kind} ({described})", round(build_s, 1),
                                round(server_rss - empty_rss), *_percentiles(times), unfiltered, recall, rank1,
                                len(queries), round(server_rss)))
                tqdm.write(json.dumps(asdict(rows[-1])))
                if n > 0 and recall >= TARGET_RECALL:  # the sweep stops at the first setting that reaches it
                    break
            if uri is not None:
                engine._call("drop_collection")  # a shared server keeps nothing of the bench
    return rows


def _unfiltered_p50(engine: MilvusEngine, queries: np.ndarray, params: dict[str, Any]) -> float:
    times = []
    for i in range(len(queries)):
        t = time.perf_counter()
        engine._call("search", data=[queries[i].tolist()], limit=engine.settings.milvus_search_factor,
                     output_fields=["subject_id"], search_params={"metric_type": "IP", "params": params})
        times.append((time.perf_counter() - t) * 1000)
    return round(float(np.percentile(times, 50)), 2)


def _percentiles(times: list[float]) -> tuple[float, float]:
    return round(float(np.percentile(times, 50)), 2), round(float(np.percentile(times, 99)), 2)


def table(rows: list[Row]) -> str:
    lines = ["| faces | engine | index (build; search) | build s | memory +MB | p50 ms | p99 ms "
             "| p50 ms, no gallery filter | recall@1 vs exact | rank-1 |",
             "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        unfiltered = "" if r.p50_unfiltered_ms is None else f"{r.p50_unfiltered_ms:,.2f}"
        lines.append(f"| {r.size:,} | {r.engine} | {r.index} | {r.build_s:,.1f} | {r.memory_mb:,.0f} "
                     f"| {r.p50_ms:,.2f} | {r.p99_ms:,.2f} | {unfiltered} | {r.recall_at_1:.3f} | {r.rank1:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.engines", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--faiss-kinds", default=",".join(FAISS_KINDS))
    parser.add_argument("--milvus-kinds", default=",".join(MILVUS_KINDS))
    parser.add_argument("--queries", type=int, default=100, help="the same queries for every row")
    parser.add_argument("--milvus-ef", default="", help="HNSW ef values to sweep after the default, e.g. 512,1024 "
                        f"(stops at the first reaching recall@1 {TARGET_RECALL})")
    parser.add_argument("--uri", help="a running Milvus instead of a milvus-lite server started per row")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    ef_values = [int(v) for v in args.milvus_ef.split(",") if v]
    load, t0 = os.getloadavg(), time.perf_counter()
    real, real_names, queries, q_names = real_embeddings()
    queries, q_names = drawn_queries(queries, q_names, args.queries)
    all_distractors = distractors(real, max(sizes) - len(real))
    rows: list[Row] = []
    for size in sizes:
        ids, subjects, vectors, truth = gallery_of_size(real, real_names, all_distractors, size, queries)
        jobs = ([("faiss", k) for k in args.faiss_kinds.split(",") if k]
                + [("milvus", k) for k in args.milvus_kinds.split(",") if k])
        for engine, kind in tqdm(jobs, desc=f"{size:,} faces", unit="index"):
            if engine == "faiss":
                rows.append(faiss_row(kind, ids, subjects, vectors, queries, truth, q_names))
                tqdm.write(json.dumps(asdict(rows[-1])))
            else:
                rows += milvus_rows(kind, ids, subjects, vectors, queries, truth, q_names, args.uri, ef_values)
            gc.collect()
    notes = [f"{time.strftime('%F')}, {os.cpu_count()} cores, {platform.processor() or platform.machine()}; "
             f"load average at start {load[0]:.2f}, at end {os.getloadavg()[0]:.2f}; "
             f"{len(queries)} queries per row; total {time.perf_counter() - t0:.0f} s"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"notes": notes, "rows": [asdict(r) for r in rows]},
                                                      indent=1) + "\n")
    text = table(rows) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    (args.out / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
