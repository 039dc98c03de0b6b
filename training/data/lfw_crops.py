"""Aligned 112 x 112 crops of every LFW image, made once through the service's own face path, then cached.

Faces come from `service.core.wiring.build_offline` with the default `Settings` (only `model_dir` from
`training.config`): the service's detector, score threshold, face filter and main-face rule (`rank_by_prominence`),
aligned by the service's `align_face`, so training sees the faces the service will see. Training needs every
image: one in which the face path finds no face is aligned with the mean landmarks of all detected faces (counted
in the JSON as `fallback`).

The cache is `<cache_dir>/lfw_crops_112.npy` (uint8 N x 112 x 112 x 3 RGB) and `lfw_crops_112.json` (the image
names relative to `images_deepfunneled`, how each face was found, the fallback count, and `face_path`: the face
path's settings and detector checksum, `evaluation.embed.face_path_fingerprint`). `load_cache` rebuilds a cache
made by another face path instead of using it, and the teacher cache is keyed by the crops' contents
(`training.data.teacher_cache`), so features of old crops are never reused. The identity lists
(`peopleDevTrain.txt`, `peopleDevTest.txt`, `pairs.txt`, read by `evaluation.lfw`) select from it.

Run `python -m training.data.lfw_crops` to build it ahead of time (about 2-4 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from evaluation.embed import digest, face_path_fingerprint
from evaluation.lfw import all_images, images_dir
from service.core.wiring import OfflineFaces, build_offline, read_manifest
from service.imaging.align import align_face
from service.models.contract import TRUNK_RESOLUTION
from service.settings import Settings
from training.config import cache_dir, lfw_dir, model_dir

CROP_SIZE = TRUNK_RESOLUTION
CROPS_FILE = f"lfw_crops_{CROP_SIZE}.npy"
META_FILE = f"lfw_crops_{CROP_SIZE}.json"


@dataclass
class CropCache:
    """All aligned crops and a name -> row index."""

    crops: np.ndarray  # N x 112 x 112 x 3 uint8 (memory-mapped)
    names: list[str]  # "Name/Name_0001.jpg"
    index: dict[str, int]
    meta: dict[str, Any] = field(default_factory=dict)  # lfw_crops_112.json

    def rows(self, names: list[str]) -> np.ndarray:
        return np.array([self.index[n] for n in names], dtype=np.int64)


def face_settings() -> Settings:
    """The service's default settings, with the training model folder."""
    return Settings(model_dir=model_dir())


def offline_faces() -> OfflineFaces:
    return build_offline(face_settings())


def current_face_path() -> dict[str, Any]:
    """The fingerprint of the face path a cache built now would use."""
    settings = face_settings()
    return face_path_fingerprint(settings, read_manifest(settings))


def main_face_landmarks(faces: OfflineFaces, image: Path, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The decoded RGB image and the landmarks of its main face (None without a face)."""
    rgb, found = faces.path.find_faces(image.read_bytes(), name, faces.face_filter)
    return rgb, (np.asarray(found[0].landmarks, dtype=np.float64) if found else None)


def align_images(names: list[str], root: Path | None = None) -> np.ndarray:
    """Detect and align a few LFW images without the cache (tests): N x 112 x 112 x 3 uint8."""
    folder = images_dir(root or lfw_dir())
    faces = offline_faces()
    crops = []
    for name in names:
        rgb, landmarks = main_face_landmarks(faces, folder / name, name)
        if landmarks is None:
            raise RuntimeError(f"no face found in {name}")
        crops.append(align_face(rgb, landmarks, CROP_SIZE))
    return np.stack(crops)


def build_cache(root: Path | None = None, out_dir: Path | None = None, limit: int | None = None) -> Path:
    root = root or lfw_dir()
    out_dir = out_dir or cache_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    folder = images_dir(root)
    names = all_images(root)[:limit]
    faces = offline_faces()
    tmp = out_dir / CROPS_FILE.replace(".npy", ".tmp.npy")
    crops = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(names), CROP_SIZE, CROP_SIZE, 3))
    found: list[np.ndarray] = []
    no_face: dict[int, np.ndarray] = {}  # row -> decoded image, aligned once the mean landmarks are known
    for i, name in enumerate(tqdm(names, desc="detect and align LFW", unit="img")):
        rgb, landmarks = main_face_landmarks(faces, folder / name, name)
        if landmarks is None:
            no_face[i] = rgb
        else:
            found.append(landmarks)
            crops[i] = align_face(rgb, landmarks, CROP_SIZE)
    if no_face:
        if not found:
            raise RuntimeError("no face detected in any image")
        mean_landmarks = np.mean(found, axis=0)
        for i, rgb in no_face.items():
            crops[i] = align_face(rgb, mean_landmarks, CROP_SIZE)
    crops.flush()
    del crops
    tmp.replace(out_dir / CROPS_FILE)
    how = ["fallback" if i in no_face else "detected" for i in range(len(names))]
    meta = {"names": names, "how": how, "fallback": len(no_face), "size": CROP_SIZE,
            "face_path": face_path_fingerprint(faces.settings, faces.manifest)}
    (out_dir / META_FILE).write_text(json.dumps(meta))
    return out_dir / CROPS_FILE


def stale_reason(out_dir: Path) -> str | None:
    """Why the cache in `out_dir` cannot be used (absent, or made by another face path), or None."""
    if not (out_dir / CROPS_FILE).exists() or not (out_dir / META_FILE).exists():
        return f"no crop cache in {out_dir}"
    made_by = json.loads((out_dir / META_FILE).read_text()).get("face_path")
    if made_by is None or digest(made_by) != digest(current_face_path()):
        return f"the crops in {out_dir} were made by another face path than the service's current one"
    return None


def load_cache(out_dir: Path | None = None, build: bool = True) -> CropCache:
    """The crop cache; one that is absent or stale is built (`build`) or is a `FileNotFoundError`."""
    out_dir = out_dir or cache_dir()
    if reason := stale_reason(out_dir):
        if not build:
            raise FileNotFoundError(f"{reason}: run `python -m training.data.lfw_crops`")
        print(f"{reason}: building it")
        build_cache(out_dir=out_dir)
    meta = json.loads((out_dir / META_FILE).read_text())
    names = meta["names"]
    crops = np.load(out_dir / CROPS_FILE, mmap_mode="r")
    return CropCache(crops=crops, names=names, index={n: i for i, n in enumerate(names)}, meta=meta)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="only the first N images (smoke tests)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    path = build_cache(out_dir=args.out, limit=args.limit)
    meta = json.loads(path.with_suffix(".json").read_text())
    detection = meta["face_path"]["detection"]
    print(f"wrote {path}: {len(meta['names'])} crops ({detection['detector']} at score "
          f"{detection['score_threshold']}), {meta['fallback']} aligned with the mean landmarks")


if __name__ == "__main__":
    main()
