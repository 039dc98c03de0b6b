"""LFW View 2 (6,000 pairs, 10 folds) through the full pipeline, AnyFace and the `face_recognition` library side by
side on the same photos: 10-fold accuracy, TAR at FAR 1e-3 and photos per second, plus a ROC plot.

`python -m bench.accuracy [--systems anyface scrfd dlib]` prints a JSON summary and caches embeddings under
`.cache/anyface/`; `bench.run` puts the numbers into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench.dlib_baseline import DlibFaceRecognition
from bench.lfw import CACHE, Pair, PipelineEmbedder, lfw_root, pair_scores, read_pairs, roc, ten_fold
from service.imaging.decode import DecodeLimits, decode_image
from service.settings import Settings

SYSTEMS = ["anyface", "anyface-flip", "scrfd", "scrfd-flip", "dlib"]
SPEED_SAMPLE = 200  # photos timed end to end (decode, detect, align, embed), one at a time, one process


@dataclass
class SystemResult:
    system: str
    accuracy: float
    std: float
    tar_at_far_1e3: float
    photos_without_face: int
    photos_per_second: float


def tar_at_far(scores: np.ndarray, labels: np.ndarray, far: float) -> float:
    negatives = np.sort(scores[~labels])[::-1]
    threshold = negatives[int(np.floor(far * len(negatives)))]
    return float(np.mean(scores[labels] > threshold))


def _dlib_embeddings(root: Path, names: list[str]) -> dict[str, np.ndarray]:
    cache = CACHE / "lfw-dlib.npz"
    known: dict[str, np.ndarray] = {}
    if cache.exists():
        with np.load(cache) as data:
            known = {k: data[k] for k in data.files}
    model = DlibFaceRecognition()
    limits = DecodeLimits(10 << 20, 40_000_000, 16)
    todo = [n for n in names if n not in known]
    for i, name in enumerate(tqdm(todo, desc="face_recognition", unit="photo")):
        emb = model.embed(decode_image((root / name).read_bytes(), limits))
        known[name] = emb if emb is not None else np.zeros(0, dtype=np.float32)
        if i % 500 == 499 or i == len(todo) - 1:
            CACHE.mkdir(parents=True, exist_ok=True)
            np.savez(cache, **known)  # type: ignore[arg-type]
    return {n: known[n] for n in names if n in known and known[n].size}


def _speed(fn: object, root: Path, names: list[str]) -> float:
    sample = names[:SPEED_SAMPLE]
    started = time.perf_counter()
    for name in sample:
        fn((root / name).read_bytes())  # type: ignore[operator]
    return len(sample) / (time.perf_counter() - started)


def evaluate(systems: list[str]) -> tuple[list[SystemResult], dict[str, tuple[np.ndarray, np.ndarray]]]:
    root = lfw_root()
    pairs: list[Pair] = read_pairs(root / "pairs.txt")
    images = root / "images_deepfunneled"
    names = sorted({n for p in pairs for n in (p.a, p.b)})
    labels = np.array([p.same for p in pairs])
    results, curves = [], {}
    for system in systems:
        if system == "dlib":
            embeddings = _dlib_embeddings(images, names)
            scores = np.full(len(pairs), -10.0)
            for i, p in enumerate(pairs):
                if p.a in embeddings and p.b in embeddings:
                    scores[i] = DlibFaceRecognition.similarity(embeddings[p.a], embeddings[p.b])
            model = DlibFaceRecognition()
            limits = DecodeLimits(10 << 20, 40_000_000, 16)
            speed = _speed(lambda data, m=model, lim=limits: m.embed(decode_image(data, lim)), images, names)
            label = DlibFaceRecognition.name
        else:
            settings = Settings(detector="scrfd" if system.startswith("scrfd") else "yunet",
                                flip_test=system.endswith("flip"))
            embedder = PipelineEmbedder(settings)
            embeddings = embedder.embed_files(images, names, desc=system)
            scores = pair_scores(pairs, embeddings)

            def one(data: bytes, e: PipelineEmbedder = embedder) -> None:
                crop = e.crop(data)
                if crop is not None:
                    e.backend.embed(112, crop[None])  # with flip_test the backend embeds the mirror too

            speed = _speed(one, images, names)
            label = f"AnyFace ({settings.detector} + MobileFaceNet{', flip test' if settings.flip_test else ''})"
        mean, std, _ = ten_fold(pairs, scores)
        results.append(SystemResult(label, mean, std, tar_at_far(scores, labels, 1e-3),
                                    sum(1 for n in names if n not in embeddings), speed))
        curves[label] = roc(scores, labels)
    return results, curves


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for label, (fpr, tpr) in curves.items():
        ax.plot(np.maximum(fpr, 1e-4), tpr, label=label)
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title("LFW View 2, 6,000 pairs")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.accuracy")
    parser.add_argument("--systems", nargs="+", default=SYSTEMS, choices=SYSTEMS)
    parser.add_argument("--roc", type=Path, default=None)
    args = parser.parse_args()
    results, curves = evaluate(args.systems)
    if args.roc:
        plot_roc(curves, args.roc)
    print(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    main()
