"""Aligned 112 x 112 LFW crops, made once with the service's own YuNet detector and ArcFace aligner, then cached.

The cache (`<cache_dir>/lfw_crops_112.npy`, uint8 N x 112 x 112 x 3 RGB, plus `lfw_crops_112.json` with the
relative image names and how each face was found) covers every image of `images_deepfunneled`; the identity
lists (`peopleDevTrain.txt`, `peopleDevTest.txt`, `pairs.txt`) select from it. LFW images are centred on the
labelled person, so among several detections the one nearest the image centre wins; an image without any
detection is aligned with the mean landmarks of all detected faces (counted in the JSON as `fallback`).

Run `python -m training.data.lfw_crops` to build it ahead of time (about 2-4 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from service.detection.yunet import YuNetDetector
from service.imaging.align import align_face
from service.imaging.decode import DecodeLimits, decode_image
from training.config import cache_dir, lfw_dir, model_dir

CROP_SIZE = 112
_LIMITS = DecodeLimits(max_bytes=50 << 20, max_pixels=50_000_000, min_side=8)


@dataclass
class CropCache:
    """All aligned crops and a name -> row index."""

    crops: np.ndarray  # N x 112 x 112 x 3 uint8 (memory-mapped)
    names: list[str]  # "Name/Name_0001.jpg"
    index: dict[str, int]

    def rows(self, names: list[str]) -> np.ndarray:
        return np.array([self.index[n] for n in names], dtype=np.int64)


def image_name(person: str, number: int) -> str:
    return f"{person}/{person}_{number:04d}.jpg"


def read_people(path: Path) -> list[tuple[str, int]]:
    """`peopleDevTrain.txt` style: a count line, then `name<TAB>n_images`."""
    lines = path.read_text().split("\n")
    out = []
    for line in lines[1:]:
        parts = line.split()
        if len(parts) == 2:
            out.append((parts[0], int(parts[1])))
    return out


def people_images(path: Path) -> list[tuple[str, str]]:
    """(person, image name) for every image of every person in a people list."""
    return [(p, image_name(p, i)) for p, n in read_people(path) for i in range(1, n + 1)]


def read_pairs(path: Path) -> list[list[tuple[str, str, bool]]]:
    """`pairs.txt` (View 2): folds of (image a, image b, same person)."""
    lines = [ln.split() for ln in path.read_text().split("\n") if ln.strip()]
    n_folds, n_per = int(lines[0][0]), int(lines[0][1])
    rows = lines[1:]
    folds = []
    for f in range(n_folds):
        chunk = rows[f * 2 * n_per : (f + 1) * 2 * n_per]
        fold = []
        for parts in chunk:
            if len(parts) == 3:
                fold.append((image_name(parts[0], int(parts[1])), image_name(parts[0], int(parts[2])), True))
            else:
                fold.append((image_name(parts[0], int(parts[1])), image_name(parts[2], int(parts[3])), False))
        folds.append(fold)
    return folds


def _pick(faces: list, width: int, height: int) -> np.ndarray | None:
    if not faces:
        return None
    centre = np.array([width / 2.0, height / 2.0])

    def dist(face: object) -> float:
        box = face.box  # type: ignore[attr-defined]
        return float(np.linalg.norm((box[:2] + box[2:]) / 2.0 - centre))

    return np.asarray(min(faces, key=dist).landmarks, dtype=np.float64)


def align_images(names: list[str], root: Path | None = None) -> np.ndarray:
    """Detect and align a few LFW images without the cache (tests): N x 112 x 112 x 3 uint8."""
    image_root = (root or lfw_dir()) / "images_deepfunneled"
    detector = YuNetDetector(model_dir() / "face_detection_yunet_2023mar.onnx", score_threshold=0.5, max_side=640)
    crops = []
    for name in names:
        rgb = decode_image((image_root / name).read_bytes(), _LIMITS)
        lm = _pick(detector.detect(rgb), rgb.shape[1], rgb.shape[0])
        if lm is None:
            raise RuntimeError(f"no face found in {name}")
        crops.append(align_face(rgb, lm, CROP_SIZE))
    return np.stack(crops)


def build_cache(root: Path | None = None, out_dir: Path | None = None, limit: int | None = None) -> Path:
    root = root or lfw_dir()
    out_dir = out_dir or cache_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    image_root = root / "images_deepfunneled"
    names = sorted(str(p.relative_to(image_root)) for p in image_root.glob("*/*.jpg"))
    if limit is not None:
        names = names[:limit]
    detector = YuNetDetector(model_dir() / "face_detection_yunet_2023mar.onnx", score_threshold=0.5, max_side=640)
    images: list[np.ndarray] = []
    landmarks: list[np.ndarray | None] = []
    for name in tqdm(names, desc="detect LFW", unit="img"):
        rgb = decode_image((image_root / name).read_bytes(), _LIMITS)
        images.append(rgb)
        landmarks.append(_pick(detector.detect(rgb), rgb.shape[1], rgb.shape[0]))
    found = [lm for lm in landmarks if lm is not None]
    mean_lm = np.mean(found, axis=0) if found else None
    crops = np.lib.format.open_memmap(
        out_dir / "lfw_crops_112.tmp.npy", mode="w+", dtype=np.uint8, shape=(len(names), CROP_SIZE, CROP_SIZE, 3)
    )
    how = []
    for i, (rgb, lm) in enumerate(tqdm(list(zip(images, landmarks, strict=True)), desc="align", unit="img")):
        if lm is None:
            if mean_lm is None:
                raise RuntimeError("no face detected in any image")
            lm, kind = mean_lm, "fallback"
        else:
            kind = "detected"
        crops[i] = align_face(rgb, lm, CROP_SIZE)
        how.append(kind)
    crops.flush()
    del crops
    (out_dir / "lfw_crops_112.tmp.npy").replace(out_dir / "lfw_crops_112.npy")
    meta = {"names": names, "how": how, "fallback": how.count("fallback"), "size": CROP_SIZE}
    (out_dir / "lfw_crops_112.json").write_text(json.dumps(meta))
    return out_dir / "lfw_crops_112.npy"


def load_cache(out_dir: Path | None = None, build: bool = True) -> CropCache:
    out_dir = out_dir or cache_dir()
    path = out_dir / "lfw_crops_112.npy"
    if not path.exists():
        if not build:
            raise FileNotFoundError(path)
        build_cache(out_dir=out_dir)
    meta = json.loads((out_dir / "lfw_crops_112.json").read_text())
    names = meta["names"]
    crops = np.load(path, mmap_mode="r")
    return CropCache(crops=crops, names=names, index={n: i for i, n in enumerate(names)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="only the first N images (smoke tests)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    path = build_cache(out_dir=args.out, limit=args.limit)
    meta = json.loads(path.with_suffix(".json").read_text())
    print(f"wrote {path}: {len(meta['names'])} crops, {meta['fallback']} aligned with the mean landmarks")


if __name__ == "__main__":
    main()
