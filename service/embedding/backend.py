"""The embedding backend interface, the choice of embedders, and the embedded ONNX Runtime backend.

A backend serves one embedder per face resolution (112 = the trunk, smaller = BTNet branches) and turns a batch of
aligned crops of that resolution into L2-normalised embeddings. Sessions come from `service.sessions`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from service.embedding.preprocess import l2_normalize, to_tensor
from service.models.manifest import Manifest, ModelEntry
from service.sessions import onnxruntime as ort_sessions

TRUNK_RESOLUTION = 112


def select_embedders(
    manifest: Manifest, trunk: str, branch_family: str, use_branches: bool
) -> dict[int, tuple[str, ModelEntry]]:
    """Resolution -> (model name, entry): the trunk at 112 plus every branch of the family below it."""
    if trunk not in manifest.models or manifest.models[trunk].role != "embedder":
        served = sorted(n for n, e in manifest.embedders().items() if (e.resolution or TRUNK_RESOLUTION) == 112)
        raise RuntimeError(f"embedder {trunk!r} is not in the manifest (112-pixel embedders there: {served}); "
                           "run `python -m service.models fetch` for the trunk, `make variants` for the variants")
    trunk_entry = manifest.models[trunk]
    if (trunk_entry.resolution or TRUNK_RESOLUTION) != TRUNK_RESOLUTION:
        raise RuntimeError(f"embedder {trunk!r} serves {trunk_entry.resolution}-pixel faces; choose a 112-pixel one")
    chosen = {trunk_entry.resolution or TRUNK_RESOLUTION: (trunk, trunk_entry)}
    if use_branches:
        for name, entry in manifest.embedders(branch_family).items():
            if entry.resolution and entry.resolution < TRUNK_RESOLUTION:
                if entry.embedding_size != trunk_entry.embedding_size:
                    raise RuntimeError(f"{name}: embedding size differs from the trunk's")
                chosen[entry.resolution] = (name, entry)
    return dict(sorted(chosen.items()))


class EmbeddingBackend(ABC):
    """Embeds aligned face crops; one model per resolution."""

    name: str
    models: dict[int, tuple[str, ModelEntry]]
    flip: bool = False  # add the embedding of the mirrored crop (test-time augmentation)

    @property
    def resolutions(self) -> list[int]:
        return sorted(self.models)

    def model_name(self, resolution: int) -> str:
        return self.models[resolution][0]

    def embed(self, resolution: int, crops: np.ndarray) -> np.ndarray:
        """`N x r x r x 3` uint8 RGB crops -> `N x D` unit-norm float32 embeddings."""
        if len(crops) == 0:
            dim = self.models[resolution][1].embedding_size or 0
            return np.zeros((0, dim), dtype=np.float32)
        tensor = to_tensor(crops, self.models[resolution][1])
        if not self.flip:
            return l2_normalize(self._run(resolution, tensor))
        both = self._run(resolution, np.ascontiguousarray(np.concatenate([tensor, tensor[..., ::-1]])))
        return l2_normalize(both[: len(crops)] + both[len(crops):])

    @abstractmethod
    def _run(self, resolution: int, tensor: np.ndarray) -> np.ndarray: ...

    def ready(self) -> bool:
        return True


class OnnxRuntimeBackend(EmbeddingBackend):
    name = "onnxruntime"

    def __init__(self, model_dir: Path, models: dict[int, tuple[str, ModelEntry]], threads: int = 0,
                 flip: bool = False) -> None:
        self.models = models
        self.flip = flip
        self.sessions = {res: ort_sessions.create_session(model_dir / entry.file, threads)
                         for res, (_, entry) in models.items()}

    def _run(self, resolution: int, tensor: np.ndarray) -> np.ndarray:
        out = ort_sessions.run(self.sessions[resolution], tensor)
        return np.asarray(out, dtype=np.float32).reshape(len(tensor), -1)
