"""Pre-fill a gallery with N LFW identities before a load test (idempotent), and the shared load-test plan.

Used by deploy/locust/locustfile.py (on test start) and runnable on its own:

    ANYFACE_API_KEY=... python deploy/locust/prefill.py --host http://127.0.0.1:8000 --n 1000

Images come from LFW at $ANYFACE_DATA_DIR/lfw/images_deepfunneled/<Name>/*.jpg. The enrolled identities are a
seeded random sample of the people with at least two images (the first image is enrolled, the others are
genuine probes); people left out of the sample are impostor probes and enrolment material. Every process
(prefill, locust master, locust workers) derives the same plan from the same seed and data.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

log = logging.getLogger("anyface.prefill")

LFW_SUBDIR = Path("lfw") / "images_deepfunneled"
DEFAULT_GALLERY = "loadtest"
DEFAULT_PREFILL = 500
DEFAULT_SEED = 0
MAX_IMPOSTOR_IMAGES = 5000
_SUBJECT_RE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Identity:
    subject_id: str
    name: str
    enrol: tuple[Path, ...]
    probes: tuple[Path, ...]


@dataclass
class Plan:
    gallery: str
    enrolled: list[Identity]
    impostors: list[Path] = field(default_factory=list)


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


def api_key_from_env() -> str | None:
    """ANYFACE_API_KEY, else the first key of ANYFACE_API_KEYS (comma-separated list or JSON)."""
    raw = (os.environ.get("ANYFACE_API_KEY") or os.environ.get("ANYFACE_API_KEYS") or "").strip()
    if not raw:
        return None
    if raw.startswith("["):
        first = json.loads(raw)[0]
        return first["key"] if isinstance(first, dict) else str(first)
    return raw.split(",")[0].strip() or None


def lfw_root(data_dir: str | Path | None = None) -> Path:
    base = Path(data_dir or os.environ.get("ANYFACE_DATA_DIR") or "data")
    root = base / LFW_SUBDIR
    if not root.is_dir():
        raise FileNotFoundError(
            f"LFW not found at {root}: set ANYFACE_DATA_DIR to the directory holding lfw/images_deepfunneled"
        )
    return root


def subject_id_for(name: str) -> str:
    return "lfw-" + _SUBJECT_RE.sub("_", name)[:100]


def make_plan(root: Path, n: int, gallery: str, seed: int = DEFAULT_SEED, enrol_images: int = 1) -> Plan:
    people: dict[str, list[Path]] = {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir():
            images = sorted(p for p in Path(entry.path).iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
            if images:
                people[entry.name] = images
    if not people:
        raise FileNotFoundError(f"no images under {root}")
    rng = random.Random(seed)
    multi = sorted(name for name, imgs in people.items() if len(imgs) > enrol_images)
    single = sorted(name for name, imgs in people.items() if len(imgs) <= enrol_images)
    rng.shuffle(multi)
    rng.shuffle(single)
    chosen = (multi + single)[:n]
    if len(chosen) < n:
        log.warning("only %d identities available in %s (asked for %d)", len(chosen), root, n)
    enrolled = []
    for name in chosen:
        imgs = people[name]
        enrol = tuple(imgs[:enrol_images])
        probes = tuple(imgs[enrol_images:]) or enrol
        enrolled.append(Identity(subject_id_for(name), name.replace("_", " "), enrol, probes))
    chosen_set = set(chosen)
    impostors = [p for name in sorted(people) if name not in chosen_set for p in people[name]]
    rng.shuffle(impostors)
    return Plan(gallery=gallery, enrolled=enrolled, impostors=impostors[:MAX_IMPOSTOR_IMAGES])


@lru_cache(maxsize=4096)
def image_bytes(path: Path) -> bytes:
    return path.read_bytes()


def image_file(path: Path) -> tuple[str, bytes, str]:
    """A (filename, content, content type) tuple for a multipart `files` field."""
    return (path.name, image_bytes(path), "image/jpeg")


def _enrol_one(session, host: str, gallery: str, ident: Identity, timeout: float) -> str:
    base = f"{host.rstrip('/')}/v1/galleries/{gallery}/subjects/{ident.subject_id}"
    resp = session.get(base, timeout=timeout)
    if resp.status_code == 200:
        return "existing"
    if resp.status_code != 404:
        raise RuntimeError(f"GET {base}: {resp.status_code} {resp.text[:200]}")
    files = [("images", image_file(p)) for p in ident.enrol]
    # LFW photos often show bystanders: enrol the largest (the centred) face
    data = {"name": ident.name, "metadata": json.dumps({"source": "lfw", "loadtest": True}), "allow_multiple": "true"}
    resp = session.post(f"{base}/faces", files=files, data=data, timeout=timeout)
    if resp.status_code not in (200, 201):
        raise RuntimeError(f"enrol {ident.subject_id}: {resp.status_code} {resp.text[:200]}")
    return "created"


def prefill(host: str, plan: Plan, api_key: str | None, timeout: float = 30.0, workers: int = 4) -> dict[str, int]:
    """Enrol every identity of the plan that the gallery does not hold yet. Only `host` is contacted."""
    import requests  # shipped with locust (the `load` extra)

    session = requests.Session()
    if api_key:
        session.headers["X-API-Key"] = api_key
    counts = {"created": 0, "existing": 0, "failed": 0}
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(_enrol_one, session, host, plan.gallery, ident, timeout) for ident in plan.enrolled]
        for i, fut in enumerate(futures, 1):
            try:
                counts[fut.result()] += 1
            except Exception as exc:  # keep going: a few bad images must not abort a long prefill
                counts["failed"] += 1
                log.warning("%s", exc)
            if i % 100 == 0:
                log.info("prefill %d/%d (%s)", i, len(futures), counts)
    log.info("prefill of gallery %r done in %.1fs: %s", plan.gallery, time.monotonic() - started, counts)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", required=True, help="service base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--gallery", default=os.environ.get("ANYFACE_LOAD_GALLERY", DEFAULT_GALLERY))
    parser.add_argument("--n", type=int, default=env_int("ANYFACE_LOAD_PREFILL", DEFAULT_PREFILL))
    parser.add_argument("--seed", type=int, default=env_int("ANYFACE_LOAD_SEED", DEFAULT_SEED))
    parser.add_argument("--data-dir", default=os.environ.get("ANYFACE_DATA_DIR"))
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=env_float("ANYFACE_LOAD_TIMEOUT", 30.0))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    plan = make_plan(lfw_root(args.data_dir), args.n, args.gallery, args.seed)
    counts = prefill(args.host, plan, api_key_from_env(), args.timeout, args.workers)
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
