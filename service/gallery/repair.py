"""`python -m service.gallery.repair`: make Milvus hold exactly the store's faces (after a Milvus outage, or a
Milvus restored from an older backup): every face of the store is upserted, and every vector whose face the store
no longer has is deleted. Safe to run while the service runs; the store is the source of truth."""

from __future__ import annotations

import argparse
import json

from service.gallery.factory import build_store
from service.gallery.milvus import MilvusEngine, repair
from service.models.contract import EMBEDDING_SIZE
from service.settings import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m service.gallery.repair", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=EMBEDDING_SIZE, help="embedding size (default %(default)s)")
    args = parser.parse_args(argv)
    settings = Settings()  # ANYFACE_STORE and ANYFACE_MILVUS_* as the service reads them
    store = build_store(settings.store)
    try:
        print(json.dumps(repair(store, MilvusEngine(settings.milvus, args.dim))))
    finally:
        store.close()


if __name__ == "__main__":
    main()
