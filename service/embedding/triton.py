"""The embedding backend on a Triton Inference Server: manifest embedders mapped onto Triton models.

Each resolution is served by the Triton model named like its manifest entry: the trunk `mobilefacenet` (112) and
the BTNet ensembles `btnet_r{r}`. Every model takes `INPUT_TENSOR` (N x 3 x r x r FP32, already normalised) and
returns `OUTPUT_TENSOR` (N x D FP32); the service L2-normalises.

Talking to Triton (clients, timeouts, readiness, batch limits, `BackendUnavailable` when it is down) is
`service.sessions.triton`'s; this module only checks what comes back is an embedding of the expected size.
"""

from __future__ import annotations

import logging

import numpy as np

from service.embedding.backend import EmbeddingBackend
from service.errors import BackendUnavailable
from service.models.manifest import ModelEntry
from service.sessions.triton import TritonSession
from service.settings import TritonSettings

log = logging.getLogger(__name__)


def triton_model_name(manifest_name: str, entry: ModelEntry) -> str:
    """The Triton model serving a manifest embedder: the same name (`mobilefacenet`, `btnet_r{r}`)."""
    return manifest_name


class TritonBackend(EmbeddingBackend):
    name = "triton"

    def __init__(self, triton: TritonSettings, models: dict[int, tuple[str, ModelEntry]], flip: bool = False) -> None:
        self.models = models
        self.flip = flip
        self.triton_models = {res: triton_model_name(name, entry) for res, (name, entry) in models.items()}
        self.session = TritonSession(triton.triton_url, triton.triton_protocol, self.triton_models.values(),
                                     triton.triton_timeout_s)
        log.info("Triton backend: %s://%s, models %s", self.session.protocol, self.session.url, self.triton_models)

    def _run(self, resolution: int, tensor: np.ndarray) -> np.ndarray:
        """Embeddings of `tensor`, batches above the model's `max_batch_size` split."""
        return self._embeddings(resolution, self.session.run(self.triton_models[resolution], tensor), len(tensor))

    def _infer(self, resolution: int, tensor: np.ndarray) -> np.ndarray:
        """Embeddings of `tensor` in one request, whatever its size."""
        return self._embeddings(resolution, self.session.infer(self.triton_models[resolution], tensor), len(tensor))

    def _embeddings(self, resolution: int, output: np.ndarray, count: int) -> np.ndarray:
        embeddings = output.reshape(count, -1)
        expected = self.models[resolution][1].embedding_size
        if expected and embeddings.shape[1] != expected:
            raise BackendUnavailable(f"Triton model {self.triton_models[resolution]!r} returned "
                                     f"{embeddings.shape[1]}-d embeddings, expected {expected}")
        return embeddings

    def ready(self) -> bool:
        """Triton is live and every model this service needs is ready; cached for about a second."""
        return self.session.ready()
