"""Build the application core once from the settings and the model manifest (read once, here).

`build_core` wires the service: detector, embedding backend, face path, pipeline, gallery store and indexes,
thresholds. `build_offline` gives the benchmarks, the threshold calibration and the training crops the same face
path and trunk embedder without a store or batchers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import faiss

from service.core.batch_verify import BatchVerifier
from service.core.face_path import FaceFilter, FacePath
from service.core.galleries import Galleries
from service.core.jobs import Jobs
from service.core.pipeline import FacePipeline
from service.core.recognition import Recognition
from service.core.thresholds import Thresholds
from service.core.transfer import GalleryTransfer
from service.detection import Detector, build_detector
from service.detection.search import FaceSearch
from service.embedding.backend import EmbeddingBackend, OnnxRuntimeBackend, select_embedders
from service.gallery.factory import build_store
from service.gallery.faiss_manager import FaissGalleryManager
from service.gallery.manager import GalleryManager, ensure_store_available
from service.gallery.store import EmbedderCheck
from service.landmarks.factory import build_landmark_stage
from service.models.contract import BRANCH_FAMILY, EMBEDDING_SIZE, TRUNK_NAME
from service.models.manifest import Manifest, load_manifest
from service.sessions.threads import limit_native_threads
from service.settings import Settings

log = logging.getLogger(__name__)
# The service's detector keeps detections down to this score, so that a request may ask for a lower threshold
# than the configured one; the face filter then applies the request's threshold.
DETECTOR_SCORE_FLOOR = 0.3


def read_manifest(settings: Settings) -> Manifest:
    manifest = load_manifest(settings.model_dir)
    if not manifest.models:
        raise RuntimeError(f"no models in {settings.model_dir}; run `python -m service.models fetch`")
    return manifest


def make_detector(settings: Settings, manifest: Manifest) -> Detector:
    floor = min(settings.detection.score_threshold, DETECTOR_SCORE_FLOOR)
    return build_detector(settings.detection, manifest, settings.model_dir, settings.session_threads, floor)


def make_backend(settings: Settings, manifest: Manifest, use_branches: bool | None = None) -> EmbeddingBackend:
    branches = settings.use_branches if use_branches is None else use_branches
    if branches and settings.embedder != TRUNK_NAME:
        log.info("embedder %s: the BTNet branches live in the trunk's space, so every face goes to %s",
                 settings.embedder, settings.embedder)
        branches = False
    models = select_embedders(manifest, settings.embedder, BRANCH_FAMILY, branches)
    if settings.embedding_backend == "triton":
        from service.embedding.triton import TritonBackend  # only deployments with Triton need tritonclient

        return TritonBackend(settings.triton, models, flip=settings.flip_test)
    return OnnxRuntimeBackend(settings.model_dir, models, settings.session_threads, flip=settings.flip_test)


def make_face_path(settings: Settings, manifest: Manifest, detector: Detector, backend: EmbeddingBackend) -> FacePath:
    names = {res: backend.model_name(res) for res in backend.resolutions}
    landmarks = build_landmark_stage(settings.detection.landmark_models, manifest, settings.model_dir)
    return FacePath(FaceSearch(detector, settings.detection), settings.decode, backend.resolutions, names,
                    settings.branch_rule, landmarks)


def embedder_check(settings: Settings, backend: EmbeddingBackend) -> EmbedderCheck:
    """What galleries record as this service's embedder: the 112 model's manifest name and checksum prefix (a
    retrained variant under the same name embeds differently). Only the trunk may extend galleries made before
    embedders were recorded: it was the only embedder then."""
    name, entry = backend.models[max(backend.models)]
    return EmbedderCheck(f"{name}@{entry.sha256[:12]}", extends_unrecorded=name == TRUNK_NAME)


@dataclass
class Core:
    """The application core: what the API (and any other front end) calls."""

    settings: Settings
    backend: EmbeddingBackend
    pipeline: FacePipeline
    manager: GalleryManager
    thresholds: Thresholds
    recognition: Recognition
    galleries: Galleries
    transfer: GalleryTransfer
    batch: BatchVerifier
    jobs: Jobs

    def readiness(self) -> dict[str, bool]:
        """Each dependency's state (blocking: call from a worker thread): embedding backend up, store reachable,
        store writable (false after a write failed for lack of space, until a write or a small probe write
        commits), gallery indexes loaded and caught up with the store."""
        store = self.manager.store
        reachable = ensure_store_available(store)
        return {
            "embedding_backend": self.backend.ready(),
            "store": reachable,
            "store_writable": reachable and store.writable(),
            "gallery_index": self.manager.ready,
        }

    def close(self) -> None:
        self.manager.stop()
        self.pipeline.close()
        self.manager.store.close()


def build_core(settings: Settings) -> Core:
    manifest = read_manifest(settings)
    if settings.index.faiss_threads:
        faiss.omp_set_num_threads(settings.index.faiss_threads)
    limit_native_threads(settings.worker_threads)
    backend = make_backend(settings, manifest)
    pipeline = FacePipeline(make_face_path(settings, manifest, make_detector(settings, manifest), backend), backend,
                            settings.batching, settings.face_path_threads)
    trunk = backend.models[max(backend.models)][1]
    thresholds = Thresholds.of(trunk, settings.verify_threshold, settings.identify_threshold)
    dim = trunk.embedding_size or EMBEDDING_SIZE
    manager: GalleryManager
    if settings.vector_engine == "milvus":
        from service.gallery.milvus import MilvusEngine, MilvusGalleryManager  # pymilvus only when asked for

        manager = MilvusGalleryManager(build_store(settings.store), dim, MilvusEngine(settings.milvus, dim))
    else:
        manager = FaissGalleryManager(build_store(settings.store), dim, settings.index, settings.follow_interval_s)
    try:
        manager.load()
    except Exception as exc:  # the follower retries; /readyz says false until it has loaded
        log.warning("gallery not loaded at start-up (%s); will retry", exc)
    manager.start_following()
    galleries = Galleries(settings, manager, pipeline, embedder_check(settings, backend))
    log.info("embedders by resolution: %s; backend %s; thresholds verify=%.4f identify=%.4f; galleries record %s",
             {r: n for r, (n, _) in backend.models.items()}, backend.name, thresholds.verify, thresholds.identify,
             galleries.embedder.name)
    recognition = Recognition(settings, pipeline, galleries, thresholds)
    transfer = GalleryTransfer(manager, galleries.embedder, manager.dim, galleries.limits, settings.thumbnails,
                               settings.max_import_line_bytes)
    return Core(settings, backend, pipeline, manager, thresholds, recognition, galleries, transfer,
                BatchVerifier(recognition), Jobs(settings, galleries))


@dataclass
class OfflineFaces:
    """The service's face path and trunk embedder for offline tools: the main face of each photo at 112."""

    settings: Settings
    path: FacePath
    backend: EmbeddingBackend
    face_filter: FaceFilter
    manifest: Manifest


def build_offline(settings: Settings | None = None, use_branches: bool = False) -> OfflineFaces:
    settings = settings or Settings()
    manifest = read_manifest(settings)
    backend = make_backend(settings.model_copy(update={"embedding_backend": "onnxruntime"}), manifest, use_branches)
    path = make_face_path(settings, manifest, make_detector(settings, manifest), backend)
    return OfflineFaces(settings, path, backend, FaceFilter.of(settings.detection), manifest)
