"""LFW View 2 (6,000 pairs, 10 folds) through the full pipeline, AnyFace and the `face_recognition` library side by
side on the same photos: 10-fold accuracy, TAR at FAR 1e-3 and photos per second, plus a ROC plot.

`python -m bench.accuracy [--systems anyface scrfd dlib]` prints a JSON summary and caches embeddings under
`.cache/anyface/`; `bench.run` puts the numbers into docs/benchmarks.md. The protocol and the metrics are the
shared `evaluation` package's; AnyFace's photos go through the service's face path (`evaluation.embed`).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from evaluation.embed import CACHE_DIR, FacePathEmbedder, read_cache, write_cache
from evaluation.lfw import images_dir, lfw_root, pair_folds, pair_images, pair_labels, read_pairs
from evaluation.plots import Panel, curves_of, plot_roc
from evaluation.verification import kfold_accuracy, pair_scores, roc, tar_at_far
from service.imaging.decode import decode_image
from service.settings import DecodeLimits, DetectionSettings, Settings

if TYPE_CHECKING:
    from bench.dlib_baseline import DlibFaceRecognition

SYSTEMS = ["anyface", "anyface-noflip", "yunet-points", "scrfd", "scrfd-flip", "dlib"]
SPEED_SAMPLE = 200  # photos timed end to end (decode, detect, align, embed), one at a time, one process
DLIB_MISSING = -10.0  # dlib's score (negative distance) of a pair with a photo without a face: below every pair


@dataclass
class SystemResult:
    system: str
    accuracy: float
    std: float
    tar_at_far_1e3: float
    photos_without_face: int
    photos_per_second: float


def _dlib_embeddings(images: Path, names: list[str]) -> dict[str, np.ndarray]:
    from bench.dlib_baseline import DlibFaceRecognition

    cache = CACHE_DIR / "lfw-dlib-v2.npz"
    known, no_face = read_cache(cache)
    legacy = CACHE_DIR / "lfw-dlib.npz"  # the format before evaluation.embed: one array per name, empty = no face
    if not cache.exists() and legacy.exists():
        with np.load(legacy) as data:
            known = {k: data[k] for k in data.files if data[k].size}
            no_face = {k for k in data.files if not data[k].size}
    todo = [n for n in names if n not in known and n not in no_face]
    model = DlibFaceRecognition()
    for i, name in enumerate(tqdm(todo, desc="face_recognition", unit="photo")):
        emb = model.embed(decode_image((images / name).read_bytes(), DecodeLimits()))
        if emb is None:
            no_face.add(name)
        else:
            known[name] = emb
        if i % 500 == 499 or i == len(todo) - 1:
            write_cache(cache, known, no_face)
    return {n: known[n] for n in names if n in known}


def _dlib_photo(model: DlibFaceRecognition, data: bytes) -> np.ndarray | None:
    return model.embed(decode_image(data, DecodeLimits()))


def _speed(embed_photo: Callable[[bytes], object], images: Path, names: list[str]) -> float:
    sample = names[:SPEED_SAMPLE]
    started = time.perf_counter()
    for name in sample:
        embed_photo((images / name).read_bytes())
    return len(sample) / (time.perf_counter() - started)


def anyface_settings(system: str) -> Settings:
    """`anyface` is the default pipeline (YuNet, the default landmark stage and flip test), `anyface-noflip` the
    same without the flip test; `yunet-points` YuNet with its own 5 points and no flip test (the default before
    the landmark stage); `scrfd*` SCRFD with its own points (non-commercial weights); `*-flip` adds the flip test."""
    if system.startswith("scrfd"):
        return Settings(detection=DetectionSettings(detector="scrfd", landmarks="detector"),
                        flip_test=system.endswith("-flip"))
    if system == "yunet-points":
        return Settings(detection=DetectionSettings(landmarks="detector"), flip_test=False)
    if system == "anyface-noflip":
        return Settings(flip_test=False)
    return Settings()


def system_label(settings: Settings) -> str:
    """How a report names an AnyFace configuration: detector, landmark models, embedder, flip test."""
    detection = settings.detection
    points = "its own points" if detection.landmarks == "detector" else f"{detection.landmarks} points"
    return (f"AnyFace ({detection.detector}, {points}, MobileFaceNet"
            f"{', flip test' if settings.flip_test else ''})")


def evaluate(systems: list[str]) -> tuple[list[SystemResult], dict[str, tuple[np.ndarray, np.ndarray]]]:
    root = lfw_root()
    pairs = read_pairs(root / "pairs.txt")
    images = images_dir(root)
    names = pair_images(pairs)
    labels, folds = pair_labels(pairs), pair_folds(pairs)
    results, curves = [], {}
    for system in systems:
        if system == "dlib":
            from bench.dlib_baseline import DlibFaceRecognition

            embeddings = _dlib_embeddings(images, names)
            scores = pair_scores(pairs, embeddings, DLIB_MISSING, DlibFaceRecognition.similarity)
            speed = _speed(partial(_dlib_photo, DlibFaceRecognition()), images, names)
            label = DlibFaceRecognition.name
        else:
            embedder = FacePathEmbedder(anyface_settings(system))
            embeddings = embedder.embed_files(images, names, desc=system)
            scores = pair_scores(pairs, embeddings)
            speed = _speed(embedder.embed_photo, images, names)  # with flip_test the mirror is embedded too
            label = system_label(embedder.settings)
        folded = kfold_accuracy(scores, labels, folds)
        results.append(SystemResult(label, folded.mean, folded.std, tar_at_far(scores, labels, 1e-3),
                                    sum(1 for n in names if n not in embeddings), speed))
        curves[label] = roc(scores, labels)
    return results, curves


def plot_lfw_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], out: Path) -> Path:
    return plot_roc([Panel("LFW View 2, 6,000 pairs", curves_of(curves))], out)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.accuracy")
    parser.add_argument("--systems", nargs="+", default=SYSTEMS, choices=SYSTEMS)
    parser.add_argument("--roc", type=Path, default=None)
    args = parser.parse_args()
    results, curves = evaluate(args.systems)
    if args.roc:
        plot_lfw_roc(curves, args.roc)
    print(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    main()
