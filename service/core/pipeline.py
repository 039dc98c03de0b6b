"""The asynchronous face pipeline of the service: the face path (`face_path.FacePath`) in a worker thread, then
embedding through one micro-batcher per resolution, so the faces of all concurrent requests share model calls.

Face paths run in a pool of `concurrency` threads (one more than the worker's share of the cores,
`Settings.face_path_threads`), not in the server's pool of 40: the uploads beyond wait in the pool's queue,
where waiting costs nothing, instead of time-slicing a core in threads of their own, and a thread that finishes
takes the next upload at once, without a turn of the event loop (docs/performance.md). The
`max_inflight_requests` guard bounds that queue."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np

from service import metrics
from service.core.face_path import AnalyzedFace, AnalyzedImage, FaceFilter, FacePath
from service.embedding.backend import EmbeddingBackend
from service.embedding.batcher import MicroBatcher
from service.settings import BatchingSettings


class FacePipeline:
    def __init__(self, path: FacePath, backend: EmbeddingBackend, batching: BatchingSettings,
                 concurrency: int = 1) -> None:
        self.path = path
        self.backend = backend
        self._face_paths = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="face-path")
        self.batchers = {
            res: MicroBatcher(partial(backend.embed, res), batching.max_batch, batching.max_wait_s, label=str(res))
            for res in backend.resolutions
        }

    async def analyze(self, data: bytes, field: str, flt: FaceFilter, embed: bool = True,
                      thumbnail: int | None = None) -> AnalyzedImage:
        """Decode and detect (and embed, unless `embed` is false) every face of one upload; with `thumbnail`, also
        the main face aligned at that size (`AnalyzedImage.thumbnail`)."""
        result, crops = await asyncio.get_running_loop().run_in_executor(
            self._face_paths, partial(self.path.analyze, data, field, flt, embed, thumbnail))
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
        self._face_paths.shutdown(wait=False, cancel_futures=True)
