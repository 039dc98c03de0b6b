"""`python -m bench.landmarks`: choose the landmark stage on LFW pairsDevTrain, then report LFW View 2 once.

Every photo goes through the service's face path up to the main face (decode, YuNet, filter, `rank_by_prominence`);
then each candidate landmark model places the 5 alignment points of that face, and each candidate configuration
(one model, or the average of several) aligns the face at 112 and embeds it with the trunk. Candidates differ in
crop scale, upright rotation and which mesh points make the eye centres. Selection is 10-fold accuracy on the
2,200 pairsDevTrain pairs (folds: pair index mod 10); `--report` then runs the chosen configurations on View 2
(`pairs.txt`, which shares identities with DevTrain). Points are cached under `.cache/anyface/`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench.machine import machine
from evaluation.embed import CACHE_DIR, FacePathEmbedder, digest, face_path_fingerprint
from evaluation.lfw import Pair, images_dir, lfw_root, pair_folds, pair_images, pair_labels, read_pairs
from evaluation.verification import kfold_accuracy, pair_scores, tar_at_far
from service.core.wiring import OfflineFaces, build_offline
from service.imaging.align import align_face
from service.imaging.decode import decode_image
from service.landmarks.base import DetectorLandmarks, LandmarkModel
from service.landmarks.factory import MANIFEST_NAMES
from service.landmarks.mesh import FaceMeshLandmarks
from service.landmarks.onet import OnetLandmarks
from service.models.contract import TRUNK_RESOLUTION
from service.settings import DetectionSettings, Settings

Factory = Callable[[OfflineFaces], LandmarkModel]


def _onet(scale: float, upright: bool = False) -> Factory:
    def make(faces: OfflineFaces) -> LandmarkModel:
        entry = faces.manifest.models[MANIFEST_NAMES["onet"]]
        return OnetLandmarks(faces.settings.model_dir / entry.file, entry, 1, scale, upright)
    return make


def _mesh(scale: float, point_set: str = "eye_corners") -> Factory:
    def make(faces: OfflineFaces) -> LandmarkModel:
        entry = faces.manifest.models[MANIFEST_NAMES["mesh"]]
        return FaceMeshLandmarks(faces.settings.model_dir / entry.file, entry, 1, scale, point_set)
    return make


# Each candidate landmark model: how the service would build it with these parameters.
MODELS: dict[str, Factory] = {
    "detector": lambda faces: DetectorLandmarks(),
    **{f"onet@{s}": _onet(s) for s in (1.0, 1.1, 1.2, 1.3)},
    **{f"onet-upright@{s}": _onet(s, upright=True) for s in (1.0, 1.1, 1.2, 1.3)},
    **{f"mesh@{s}": _mesh(s) for s in (1.3, 1.5, 1.7)},
    **{f"mesh-contours@{s}": _mesh(s, "eye_contours") for s in (1.3, 1.5, 1.7)},
}


@dataclass(frozen=True)
class Result:
    config: str
    mean: float
    std: float
    no_face: int
    tar_at_far_1e2: float  # a second, less noisy reading of the same scores than 10-fold accuracy


def dev_folds(pairs: list[Pair]) -> np.ndarray:
    """10 folds for the one-fold pairsDevTrain list: pair index mod 10 (each fold holds both kinds of pairs)."""
    return np.arange(len(pairs)) % 10


def place_points(faces: OfflineFaces, images: Path, names: list[str], models: list[str], cache: Path
                 ) -> dict[str, dict[str, np.ndarray]]:
    """For each model, the 5 points of each photo's main face (photos without a face are left out); cached."""
    placed: dict[str, dict[str, np.ndarray]] = {}
    if cache.exists():
        with np.load(cache) as data:
            placed = {k: dict(zip(data[f"{k}/names"].tolist(), data[f"{k}/points"], strict=True))
                      for k in {f.rsplit("/", 1)[0] for f in data.files}}
    todo = [m for m in models if m not in placed]
    if todo:
        built = {m: MODELS[m](faces) for m in todo}
        found: dict[str, dict[str, np.ndarray]] = {m: {} for m in todo}
        for name in tqdm(names, desc=f"landmarks ({len(todo)} models)", unit="photo"):
            image, kept = faces.path.find_faces((images / name).read_bytes(), name, faces.face_filter)
            if kept:
                for m, model in built.items():
                    found[m][name] = model.points(image, kept[:1])[0]
        placed.update(found)
        arrays = {}
        for m, pts in placed.items():
            arrays[f"{m}/names"] = np.array(sorted(pts), dtype=str)
            arrays[f"{m}/points"] = np.stack([pts[n] for n in sorted(pts)]) if pts else np.zeros((0, 5, 2))
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **arrays)  # type: ignore[arg-type]
    return placed


_DECODED: dict[str, np.ndarray] = {}


def decoded(faces: OfflineFaces, images: Path, name: str) -> np.ndarray:
    """A photo decoded as the service decodes it (kept in memory: every configuration aligns the same photos)."""
    if name not in _DECODED:
        _DECODED[name] = decode_image((images / name).read_bytes(), faces.settings.decode, name).copy()
    return _DECODED[name]


def embed_config(faces: OfflineFaces, images: Path, config: str, placed: dict[str, dict[str, np.ndarray]],
                 names: list[str], batch: int = 64) -> dict[str, np.ndarray]:
    """Embeddings of the main faces aligned with the average of the config's models' points ("a+b")."""
    parts = config.split("+")
    usable = [n for n in names if all(n in placed[p] for p in parts)]
    out: dict[str, np.ndarray] = {}
    for start in range(0, len(usable), batch):
        chunk = usable[start:start + batch]
        crops = []
        for name in chunk:
            rgb = decoded(faces, images, name)
            points = np.mean([placed[p][name] for p in parts], axis=0)
            crops.append(align_face(rgb, points, TRUNK_RESOLUTION))
        out.update(zip(chunk, faces.backend.embed(TRUNK_RESOLUTION, np.stack(crops)), strict=True))
    return out


def evaluate(faces: OfflineFaces, pairs_file: str, configs: list[str], folds_of: Callable[[list[Pair]], np.ndarray]
             ) -> list[Result]:
    root = lfw_root()
    images = images_dir(root)
    pairs = read_pairs(root / pairs_file)
    names = pair_images(pairs)
    models = sorted({p for c in configs for p in c.split("+")})
    key = digest(face_path_fingerprint(faces.settings, faces.manifest))
    placed = place_points(faces, images, names, models, CACHE_DIR / f"landmarks-{pairs_file}-{key}.npz")
    labels, folds = pair_labels(pairs), folds_of(pairs)
    results = []
    for config in tqdm(configs, desc="configurations", unit="config"):
        embeddings = embed_config(faces, images, config, placed, names)
        k = kfold_accuracy(pair_scores(pairs, embeddings), labels, folds)
        scores = pair_scores(pairs, embeddings)
        results.append(Result(config, k.mean, k.std, len(names) - len(embeddings), tar_at_far(scores, labels, 1e-2)))
        tqdm.write(f"{config:45s} {k.mean * 100:.2f} +- {k.std * 100:.2f}  TAR@1e-2 {results[-1].tar_at_far_1e2:.4f}")
    return results


def table(results: list[Result]) -> str:
    rows = [f"| {r.config} | {r.mean * 100:.2f} ± {r.std * 100:.2f} | {r.tar_at_far_1e2 * 100:.2f} | {r.no_face} |"
            for r in results]
    return ("| landmarks | accuracy (%) | TAR @ FAR 1e-2 (%) | photos without a face |\n|---|---|---|---|\n"
            + "\n".join(rows))


def speed(landmark_settings: list[str], flip: bool, photos: int = 200, rounds: int = 3) -> None:
    """Photos per second, one photo at a time end to end (decode, detect, landmarks, align, embed), on the first
    `photos` View 2 photos, for each `landmarks` setting; the rounds interleave the settings, the best round
    counts (the least disturbed by other work on the machine)."""
    root = lfw_root()
    images = images_dir(root)
    names = pair_images(read_pairs(root / "pairs.txt"))[:photos]
    data = [(images / n).read_bytes() for n in names]
    embedders = {s: FacePathEmbedder(Settings(detection=DetectionSettings(landmarks=s), flip_test=flip))
                 for s in landmark_settings}
    best = dict.fromkeys(landmark_settings, 0.0)
    for _ in tqdm(range(rounds), desc="speed rounds"):
        for setting, embedder in embedders.items():
            started = time.perf_counter()
            for photo in data:
                embedder.embed_photo(photo)
            best[setting] = max(best[setting], len(data) / (time.perf_counter() - started))
    print(f"{machine()}; flip test {flip}; best of {rounds} rounds of {photos} photos")
    for setting, value in best.items():
        print(f"| {setting} | {value:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.landmarks")
    parser.add_argument("--configs", nargs="+", default=None, help="configurations (default: every single model)")
    parser.add_argument("--split", choices=["dev", "view2"], default="dev")
    parser.add_argument("--flip", action="store_true", help="embed each face and its mirror image (flip test)")
    parser.add_argument("--speed", nargs="*", default=None, metavar="LANDMARKS",
                        help="instead: photos/s end to end for these `landmarks` settings (e.g. detector onet+mesh)")
    args = parser.parse_args()
    if args.speed is not None:
        speed(args.speed or ["detector"], args.flip)
        return
    faces = build_offline(Settings(flip_test=args.flip))
    configs = args.configs or list(MODELS)
    started = time.time()
    if args.split == "dev":
        results = evaluate(faces, "pairsDevTrain.txt", configs, dev_folds)
    else:
        results = evaluate(faces, "pairs.txt", configs, pair_folds)
    print(f"\n{machine()}, {(time.time() - started) / 60:.1f} min, split {args.split}\n")
    print(table(results))


if __name__ == "__main__":
    main()
