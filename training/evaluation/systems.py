"""The two systems `training.evaluate` compares, and where their embeddings are kept.

Baseline: the trunk on the aligned 112 crop area-downsampled to r and upsampled back to 112 (bicubic). BTNet: the
native-resolution branch on the downsampled crop. At 112 both are the trunk. Every path is an ONNX Runtime session.
`EmbeddingCache` keeps each (model file, crops, images) result under the run's work folder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tqdm import tqdm

from service.models.manifest import sha256_of
from training.data.degrade import downsample, normalise, upsample
from training.onnx_utils import run, session

BATCH = 64

Embedder = Callable[[np.ndarray], np.ndarray]  # uint8 N x 112 x 112 x 3 crops -> N x 128


def names_key(names: list[str]) -> str:
    """A key for a list of image names (embedding cache keys)."""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


@dataclass(frozen=True)
class EmbeddingCache:
    """Embeddings by (description, model checksum, image list) in `folder`; `crops_key` names the crop cache they
    were computed from (its face path), so crops rebuilt another way are embedded afresh. No folder: no cache."""

    folder: Path | None
    crops_key: str = ""

    def embed(self, crops: np.ndarray, fn: Embedder, desc: str, key: tuple[str, ...] = ()) -> np.ndarray:
        """`fn` over the crops in batches; with a key (model checksum, image names), reuse an earlier result."""
        path = None
        if key and self.folder is not None:
            digest = hashlib.sha256("|".join((desc, self.crops_key, *key)).encode()).hexdigest()[:20]
            path = self.folder / f"emb_{digest}.npy"
            if path.exists():
                return np.load(path)
        out = [fn(np.asarray(crops[i : i + BATCH])) for i in tqdm(range(0, len(crops), BATCH), desc=desc,
                                                                   unit="batch", leave=False)]
        result = np.concatenate(out)
        if path is not None:
            np.save(path, result)
        return result


class Systems:
    """The ONNX sessions of both systems and how each turns a 112 crop into an embedding at resolution r."""

    def __init__(self, trunk_onnx: Path, branch_onnx: dict[int, Path], threads: int) -> None:
        self.trunk = session(trunk_onnx, threads)
        self.branch = {r: session(p, threads) for r, p in branch_onnx.items()}
        self.tag = {"trunk": sha256_of(trunk_onnx)} | {f"btnet{r}": sha256_of(p) for r, p in branch_onnx.items()}

    def hr(self, crops: np.ndarray) -> np.ndarray:
        return run(self.trunk, normalise(crops))

    def baseline(self, r: int) -> Embedder:
        if r == 112:
            return self.hr
        return lambda c: upsample_trunk(self.trunk, np.stack([downsample(x, r) for x in c]))

    def btnet(self, r: int, sessions: dict[int, ort.InferenceSession] | None = None) -> Embedder:
        if r == 112:
            return self.hr
        sess = (sessions or self.branch)[r]
        return lambda c: branch_only(sess, np.stack([downsample(x, r) for x in c]))


def upsample_trunk(trunk: ort.InferenceSession, lr: np.ndarray) -> np.ndarray:
    """The baseline path on low-resolution crops: bicubic upsampling to 112, then the trunk."""
    return run(trunk, normalise(np.stack([upsample(x) for x in lr])))


def branch_only(branch: ort.InferenceSession, lr: np.ndarray) -> np.ndarray:
    """The BTNet path on low-resolution crops."""
    return run(branch, normalise(lr))
