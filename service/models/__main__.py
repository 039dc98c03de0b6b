"""`python -m service.models fetch|verify`: install or check the pinned model artifacts."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from service.models.fetch import FetchError, fetch_all, verify_all
from service.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m service.models")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("fetch", "verify"):
        p = sub.add_parser(name)
        p.add_argument("--model-dir", type=Path, default=settings.model_dir)
        p.add_argument("--mirror", type=Path, default=settings.model_mirror,
                       help="local mirror directory (default: $ANYFACE_MODEL_MIRROR)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "fetch":
            fetch_all(args.model_dir, args.mirror)
        else:
            verify_all(args.model_dir)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
