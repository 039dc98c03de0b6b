"""Runtime settings of the service, read from `ANYFACE_*` environment variables (pydantic-settings).

Settings come in sections, and each section is the object the part that uses it takes: `DecodeLimits` goes to
the decoder, `DetectionSettings` to the detector and the face filter, `BatchingSettings` to the micro-batchers,
`IndexSettings` to every FAISS index, `TritonSettings` to the Triton backend. Each field is read from the one
variable `ANYFACE_<FIELD>` (field names are variable names, so no variable was renamed when the sections came);
`Settings()` reads them all.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.sessions.threads import worker_share

PREFIX = "ANYFACE_"


class ApiKey(BaseModel):
    """One API key and what it may touch."""

    key: str = Field(min_length=8)
    name: str = ""
    galleries: list[str] | None = None  # None: every gallery
    read_only: bool = False

    def allows(self, gallery: str | None, write: bool) -> bool:
        if write and self.read_only:
            return False
        return gallery is None or self.galleries is None or gallery in self.galleries


class Section(BaseSettings):
    """A group of settings, each field read from the variable `ANYFACE_<FIELD>` (so a field's name is its
    variable's name); also built directly in code and tests."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, env_file=".env", extra="ignore", frozen=True)


class DecodeLimits(Section):
    """What an uploaded image may be: checked from the bytes and the header before decoding."""

    max_image_bytes: int = Field(10 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(40_000_000, gt=0)
    min_image_side: int = Field(16, ge=1)
    max_decode_side: int = Field(
        2560, ge=64, description="a photo with a longer side is decoded reduced to it (2 x det_max_side: detection "
        "sees 1280, aligned crops keep twice that); coordinates stay in the photo's own pixels (docs/memory.md)")
    decode_memory_budget: int = Field(
        512 * 1024 * 1024, gt=0, description="bytes of image memory the decodes in flight in a worker may hold "
        "together, each estimated from its header; one larger than this runs alone (docs/memory.md)")
    decode_wait_s: float = Field(
        10.0, ge=0, description="how long a decode waits for the budget before 503 `overloaded`")


# Each detector's usual operating point: YuNet's OpenCV Zoo demo default and InsightFace's SCRFD default.
DETECTOR_SCORE_THRESHOLDS = {"yunet": 0.6, "scrfd": 0.5}
LANDMARK_MODELS = ("detector", "mesh", "onet")


class DetectionSettings(Section):
    """The detector and which of its detections count as faces (requests may narrow the last three)."""

    detector: Literal["yunet", "scrfd"] = "yunet"
    det_score_threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="minimum detection score; default: the detector's own (yunet 0.6, scrfd 0.5)")
    det_max_side: int = Field(1280, ge=64, description="images are downscaled to this side for detection")
    detector_instances: int = Field(
        0, ge=0, description="detector instances shared by a worker's threads (memory: ~120 MiB each for YuNet at "
                             "1280 px); 0 = one per CPU core")
    min_face_size: float = Field(8, ge=0, description="smallest face (box side in pixels) that is kept")
    max_faces: int = Field(32, ge=1)
    landmarks: str = Field(
        "onet", description="what places the 5 alignment points: `onet` (MTCNN O-Net, the default), `detector` (the "
                            "detector's own), `mesh` (MediaPipe face mesh, 5x O-Net's cost) or an average such as "
                            "`mesh+onet` (docs/landmarks.md)")
    det_upscale_below: int = Field(
        160, ge=0, description="a photo whose longer side is below this many pixels is detected on a copy upscaled "
        "(bicubic) to it, boxes and landmarks mapped back: YuNet misses faces of 12-16 px and misplaces their "
        "points (docs/awkward_photos.md); 0 = never")
    det_pad_fallback: bool = Field(
        True, description="when no face is found, detect again on a copy padded on every side by its longer side "
        "(edge pixels replicated): finds faces that fill or exceed the frame (close-ups); their boxes may reach "
        "beyond the image")
    rotation_search: bool = Field(
        False, description="for photos turned without EXIF: when no face scores at least the detector's confident "
        "score (YuNet 0.9; it finds turned faces with lower scores and misplaced landmarks), also detect on the "
        "photo turned by 90, 270 and 180 degrees and keep the orientation with the best face, reporting its "
        "rotation. Costs 3 more detections on every photo without a face")

    @field_validator("landmarks")
    @classmethod
    def _known_landmark_models(cls, value: str) -> str:
        parts = value.split("+")
        unknown = [p for p in parts if p not in LANDMARK_MODELS]
        if unknown or len(set(parts)) != len(parts):
            raise ValueError(f"landmarks: {value!r} is not a '+'-joined list of distinct {sorted(LANDMARK_MODELS)}")
        return value

    @property
    def landmark_models(self) -> list[str]:
        """The landmark models whose points are averaged, in order."""
        return self.landmarks.split("+")

    @property
    def score_threshold(self) -> float:
        """The detection score threshold in force."""
        if self.det_score_threshold is not None:
            return self.det_score_threshold
        return DETECTOR_SCORE_THRESHOLDS[self.detector]


class BatchingSettings(Section):
    """Micro-batching of the faces of concurrent requests into one embedding call per resolution."""

    max_batch: int = Field(32, ge=1)
    max_batch_wait_ms: float = Field(2.0, ge=0.0)

    @property
    def max_wait_s(self) -> float:
        return self.max_batch_wait_ms / 1000.0


class MilvusSettings(Section):
    """Milvus as the galleries' vector engine (`vector_engine=milvus`, service/gallery/milvus.py)."""

    milvus_uri: str = Field("http://127.0.0.1:19530", description="the Milvus server (or a milvus-lite file path)")
    milvus_token: str | None = Field(None, description="user:password or an API key, when Milvus asks for one")
    milvus_collection: str = Field("anyface_faces", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
    milvus_index_type: Literal["FLAT", "HNSW", "IVF_FLAT", "IVF_SQ8", "IVF_PQ"] = Field(
        "HNSW", description="the collection's vector index (set when the collection is created)")
    milvus_index_params: str = Field('{"M": 32, "efConstruction": 200}', description="JSON: the index's build "
                                     "parameters (HNSW: M, efConstruction; IVF: nlist; IVF_PQ: m, nbits)")
    milvus_search_params: str = Field('{"ef": 1024}', description="JSON: search parameters (HNSW: ef, 1024 for "
                                      "recall@1 0.99 at 1M faces, docs/milvus.md; IVF: nprobe)")
    milvus_search_factor: int = Field(4, ge=1, le=64, description="faces asked per subject wanted, so that "
                                      "subjects with several faces still fill top_k")
    milvus_consistency: Literal["Strong", "Bounded", "Session", "Eventually"] = Field(
        "Strong", description="Strong: an enrolment is searchable in the next request, from any replica")
    milvus_timeout_s: float = Field(10.0, gt=0, description="per Milvus call: past it, 503 vector_engine_unavailable")


class IndexSettings(Section):
    """The FAISS index of every gallery (docs/index.md measures each choice)."""

    index_type: Literal["flat", "hnsw", "ivfpq", "auto"] = Field(
        "flat", description="flat (exact), hnsw, ivfpq, or auto (exact up to index_auto_exact_max faces)")
    index_auto_exact_max: int = Field(200_000, ge=1)
    hnsw_m: int = Field(32, ge=2)
    hnsw_ef_search: int = Field(256, ge=1, description="recall@1 0.996 at 100k faces; 1M needs 2048")
    hnsw_ef_construction: int = Field(80, ge=1)
    ivf_nlist: int = Field(1024, ge=1)
    ivf_nprobe: int = Field(512, ge=1, description="IVF lists searched; 512 of 1024 for recall@1 >= 0.99")
    pq_m: int = Field(32, ge=1)
    pq_refine: int = Field(8, ge=0, description="IVF-PQ re-ranks k * pq_refine candidates exactly; 0 = codes only")
    faiss_gpu: bool = Field(True, description="search flat indexes on the GPU when FAISS has GPU support")
    faiss_threads: int = Field(1, ge=0, description="OpenMP threads per search; 0 = every core")


class TritonSettings(Section):
    """Where the Triton Inference Server is, for `ANYFACE_EMBEDDING_BACKEND=triton`."""

    triton_url: str = "localhost:8001"
    triton_protocol: Literal["grpc", "http"] = "grpc"
    triton_timeout_s: float = Field(5.0, gt=0)


class Settings(BaseSettings):
    """Every knob of the service; the defaults run the embedded stack (ONNX Runtime, FAISS, SQLite)."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, env_file=".env", extra="ignore")

    # sections (their fields are read from their own ANYFACE_* variables)
    decode: DecodeLimits = Field(default_factory=DecodeLimits)
    detection: DetectionSettings = Field(default_factory=DetectionSettings)
    batching: BatchingSettings = Field(default_factory=BatchingSettings)
    index: IndexSettings = Field(default_factory=IndexSettings)
    milvus: MilvusSettings = Field(default_factory=MilvusSettings)
    vector_engine: Literal["faiss", "milvus"] = Field(
        "faiss", description="faiss: every process holds its galleries' index (in memory, rebuilt from the store); "
        "milvus: the index lives in Milvus (ANYFACE_MILVUS_URI), for galleries beyond one machine (docs/milvus.md)")
    triton: TritonSettings = Field(default_factory=TritonSettings)

    # models
    model_dir: Path = Path("models")
    model_mirror: Path | None = None
    embedding_backend: Literal["onnxruntime", "triton"] = "onnxruntime"
    intra_op_threads: int = Field(0, ge=0, description="ONNX Runtime threads per session; 0 = `cpu_threads`")
    branch_rule: Literal["ceil", "floor", "nearest"] = "ceil"
    embedder: str = Field(
        "mobilefacenet", description="the manifest embedder for faces served at 112 px: the trunk, or a fine-tuned "
        "variant (`sranet`, ...; docs/variants.md). Galleries record the embedder that filled them and refuse "
        "another (409 `embedder_mismatch`); the BTNet branches live in the trunk's space and serve small faces "
        "only with the trunk")
    use_branches: bool = True
    flip_test: bool = Field(True, description="embed each face and its mirror image and add them (2x embed cost; "
                                              "on by default: +0.3 points on LFW pairsDevTrain, docs/landmarks.md)")

    # requests
    max_images_per_request: int = Field(16, ge=1)
    max_inflight_requests: int = Field(
        64, ge=1, description="per worker: /v1 requests beyond this many in progress get 503 `overloaded`")
    verify_threshold: float | None = Field(None, description="override the calibrated threshold")
    identify_threshold: float | None = None
    max_top_k: int = Field(100, ge=1)
    max_batch_photos: int = Field(128, ge=1, description="photos in one batch verification (POST /v1/verify/batch)")
    max_batch_subjects: int = Field(100, ge=1, description="subjects one batch verification compares a photo with")
    max_batch_pairs: int = Field(10_000, ge=1, description="pairs in one batch verification")
    min_quality: float = Field(
        0.2, ge=0.0, le=1.0, description="faces below this quality (service/core/quality.py, docs/quality.md) are "
        "not enrolled or searched: 422 `low_quality`; a request's `min_quality` overrides it; 0 accepts every face")
    page_size_max: int = Field(500, ge=1)
    max_metadata_bytes: int = Field(
        16_384, ge=2, description="a subject's metadata as compact JSON (UTF-8, keys included), at most")
    max_metadata_depth: int = Field(
        16, ge=1, le=64, description="nesting of objects and arrays in metadata, the metadata object being level 1")
    max_name_chars: int = Field(256, ge=1, description="a subject's name, at most (characters)")
    max_json_body_bytes: int = Field(
        65536, ge=1, description="the largest body of a request that takes no file (JSON such as PATCH): 413 beyond")

    # gallery
    store: str = "sqlite:///var/anyface/gallery.sqlite3"
    thumbnails: bool = Field(
        True, description="keep a small JPEG of each enrolled face's aligned crop in the store, removed with the face "
        "(the console shows it; `GET .../faces/{face_id}/thumbnail`); false for deployments that must not keep "
        "images: only embeddings are kept then")
    thumbnail_size: int = Field(112, ge=32, le=256, description="side of a thumbnail in pixels")
    thumbnail_quality: int = Field(85, ge=30, le=95, description="JPEG quality of a thumbnail")
    max_import_bytes: int = Field(
        256 * 1024 * 1024, gt=0, description="the largest gallery file one import request may upload (the command "
        "line splits larger exports into several requests)")
    jobs_dir: Path | None = Field(
        None, description="bulk enrolment jobs: their archives and results (share it between the workers and "
        "replicas that should share jobs); default: `jobs/` beside an SQLite store, else var/anyface/jobs")
    max_archive_bytes: int = Field(1024 * 1024 * 1024, gt=0, description="the largest zip one job may upload")
    max_archive_entries: int = Field(100_000, ge=1, description="files in one job's zip, at most")
    max_archive_uncompressed_bytes: int = Field(
        16 * 1024 * 1024 * 1024, gt=0, description="what a job's zip entries may claim uncompressed, together (each "
        "photo is also read at most max_image_bytes, whatever it claims)")
    job_concurrency: int = Field(4, ge=1, description="photos a job enrols at once")
    job_scan_interval_s: float = Field(5.0, gt=0, description="how often a worker looks for unfinished jobs (after "
                                                              "a restart) and waits before retrying a busy service")
    max_import_line_bytes: int = Field(
        16 * 1024 * 1024, gt=0, description="the longest line of an import: one subject with its faces")
    follow_interval_s: float = Field(0.5, gt=0, description="how often the index applies the store's change feed")

    # server
    console: bool = Field(True, description="serve the web console at /ui (static pages that call the public API "
                                            "with the operator's key; docs/console.md)")
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(1, ge=1)
    cpu_threads: int = Field(
        0, ge=0, description="CPU threads of one worker: its ONNX Runtime sessions' intra-op threads and OpenCV's "
        "pool, and it runs one more face path (decode to alignment) than this at once; 0 = its share of the cores "
        "(cores // workers, at least 1): more threads than cores cost CPU in hand-offs under load "
        "(docs/performance.md)")
    api_keys: Annotated[list[ApiKey], NoDecode] = []
    api_keys_file: Path | None = None
    metrics_key: str | None = Field(
        None, min_length=8, description="a key for /metrics only (X-API-Key or Authorization: Bearer), e.g. "
        "Prometheus's; once API keys are configured /metrics takes it or an API key that sees every gallery")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_keys(cls, value: object) -> object:
        """`ANYFACE_API_KEYS` is a comma-separated list of full-access keys, or JSON."""
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return []
            if text.startswith("["):
                return json.loads(text)
            return [{"key": k.strip()} for k in text.split(",") if k.strip()]
        return value

    @property
    def worker_threads(self) -> int:
        """`cpu_threads`, or this worker's share of the cores."""
        return self.cpu_threads or worker_share(self.workers)

    @property
    def face_path_threads(self) -> int:
        """Face paths a worker runs at once: one more than its threads, so that the two photos of a verify run side
        by side when the worker is alone on the machine, and a core never waits while a face path's result is
        handed back (measured in docs/performance.md)."""
        return self.worker_threads + 1

    @property
    def session_threads(self) -> int:
        """Intra-op threads of each ONNX Runtime session."""
        return self.intra_op_threads or self.worker_threads

    @property
    def jobs_path(self) -> Path:
        """Where jobs live: `jobs_dir`, else beside the SQLite store (a job belongs with the gallery it fills)."""
        if self.jobs_dir is not None:
            return self.jobs_dir
        if self.store.startswith("sqlite:///"):
            return Path(self.store[len("sqlite:///"):]).parent / "jobs"
        return Path("var/anyface/jobs")

    @property
    def max_request_bytes(self) -> int:
        """The largest request body a worker reads: every image at its limit, plus form fields."""
        return self.decode.max_image_bytes * self.max_images_per_request + 1024 * 1024

    def all_api_keys(self) -> list[ApiKey]:
        keys = list(self.api_keys)
        if self.api_keys_file is not None:
            raw = json.loads(self.api_keys_file.read_text())
            keys += [ApiKey.model_validate(k if isinstance(k, dict) else {"key": k}) for k in raw]
        return keys


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
