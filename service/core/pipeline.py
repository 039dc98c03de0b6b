"""The asynchronous face pipeline of the service: the face path (`face_path.FacePath`) in a worker thread, then
embedding through one micro-batcher per resolution, so the faces of all concurrent requests share model calls."""

from __future__ import annotations

import asyncio
from functools import partial

import numpy as np
from anyio import to_thread

from service import metrics
from service.core.face_path import AnalyzedFace, AnalyzedImage, FaceFilter, FacePath
from service.embedding.backend import EmbeddingBackend
from service.embedding.batcher import MicroBatcher
from service.settings import BatchingSettings


class FacePipeline:
    def __init__(self, path: FacePath, backend: EmbeddingBackend, batching: BatchingSettings) -> None:
        self.path = path
        self.backend = backend
        self.batchers = {
            res: MicroBatcher(partial(backend.embed, res), batching.max_batch, batching.max_wait_s, label=str(res))
            for res in backend.resolutions
        }

    async def analyze(self, data: bytes, field: str, flt: FaceFilter, embed: bool = True) -> AnalyzedImage:
        """Decode and detect (and embed, unless `embed` is false) every face of one upload."""
        result, crops = await to_thread.run_sync(self.path.analyze, data, field, flt, embed)
        if embed and result.faces:
            await self.embed_faces(result.faces, crops)
        return result

    async def embed_faces(self, faces: list[AnalyzedFace], crops: list[np.ndarray]) -> None:
        by_res: dict[int, list[int]] = {}
        for i, face in enumerate(faces):
            by_res.setdefault(face.resolution, []).append(i)
        jobs = [self.batchers[res].submit(np.stack([crops[i] for i in idx])) for res, idx in by_res.items()]
        for (res, idx), embeddings in zip(by_res.items(), await asyncio.gather(*jobs), strict=True):
            metrics.FACES_EMBEDDED.labels(str(res)).inc(len(idx))
            for i, embedding in zip(idx, embeddings, strict=True):
                faces[i].embedding = embedding

    def close(self) -> None:
        for batcher in self.batchers.values():
            batcher.close()
