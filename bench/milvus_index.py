"""Milvus rows for the gallery-index benchmark: the same galleries as `bench.index` (one LFW embedding per identity,
through the service's face path, plus distractors drawn from their fitted Gaussian), written through the service's
own `MilvusEngine` into a milvus-lite server process. Per size and index type:
- build time: upserts, a flush (sealed segments are searched through the index; growing ones by brute force), the
  index built and the collection loaded;
- the server's memory (RSS);
- single-query latency p50/p99 through `MilvusEngine.search` (the gallery filter included);
- recall@1 against exact inner-product search (FAISS `IndexFlatIP`), and rank-1.

milvus-lite is Milvus's embedded engine (Python and FAISS), the one the tests run on; a Milvus server or cluster
has its own figures, and this bench runs against one with `--uri`.

    python -m bench.milvus_index                         # 100k and 1M, HNSW and FLAT; runs/bench-milvus/
    python -m bench.milvus_index --sizes 100000 --kinds HNSW
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from tqdm import tqdm

from bench.index import distractors, real_embeddings
from service.gallery.milvus import MilvusEngine
from service.gallery.store import VectorEngineUnavailable
from service.settings import MilvusSettings

OUT = Path("runs/bench-milvus")
PARAMS = {"HNSW": ('{"M": 32, "efConstruction": 200}', '{"ef": 256}'), "FLAT": ("{}", "{}"),
          "IVF_FLAT": ('{"nlist": 1024}', '{"nprobe": 64}')}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_one(size: int, kind: str, gallery: np.ndarray, names: list[str], queries: np.ndarray, q_names: list[str],
            n_queries: int, uri: str | None) -> dict[str, Any]:
    vectors = np.vstack([gallery, distractors(gallery, size - len(gallery))]) if size > len(gallery) else gallery
    subjects = names + [f"distractor-{i}" for i in range(len(vectors) - len(names))]
    proc = None
    with tempfile.TemporaryDirectory(prefix="anyface-milvus-") as tmp:
        if uri is None:
            port = _free_port()
            proc = subprocess.Popen([sys.executable, "-m", "milvus_lite", "server", "--data-dir", tmp, "--host",
                                     "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            uri = f"http://127.0.0.1:{port}"
        build, search = PARAMS[kind]
        engine = MilvusEngine(MilvusSettings(milvus_uri=uri, milvus_collection=f"bench_{kind.lower()}_{size}",
                                             milvus_index_type=kind, milvus_index_params=build,
                                             milvus_search_params=search, milvus_timeout_s=600), 128)
        deadline = time.monotonic() + 60
        while True:
            try:
                engine.ping()
                break
            except VectorEngineUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        started = time.perf_counter()
        step = 10_000
        for s in tqdm(range(0, len(vectors), step), desc=f"milvus {kind} {size:,}", unit="batch", leave=False):
            engine.upsert("bench", list(range(s, min(s + step, len(vectors)))), subjects[s:s + step],
                          vectors[s:s + step])
        engine.flush()  # seal the segments: searches then go through the index
        engine.search("bench", queries[:1], 1)  # the index is built and loaded by the first search at the latest
        built_s = time.perf_counter() - started
        memory = rss_mb(proc.pid) if proc is not None else float("nan")
        exact = faiss.IndexFlatIP(128)
        exact.add(vectors)
        q = queries[:n_queries]
        _, truth = exact.search(q, 1)
        latencies, top = [], []
        for i in tqdm(range(len(q)), desc="queries", leave=False):
            t = time.perf_counter()
            [hits] = engine.search("bench", q[i:i + 1], 1)
            latencies.append((time.perf_counter() - t) * 1000)
            top.append(hits[0] if hits else None)
        recall = float(np.mean([h is not None and h.face_id == truth[i, 0] for i, h in enumerate(top)]))
        rank1 = float(np.mean([h is not None and h.subject_id == q_names[i] for i, h in enumerate(top)]))
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    return {"engine": "milvus-lite", "kind": kind, "size": len(vectors), "build_s": round(built_s, 1),
            "server_rss_mb": round(memory), "p50_ms": round(float(np.percentile(latencies, 50)), 2),
            "p99_ms": round(float(np.percentile(latencies, 99)), 2), "recall_at_1": round(recall, 4),
            "rank1": round(rank1, 4), "build_params": build, "search_params": search, "queries": len(q)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.milvus_index", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--kinds", default="HNSW,FLAT")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--uri", help="a running Milvus instead of a milvus-lite server started here")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    gallery, names, queries, q_names = real_embeddings()
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        for kind in args.kinds.split(","):
            rows.append(run_one(size, kind, gallery, names, queries, q_names, args.queries, args.uri))
            print(json.dumps(rows[-1]))
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"cpus": os.cpu_count(), "date": time.strftime("%F %T"), "load": os.getloadavg(), "rows": rows}
    (args.out / "results.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
