"""LFW protocol helpers: pair lists, embeddings through the service pipeline, 10-fold accuracy, ROC.

Embeddings are computed with the same decode -> detect -> largest face -> align -> embed path as the service
and cached under `.cache/anyface/` keyed by the pipeline's configuration.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from service.detection import build_detector
from service.embedding.backend import OnnxRuntimeBackend, select_embedders
from service.imaging.align import align_face
from service.imaging.decode import DecodeLimits, decode_image
from service.models.manifest import load_manifest, sha256_of
from service.models.registry import EMBEDDER_NAME
from service.pipeline import prominence
from service.settings import Settings

CACHE = Path(".cache/anyface")


@dataclass(frozen=True)
class Pair:
    a: str  # image path relative to images_deepfunneled
    b: str
    same: bool
    fold: int


def lfw_root() -> Path:
    data = os.environ.get("ANYFACE_DATA_DIR")
    if not data:
        raise SystemExit("ANYFACE_DATA_DIR is not set: point it at the directory holding lfw/")
    return Path(data) / "lfw"


def image_path(name: str, number: int) -> str:
    return f"{name}/{name}_{number:04d}.jpg"


def read_pairs(path: Path) -> list[Pair]:
    """pairs.txt (10 folds) or pairsDev*.txt (one fold): 'name i j' matched, 'name1 i name2 j' mismatched."""
    lines = path.read_text().splitlines()
    header = lines[0].split()
    folds, per_fold = (int(header[0]), int(header[1])) if len(header) == 2 else (1, int(header[0]))
    pairs: list[Pair] = []
    body = [line.split() for line in lines[1:] if line.strip()]
    for index, parts in enumerate(body):
        fold = index // (2 * per_fold) if folds > 1 else 0
        if len(parts) == 3:
            pairs.append(Pair(image_path(parts[0], int(parts[1])), image_path(parts[0], int(parts[2])), True, fold))
        else:
            pairs.append(Pair(image_path(parts[0], int(parts[1])), image_path(parts[2], int(parts[3])), False, fold))
    return pairs


class PipelineEmbedder:
    """The service's pipeline without HTTP: the main face of each photo (`prominence`), aligned at 112, embedded."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        manifest = load_manifest(self.settings.model_dir)
        self.detector = build_detector(self.settings, manifest)
        models = select_embedders(manifest, EMBEDDER_NAME, "btnet", use_branches=False)
        self.backend = OnnxRuntimeBackend(self.settings.model_dir, models, self.settings.intra_op_threads,
                                          flip=self.settings.flip_test)
        self.limits = DecodeLimits(self.settings.max_image_bytes, self.settings.max_image_pixels, 16)
        entry = models[112][1]
        self.key = hashlib.sha256(
            f"prominence|flip={self.settings.flip_test}|{self.settings.detector}|scrfd-fit|{self.settings.score_threshold}|{entry.sha256}|"
            f"{sha256_of(self.settings.model_dir / manifest.models[self.settings.detector].file)}".encode()
        ).hexdigest()[:16]

    def crop(self, data: bytes) -> np.ndarray | None:
        image = decode_image(data, self.limits)
        faces = [f for f in self.detector.detect(image) if f.score >= self.settings.score_threshold]
        if not faces:
            return None
        face = max(faces, key=lambda f: prominence(f, image.shape[1], image.shape[0]))
        return align_face(image, face.landmarks, 112)

    def embed_files(
        self, root: Path, names: Iterable[str], batch: int = 32, desc: str = "embedding"
    ) -> dict[str, np.ndarray]:
        """Embeddings by relative path; photos with no detected face are left out."""
        names = sorted(set(names))
        cache = CACHE / f"lfw-{self.key}.npz"
        known: dict[str, np.ndarray] = {}
        if cache.exists():
            with np.load(cache) as data:
                known = {k: data[k] for k in data.files}
        todo = [n for n in names if n not in known and f"nofacemark::{n}" not in known]
        crops: list[np.ndarray] = []
        pending: list[str] = []

        def flush() -> None:
            if crops:
                for name, emb in zip(pending, self.backend.embed(112, np.stack(crops)), strict=True):
                    known[name] = emb
                crops.clear()
                pending.clear()

        for name in tqdm(todo, desc=desc, unit="photo"):
            crop = self.crop((root / name).read_bytes())
            if crop is None:
                known[f"nofacemark::{name}"] = np.zeros(1, dtype=np.float32)
                continue
            crops.append(crop)
            pending.append(name)
            if len(crops) == batch:
                flush()
        flush()
        if todo:
            CACHE.mkdir(parents=True, exist_ok=True)
            np.savez(cache, **known)  # type: ignore[arg-type]
        return {n: known[n] for n in names if n in known}


def pair_scores(pairs: list[Pair], embeddings: dict[str, np.ndarray], missing: float = -1.0) -> np.ndarray:
    """Cosine similarity per pair; a pair with an undetected photo scores `missing` (counted against us)."""
    scores = np.full(len(pairs), missing, dtype=np.float64)
    for i, pair in enumerate(pairs):
        if pair.a in embeddings and pair.b in embeddings:
            scores[i] = float(np.dot(embeddings[pair.a], embeddings[pair.b]))
    return scores


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The threshold with the best accuracy (midpoint between neighbouring scores) and that accuracy."""
    order = np.sort(np.unique(scores))
    candidates = np.concatenate([[order[0] - 1e-6], (order[:-1] + order[1:]) / 2, [order[-1] + 1e-6]])
    accs = [(np.mean((scores >= t) == labels), t) for t in candidates]
    acc, thr = max(accs, key=lambda x: (x[0], -abs(x[1])))
    return float(thr), float(acc)


def ten_fold(pairs: list[Pair], scores: np.ndarray) -> tuple[float, float, list[float]]:
    """Standard LFW View 2 protocol: threshold chosen on 9 folds, accuracy measured on the 10th."""
    labels = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    accs = []
    for k in range(folds.max() + 1):
        train, test = folds != k, folds == k
        thr, _ = best_threshold(scores[train], labels[train])
        accs.append(float(np.mean((scores[test] >= thr) == labels[test])))
    return float(np.mean(accs)), float(np.std(accs)), accs


def threshold_at_far(scores: np.ndarray, labels: np.ndarray, far: float) -> float:
    """The smallest threshold whose false-accept rate on the negative pairs is at most `far`."""
    negatives = np.sort(scores[~labels])[::-1]
    allowed = int(np.floor(far * len(negatives)))
    return float(negatives[allowed] + 1e-6)


def roc(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    thresholds = np.sort(np.unique(scores))[::-1]
    tpr = np.array([np.mean(scores[labels] >= t) for t in thresholds])
    fpr = np.array([np.mean(scores[~labels] >= t) for t in thresholds])
    return fpr, tpr


Embedder = Callable[[Path, Iterable[str]], dict[str, np.ndarray]]
