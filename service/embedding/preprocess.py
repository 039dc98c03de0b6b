"""Turn aligned uint8 RGB crops into the tensor a manifest entry asks for."""

from __future__ import annotations

import numpy as np

from service.models.manifest import ModelEntry


def to_tensor(crops: np.ndarray, entry: ModelEntry) -> np.ndarray:
    """`N x H x W x 3` RGB uint8 -> float32 in the entry's colour order, normalisation and layout."""
    x = crops.astype(np.float32)
    if entry.color_order == "BGR":
        x = x[..., ::-1]
    x = (x - entry.mean) / entry.std
    if entry.layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)
