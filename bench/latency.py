"""Latency of the real service over HTTP, one uvicorn worker on this machine: /v1/verify of two 250 x 250 LFW
photos, and /v1/identify against galleries of 1,000 and 10,000 subjects.

Galleries are filled straight into the SQLite store before the server starts (enrolling 10,000 photos over HTTP
would only measure enrolment): real LFW embeddings first, then random unit vectors as distractors when LFW runs
out. A flat index scans every vector whatever its values, so the distractors cost what real faces cost.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from tqdm import tqdm

from evaluation.embed import FacePathEmbedder
from evaluation.lfw import images_dir, lfw_root
from service.gallery.sqlite_store import SqliteStore
from service.gallery.store import NewFace

REQUESTS = 200
WARMUP = 20


@dataclass
class Latency:
    name: str
    samples_ms: list[float]

    def pct(self, q: float) -> float:
        return float(np.percentile(self.samples_ms, q))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fill_gallery(db: Path, gallery: str, size: int, embeddings: list[np.ndarray], seed: int = 0) -> None:
    store = SqliteStore(db)
    rng = np.random.default_rng(seed)
    for i in tqdm(range(size), desc=f"gallery {gallery}", unit="subject"):
        if i < len(embeddings):
            vector = embeddings[i]
        else:
            vector = rng.standard_normal(128).astype(np.float32)
            vector /= np.linalg.norm(vector)
        store.add_faces(gallery, f"s{i:06d}", None, None, [NewFace(vector, None, "112")])
    store.close()


def _serve(db: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ANYFACE_STORE": f"sqlite:///{db}", "ANYFACE_PORT": str(port), "ANYFACE_HOST": "127.0.0.1"}
    proc = subprocess.Popen([sys.executable, "-m", "service"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("service did not become ready")


def _time(client: httpx.Client, name: str, send: object) -> Latency:
    for _ in range(WARMUP):
        send()  # type: ignore[operator]
    samples = []
    for _ in tqdm(range(REQUESTS), desc=name, unit="req"):
        started = time.perf_counter()
        response = send()  # type: ignore[operator]
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text
    return Latency(name, samples)


def run() -> list[Latency]:
    images = images_dir(lfw_root())
    people = sorted(p.name for p in images.iterdir())
    photos = sorted(str(p.relative_to(images)) for person in people for p in (images / person).glob("*_0001.jpg"))
    embeddings_by_name = FacePathEmbedder().embed_files(images, photos, desc="gallery photos")
    embeddings = [embeddings_by_name[n] for n in photos if n in embeddings_by_name]
    a = (images / "Aaron_Peirsol/Aaron_Peirsol_0001.jpg").read_bytes()
    b = (images / "Aaron_Peirsol/Aaron_Peirsol_0002.jpg").read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.sqlite3"
        fill_gallery(db, "g1k", 1_000, embeddings)
        fill_gallery(db, "g10k", 10_000, embeddings)
        port = _free_port()
        proc = _serve(db, port)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                verify = _time(client, "verify (2 photos)", lambda: client.post(
                    "/v1/verify", files={"image_a": ("a.jpg", a, "image/jpeg"), "image_b": ("b.jpg", b, "image/jpeg")}))
                results = [verify]
                for gallery, label in [("g1k", "identify (1,000 subjects)"), ("g10k", "identify (10,000 subjects)")]:
                    results.append(_time(client, label, lambda g=gallery: client.post(
                        "/v1/identify", files={"image": ("b.jpg", b, "image/jpeg")}, data={"gallery": g})))
        finally:
            proc.terminate()
            proc.wait(20)
    return results


def plot(results: list[Latency], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    upper = max(r.pct(99.5) for r in results)
    bins = np.linspace(0, upper, 60).tolist()
    for r in results:
        ax.hist(r.samples_ms, bins=bins, alpha=0.55, label=f"{r.name}: p50 {r.pct(50):.1f} ms, p99 {r.pct(99):.1f} ms")
    ax.set_xlabel("latency (ms), one request at a time, one worker, 2 CPU cores")
    ax.set_ylabel("requests")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
