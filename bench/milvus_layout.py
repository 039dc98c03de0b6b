"""How to lay galleries out in Milvus, measured side by side in one run: one collection whose `gallery` is a plain
filtered field (what the service does), against one whose `gallery` is a partition key (Milvus hashes galleries
into partitions and prunes the others when a search filters on it). Both hold the same faces: `--galleries`
galleries of `--per-gallery` random unit vectors; each search asks one gallery for its best 5, as identify does.

    python -m bench.milvus_layout                    # 100 galleries x 1,000 faces; runs/bench-milvus/layout.json
    python -m bench.milvus_layout --uri http://milvus:19530   # on a Milvus server or cluster
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from bench.milvus_lite import milvus_lite_server

OUT = Path("runs/bench-milvus")


def _collection(client: Any, name: str, partition_key: bool) -> None:
    from pymilvus import DataType

    schema = client.create_schema(auto_id=False)
    schema.add_field("face_id", DataType.INT64, is_primary=True)
    schema.add_field("gallery", DataType.VARCHAR, max_length=64, is_partition_key=partition_key)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=128)
    index = client.prepare_index_params()
    index.add_index("embedding", index_type="HNSW", metric_type="IP", params={"M": 32, "efConstruction": 200})
    kwargs = {"num_partitions": 64} if partition_key else {}
    client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong", **kwargs)


def main(argv: list[str] | None = None) -> None:
    from pymilvus import MilvusClient

    parser = argparse.ArgumentParser(prog="python -m bench.milvus_layout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--galleries", type=int, default=100)
    parser.add_argument("--per-gallery", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--uri", help="a running Milvus (a cluster's proxy) instead of a local milvus-lite server")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    n = args.galleries * args.per_gallery
    vectors = rng.standard_normal((n, 128)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = [{"face_id": i, "gallery": f"g{i // args.per_gallery}", "embedding": vectors[i].tolist()} for i in range(n)]
    results: dict[str, Any] = {"galleries": args.galleries, "per_gallery": args.per_gallery, "queries": args.queries}
    with tempfile.TemporaryDirectory(prefix="anyface-layout-") as tmp, (
            nullcontext() if args.uri else milvus_lite_server(Path(tmp))) as server:
        client = MilvusClient(uri=args.uri or server.uri if server else args.uri, timeout=60)
        for name in ("filtered", "partition_key"):  # a shared server: start from nothing
            client.drop_collection(name)
        for layout, key in (("filtered field", False), ("partition key", True)):
            name = "partition_key" if key else "filtered"
            try:
                _collection(client, name, key)
            except Exception as exc:  # an engine without partition keys says so
                results[layout] = {"error": str(exc)[:300]}
                continue
            started = time.perf_counter()
            for s in range(0, n, 10_000):
                client.insert(name, rows[s:s + 10_000])
            client.flush(name)
            built = time.perf_counter() - started
            latencies = []
            for q in range(args.queries):
                gallery = q % args.galleries
                probe = vectors[gallery * args.per_gallery + q % args.per_gallery]
                t = time.perf_counter()
                client.search(name, data=[probe.tolist()], limit=5, filter=f'gallery == "g{gallery}"',
                              search_params={"params": {"ef": 256}})
                latencies.append((time.perf_counter() - t) * 1000)
            results[layout] = {"build_s": round(built, 1), "p50_ms": round(float(np.percentile(latencies, 50)), 1),
                               "p99_ms": round(float(np.percentile(latencies, 99)), 1)}
            print(layout, results[layout])
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "layout.json").write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
