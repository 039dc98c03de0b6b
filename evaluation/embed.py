"""Embeddings of LFW photos through the service's own face path, cached on disk.

`FacePathEmbedder` is `service.core.wiring.build_offline` without HTTP: decode, detect, filter with the configured
face filter, take the main face (`rank_by_prominence`), align it at 112 and embed it with the trunk (with the
mirror image too under `flip_test`). A photo without a face gets no embedding; a pair that uses it scores as a
non-match (`evaluation.verification.pair_scores`), so it counts against the system.

Embeddings are cached in `<cache_dir>/lfw-<key>.npz` (default `.cache/anyface/`); the key covers everything that
decides the result: the decode limits and detection settings, the detector's and the trunk's checksums, flip test,
the resolution and `FACE_PATH_VERSION` (bumped when the code of the face path changes what it finds).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from service.core.wiring import DETECTOR_SCORE_FLOOR, build_offline
from service.landmarks.factory import MANIFEST_NAMES
from service.models.contract import TRUNK_RESOLUTION
from service.models.manifest import Manifest
from service.settings import Settings

CACHE_DIR = Path(".cache/anyface")
FACE_PATH_VERSION = 2  # 1: bench.lfw's own detector call (before service.core); 2: service.core.face_path
SAVE_EVERY = 1000  # photos embedded between two writes of the cache (an interrupted run keeps its work)


def face_path_fingerprint(settings: Settings, manifest: Manifest) -> dict[str, Any]:
    """What decides which face the service's face path finds in a photo and where its landmarks are."""
    detection = settings.detection
    return {
        "version": FACE_PATH_VERSION,
        "decode": settings.decode.model_dump(mode="json"),
        "detection": detection.model_dump(mode="json") | {"score_threshold": detection.score_threshold},
        "detector_sha256": manifest.models[detection.detector].sha256,
        "detector_score_floor": DETECTOR_SCORE_FLOOR,
        "landmark_sha256": {m: manifest.models[MANIFEST_NAMES[m]].sha256
                            for m in detection.landmark_models if m in MANIFEST_NAMES},
        "main_face": "rank_by_prominence",
    }


def digest(value: Any) -> str:
    """A short stable hash of a JSON-able value (cache keys)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


class FacePathEmbedder:
    """The main face of each photo through the service's face path, aligned at 112 and embedded by the trunk."""

    def __init__(self, settings: Settings | None = None, cache_dir: Path = CACHE_DIR) -> None:
        self.faces = build_offline(settings)
        self.settings = self.faces.settings
        trunk = self.faces.backend.models[TRUNK_RESOLUTION][1]
        self.key = digest({
            "face_path": face_path_fingerprint(self.settings, self.faces.manifest),
            "embedder_sha256": trunk.sha256, "flip_test": self.settings.flip_test, "resolution": TRUNK_RESOLUTION,
        })
        self.cache = cache_dir / f"lfw-{self.key}.npz"

    def crop(self, data: bytes) -> np.ndarray | None:
        """The main face aligned at 112, or None without a face."""
        return self.faces.path.main_face_crop(data, self.faces.face_filter, TRUNK_RESOLUTION)

    def embed_photo(self, data: bytes) -> np.ndarray | None:
        """One photo end to end (what a speed measurement times); None without a face."""
        crop = self.crop(data)
        return None if crop is None else self.faces.backend.embed(TRUNK_RESOLUTION, crop[None])[0]

    def embed_files(self, images: Path, names: Iterable[str], batch: int = 32, desc: str = "embedding"
                    ) -> dict[str, np.ndarray]:
        """Unit embeddings by image name (relative to `images`); photos without a face are left out."""
        wanted = sorted(set(names))
        known, no_face = read_cache(self.cache)
        todo = [n for n in wanted if n not in known and n not in no_face]
        crops: list[np.ndarray] = []
        pending: list[str] = []
        for i, name in enumerate(tqdm(todo, desc=desc, unit="photo", disable=not todo)):
            crop = self.crop((images / name).read_bytes())
            if crop is None:
                no_face.add(name)
            else:
                crops.append(crop)
                pending.append(name)
            if len(crops) == batch or i == len(todo) - 1:
                if crops:
                    known.update(zip(pending, self.faces.backend.embed(TRUNK_RESOLUTION, np.stack(crops)),
                                     strict=True))
                crops, pending = [], []
            if i % SAVE_EVERY == SAVE_EVERY - 1 or i == len(todo) - 1:
                write_cache(self.cache, known, no_face)
        return {n: known[n] for n in wanted if n in known}


def read_cache(path: Path) -> tuple[dict[str, np.ndarray], set[str]]:
    """Embeddings by image name and the names of the photos without a face, from a cache file (empty if none)."""
    if not path.exists():
        return {}, set()
    with np.load(path) as data:
        return dict(zip(data["names"].tolist(), data["embeddings"], strict=True)), set(data["no_face"].tolist())


def write_cache(path: Path, known: dict[str, np.ndarray], no_face: set[str]) -> None:
    """Replace a cache file atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    names = sorted(known)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as fh:
        np.savez(fh, names=np.array(names, dtype=str),
                 embeddings=np.stack([known[n] for n in names]).astype(np.float32) if names else np.zeros((0, 0)),
                 no_face=np.array(sorted(no_face), dtype=str))
    tmp.replace(path)
