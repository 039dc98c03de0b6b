"""The face pipeline: decode -> detect -> filter -> route -> align -> embed, with per-stage timing.

CPU stages run in a worker thread; embedding goes through one micro-batcher per resolution, so the faces of all
concurrent requests share model calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import numpy as np
from starlette.concurrency import run_in_threadpool

from service import metrics
from service.detection import DetectedFace, Detector
from service.embedding.backend import EmbeddingBackend
from service.embedding.batcher import MicroBatcher
from service.embedding.router import Rule, route
from service.errors import NoFace
from service.imaging.align import align_face
from service.imaging.decode import DecodeLimits, decode_image


@contextmanager
def stage(name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        metrics.STAGE_LATENCY.labels(name).observe(time.perf_counter() - started)


def prominence(face: DetectedFace, width: int, height: int) -> float:
    """How much a face is "the" face of a photo: its box area inside the image, less twice the squared distance
    of its centre from the image centre (InsightFace's ranking). A large face cut off at the border, typical of
    bystanders, ranks below the centred subject."""
    x1, y1, x2, y2 = (float(v) for v in face.box)
    area = max(0.0, min(x2, width) - max(x1, 0.0)) * max(0.0, min(y2, height) - max(y1, 0.0))
    dx, dy = (x1 + x2) / 2 - width / 2, (y1 + y2) / 2 - height / 2
    return area - 2.0 * (dx * dx + dy * dy)


@dataclass(frozen=True)
class FaceFilter:
    """Which detections count as faces for a request."""

    min_face_size: float
    score_threshold: float
    max_faces: int


@dataclass
class AnalyzedFace:
    face: DetectedFace
    resolution: int
    branch: str
    embedding: np.ndarray | None = None


@dataclass
class AnalyzedImage:
    width: int
    height: int
    faces: list[AnalyzedFace]

    def largest(self, field: str) -> AnalyzedFace:
        if not self.faces:
            raise NoFace(f"{field}: no face found in the image")
        return self.faces[0]


class FacePipeline:
    def __init__(self, detector: Detector, backend: EmbeddingBackend, limits: DecodeLimits, rule: Rule,
                 max_batch: int, max_wait_s: float) -> None:
        self.detector = detector
        self.backend = backend
        self.limits = limits
        self.rule = rule
        self.resolutions = backend.resolutions
        self.batchers = {
            res: MicroBatcher(partial(backend.embed, res), max_batch, max_wait_s, label=str(res))
            for res in self.resolutions
        }

    def route(self, face: DetectedFace) -> int:
        return route(face.size, self.resolutions, self.rule)

    def _prepare(self, data: bytes, field: str, flt: FaceFilter, align: bool
                 ) -> tuple[AnalyzedImage, list[np.ndarray]]:
        with stage("decode"):
            image = decode_image(data, self.limits, field)
        with stage("detect"):
            detections = self.detector.detect(image)
        kept = [f for f in detections if f.score >= flt.score_threshold and f.size >= flt.min_face_size]
        kept.sort(key=lambda f: -prominence(f, image.shape[1], image.shape[0]))  # the main face first
        kept = kept[: flt.max_faces]
        faces = [AnalyzedFace(f, res, self.backend.model_name(res)) for f in kept for res in [self.route(f)]]
        crops: list[np.ndarray] = []
        if align:
            with stage("align"):
                crops = [align_face(image, f.face.landmarks, f.resolution) for f in faces]
        return AnalyzedImage(image.shape[1], image.shape[0], faces), crops

    async def analyze(self, data: bytes, field: str, flt: FaceFilter, embed: bool = True) -> AnalyzedImage:
        """Decode and detect (and embed, unless `embed` is false) every face of one upload."""
        result, crops = await run_in_threadpool(self._prepare, data, field, flt, embed)
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
