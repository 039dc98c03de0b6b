"""The frozen trunk's outputs on the clean 112 crops, computed once and kept on disk.

For every training image and both flips it stores the trunk's embedding (float32, N x 2 x 128) and, for every
requested branch resolution r, the trunk feature at r's implant stage (float16, N x 2 x C x r x r): the targets of
embedding and feature distillation. The cache key covers the trunk checksum, the rows and the contents of those
crops, so a changed trunk, data set or crop (a crop cache rebuilt by another face path) gets a fresh cache; each
stage is its own file, so other resolutions reuse what is there.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from service.models.manifest import sha256_of
from training.data.degrade import normalise
from training.models.mobilefacenet import MobileFaceNet, implant_unit


@dataclass
class TeacherCache:
    embeddings: np.ndarray  # N x 2 x 128 float32
    features: dict[int, np.ndarray]  # resolution -> N x 2 x C x r x r float16 (memory-mapped)


def _key(weights: Path, crops: np.ndarray, rows: np.ndarray, chunk: int = 512) -> str:
    """The trunk's checksum, the rows and the bytes of those crops (read in chunks: the crops are memory-mapped)."""
    digest = hashlib.sha256()
    digest.update(sha256_of(weights).encode())
    digest.update(rows.astype(np.int64).tobytes())
    for start in range(0, len(rows), chunk):
        digest.update(np.ascontiguousarray(crops[rows[start : start + chunk]]).tobytes())
    return digest.hexdigest()[:16]


def build_teacher_cache(
    trunk: MobileFaceNet,
    weights: Path,
    crops: np.ndarray,
    rows: np.ndarray,
    resolutions: list[int],
    cache_root: Path,
    batch_size: int = 64,
) -> TeacherCache:
    """Load the cache for (trunk, rows) or compute the missing parts with one pass of the trunk.

    Each stage is its own file with its own completion marker, so a later run that needs fewer or other
    resolutions reuses what is there and computes only what is missing.
    """
    folder = cache_root / f"teacher_{_key(weights, crops, rows)}"
    folder.mkdir(parents=True, exist_ok=True)
    want_emb = not (folder / "embeddings.done").exists()
    missing = {r: implant_unit(r) for r in resolutions if not (folder / f"feat_r{r}.done").exists()}
    if want_emb or missing:
        _compute(trunk, crops, rows, folder, missing, batch_size)
    return TeacherCache(
        embeddings=np.load(folder / "embeddings.npy"),
        features={r: np.load(folder / f"feat_r{r}.npy", mmap_mode="r") for r in resolutions},
    )


def _compute(
    trunk: MobileFaceNet, crops: np.ndarray, rows: np.ndarray, folder: Path, stages: dict[int, int], batch_size: int
) -> None:
    n = len(rows)
    emb = np.lib.format.open_memmap(folder / "embeddings.tmp.npy", "w+", np.float32, (n, 2, 128))
    feats: dict[int, np.ndarray] = {}
    with torch.no_grad():
        for r, stop in stages.items():
            shape = trunk.forward_units(torch.zeros(1, 3, 112, 112), 0, stop).shape[1:]
            feats[r] = np.lib.format.open_memmap(folder / f"feat_r{r}.tmp.npy", "w+", np.float16, (n, 2, *shape))
        order = sorted(stages.items(), key=lambda kv: kv[1])
        for start in tqdm(range(0, n, batch_size), desc="teacher features", unit="batch"):
            idx = rows[start : start + batch_size]
            batch = np.asarray(crops[idx])
            for flip in (0, 1):
                images = batch[:, :, ::-1] if flip else batch
                x = torch.from_numpy(normalise(images))
                unit = 0
                for r, stop in order:
                    x = trunk.forward_units(x, unit, stop)
                    unit = stop
                    feats[r][start : start + len(idx), flip] = x.numpy().astype(np.float16)
                emb[start : start + len(idx), flip] = trunk.forward_units(x, unit).numpy()
    emb.flush()
    del emb
    (folder / "embeddings.tmp.npy").replace(folder / "embeddings.npy")
    (folder / "embeddings.done").write_text(json.dumps({"n": int(n)}))
    for r, f in feats.items():
        f.flush()  # type: ignore[attr-defined]
        (folder / f"feat_r{r}.tmp.npy").replace(folder / f"feat_r{r}.npy")
        (folder / f"feat_r{r}.done").write_text(json.dumps({"n": int(n), "resolution": r}))
