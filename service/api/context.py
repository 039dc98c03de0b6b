"""Everything a request needs, built once at start-up from the settings and the model manifest."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import faiss

from service.api.auth import KeyRing
from service.detection import Detector, build_detector
from service.embedding.backend import EmbeddingBackend, OnnxRuntimeBackend, select_embedders
from service.gallery.factory import build_store
from service.gallery.index import IndexParams
from service.gallery.manager import GalleryManager
from service.imaging.decode import DecodeLimits
from service.models.manifest import load_manifest
from service.models.registry import EMBEDDER_NAME
from service.pipeline import FaceFilter, FacePipeline
from service.settings import Settings

log = logging.getLogger(__name__)
BRANCH_FAMILY = "btnet"
# Used only when the manifest carries no calibrated thresholds (e.g. a custom embedder).
FALLBACK_THRESHOLD = 0.4


@dataclass
class Thresholds:
    verify: float
    identify: float


@dataclass
class ServiceContext:
    settings: Settings
    detector: Detector
    backend: EmbeddingBackend
    pipeline: FacePipeline
    gallery: GalleryManager
    keys: KeyRing
    thresholds: Thresholds

    def face_filter(self, min_face_size: float | None = None, score: float | None = None,
                    max_faces: int | None = None) -> FaceFilter:
        s = self.settings
        return FaceFilter(
            min_face_size=s.min_face_size if min_face_size is None else min_face_size,
            score_threshold=s.score_threshold if score is None else score,
            max_faces=min(s.max_faces, max_faces) if max_faces is not None else s.max_faces,
        )

    def close(self) -> None:
        self.gallery.stop()
        self.pipeline.close()
        self.gallery.store.close()


def build_backend(settings: Settings) -> EmbeddingBackend:
    manifest = load_manifest(settings.model_dir)
    models = select_embedders(manifest, EMBEDDER_NAME, BRANCH_FAMILY, settings.use_branches)
    if settings.embedding_backend == "triton":
        from service.embedding.triton import TritonBackend  # only deployments with Triton need tritonclient

        backend: EmbeddingBackend = TritonBackend(settings.triton_url, settings.triton_protocol, models,
                                                  settings.triton_timeout_s)
        backend.flip = settings.flip_test
        return backend
    return OnnxRuntimeBackend(settings.model_dir, models, settings.intra_op_threads, flip=settings.flip_test)


def build_context(settings: Settings) -> ServiceContext:
    manifest = load_manifest(settings.model_dir)
    if not manifest.models:
        raise RuntimeError(f"no models in {settings.model_dir}; run `python -m service.models fetch`")
    if settings.faiss_threads:
        faiss.omp_set_num_threads(settings.faiss_threads)
    # detections below the request's score threshold are filtered later; let the detector keep weaker ones
    detector = build_detector(settings.model_copy(update={"det_score_threshold": min(settings.score_threshold, 0.3)}),
                              manifest)
    backend = build_backend(settings)
    trunk = backend.models[max(backend.models)][1]
    calibrated = trunk.thresholds
    thresholds = Thresholds(
        verify=settings.verify_threshold or calibrated.get("best_accuracy", FALLBACK_THRESHOLD),
        identify=settings.identify_threshold or calibrated.get("far_1e-3", FALLBACK_THRESHOLD),
    )
    limits = DecodeLimits(settings.max_image_bytes, settings.max_image_pixels, settings.min_image_side)
    pipeline = FacePipeline(detector, backend, limits, settings.branch_rule, settings.max_batch,
                            settings.max_batch_wait_ms / 1000.0)
    params = IndexParams(
        kind=settings.index_type, auto_exact_max=settings.index_auto_exact_max, hnsw_m=settings.hnsw_m,
        hnsw_ef_search=settings.hnsw_ef_search, hnsw_ef_construction=settings.hnsw_ef_construction,
        ivf_nlist=settings.ivf_nlist, ivf_nprobe=settings.ivf_nprobe, pq_m=settings.pq_m,
        pq_refine=settings.pq_refine, gpu=settings.faiss_gpu, threads=settings.faiss_threads,
    )
    store = build_store(settings.store)
    gallery = GalleryManager(store, trunk.embedding_size or 128, params, settings.follow_interval_s)
    try:
        gallery.load()
    except Exception as exc:  # the follower retries; /readyz says false until it has loaded
        log.warning("gallery not loaded at start-up (%s); will retry", exc)
    gallery.start_following()
    log.info("embedders by resolution: %s; backend %s; thresholds verify=%.4f identify=%.4f",
             {r: n for r, (n, _) in backend.models.items()}, backend.name, thresholds.verify, thresholds.identify)
    return ServiceContext(settings, detector, backend, pipeline, gallery, KeyRing(settings.all_api_keys()),
                          thresholds)
