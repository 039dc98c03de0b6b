"""Settings: defaults, each section read from its ANYFACE_* variables, invalid values refused, API keys; and the
two places settings become request policy: FaceFilter.of and Thresholds.of."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from service.core.face_path import FaceFilter
from service.core.thresholds import FALLBACK_THRESHOLD, Thresholds
from service.models.manifest import ModelEntry
from service.settings import (
    ApiKey,
    BatchingSettings,
    DecodeLimits,
    DetectionSettings,
    IndexSettings,
    Settings,
    TritonSettings,
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No ANYFACE_* variable from the caller's environment, and no .env file (it is read from the working
    directory)."""
    for name in list(os.environ):
        if name.upper().startswith("ANYFACE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield


# --- defaults --------------------------------------------------------------------------------------------------


def test_defaults() -> None:
    s = Settings()
    assert (s.decode.max_image_bytes, s.decode.max_image_pixels, s.decode.min_image_side) == (10 * 1024 * 1024,
                                                                                              40_000_000, 16)
    d = s.detection
    assert (d.detector, d.det_score_threshold, d.score_threshold, d.det_max_side, d.min_face_size, d.max_faces) == (
        "yunet", None, 0.6, 1280, 8, 32)
    assert (s.batching.max_batch, s.batching.max_batch_wait_ms, s.batching.max_wait_s) == (32, 2.0, 0.002)
    i = s.index
    assert (i.index_type, i.index_auto_exact_max, i.hnsw_m, i.hnsw_ef_search, i.hnsw_ef_construction) == (
        "flat", 200_000, 32, 256, 80)
    assert (i.ivf_nlist, i.ivf_nprobe, i.pq_m, i.pq_refine, i.faiss_gpu, i.faiss_threads) == (1024, 512, 32, 8, True, 1)
    assert (s.triton.triton_url, s.triton.triton_protocol, s.triton.triton_timeout_s) == ("localhost:8001", "grpc", 5.0)
    assert s.model_dir == Path("models") and s.model_mirror is None
    assert s.embedding_backend == "onnxruntime" and s.branch_rule == "ceil" and s.use_branches and s.flip_test
    assert s.store == "sqlite:///var/anyface/gallery.sqlite3"
    assert (s.host, s.port, s.workers) == ("127.0.0.1", 8000, 1)
    assert s.api_keys == [] and s.all_api_keys() == []
    assert s.verify_threshold is None and s.identify_threshold is None
    assert s.max_images_per_request == 16


# --- each variable ---------------------------------------------------------------------------------------------

CASES: list[tuple[str, str, Callable[[Settings], Any], Any]] = [
    ("ANYFACE_MAX_IMAGE_BYTES", "1234", lambda s: s.decode.max_image_bytes, 1234),
    ("ANYFACE_MAX_IMAGE_PIXELS", "5000", lambda s: s.decode.max_image_pixels, 5000),
    ("ANYFACE_MIN_IMAGE_SIDE", "32", lambda s: s.decode.min_image_side, 32),
    ("ANYFACE_DETECTOR", "scrfd", lambda s: s.detection.detector, "scrfd"),
    ("ANYFACE_DET_SCORE_THRESHOLD", "0.25", lambda s: s.detection.score_threshold, 0.25),
    ("ANYFACE_DET_MAX_SIDE", "640", lambda s: s.detection.det_max_side, 640),
    ("ANYFACE_MIN_FACE_SIZE", "20.5", lambda s: s.detection.min_face_size, 20.5),
    ("ANYFACE_MAX_FACES", "3", lambda s: s.detection.max_faces, 3),
    ("ANYFACE_LANDMARKS", "mesh+onet", lambda s: s.detection.landmark_models, ["mesh", "onet"]),
    ("ANYFACE_MAX_BATCH", "64", lambda s: s.batching.max_batch, 64),
    ("ANYFACE_MAX_BATCH_WAIT_MS", "7.5", lambda s: s.batching.max_wait_s, 0.0075),
    ("ANYFACE_INDEX_TYPE", "hnsw", lambda s: s.index.index_type, "hnsw"),
    ("ANYFACE_INDEX_AUTO_EXACT_MAX", "1000", lambda s: s.index.index_auto_exact_max, 1000),
    ("ANYFACE_HNSW_M", "16", lambda s: s.index.hnsw_m, 16),
    ("ANYFACE_HNSW_EF_SEARCH", "2048", lambda s: s.index.hnsw_ef_search, 2048),
    ("ANYFACE_IVF_NLIST", "64", lambda s: s.index.ivf_nlist, 64),
    ("ANYFACE_IVF_NPROBE", "16", lambda s: s.index.ivf_nprobe, 16),
    ("ANYFACE_PQ_REFINE", "0", lambda s: s.index.pq_refine, 0),
    ("ANYFACE_FAISS_GPU", "false", lambda s: s.index.faiss_gpu, False),
    ("ANYFACE_FAISS_THREADS", "0", lambda s: s.index.faiss_threads, 0),
    ("ANYFACE_TRITON_URL", "triton:9001", lambda s: s.triton.triton_url, "triton:9001"),
    ("ANYFACE_TRITON_PROTOCOL", "http", lambda s: s.triton.triton_protocol, "http"),
    ("ANYFACE_TRITON_TIMEOUT_S", "0.5", lambda s: s.triton.triton_timeout_s, 0.5),
    ("ANYFACE_STORE", "postgresql://db/anyface", lambda s: s.store, "postgresql://db/anyface"),
    ("ANYFACE_MODEL_DIR", "/opt/models", lambda s: s.model_dir, Path("/opt/models")),
    ("ANYFACE_EMBEDDING_BACKEND", "triton", lambda s: s.embedding_backend, "triton"),
    ("ANYFACE_BRANCH_RULE", "nearest", lambda s: s.branch_rule, "nearest"),
    ("ANYFACE_USE_BRANCHES", "0", lambda s: s.use_branches, False),
    ("ANYFACE_FLIP_TEST", "false", lambda s: s.flip_test, False),
    ("ANYFACE_MAX_IMAGES_PER_REQUEST", "4", lambda s: s.max_images_per_request, 4),
    ("ANYFACE_VERIFY_THRESHOLD", "0.31", lambda s: s.verify_threshold, 0.31),
    ("ANYFACE_PORT", "9000", lambda s: s.port, 9000),
    ("ANYFACE_WORKERS", "4", lambda s: s.workers, 4),
]


@pytest.mark.parametrize(("var", "value", "get", "expected"), CASES, ids=[c[0] for c in CASES])
def test_variable_is_read(monkeypatch: pytest.MonkeyPatch, var: str, value: str, get: Callable[[Settings], Any],
                          expected: Any) -> None:
    assert get(Settings()) != expected  # the default differs, so the variable is what changed it
    monkeypatch.setenv(var, value)
    assert get(Settings()) == expected


def test_variable_names_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("anyface_max_faces", "5")
    assert Settings().detection.max_faces == 5


def test_sections_read_their_variables_on_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each part takes its section; built alone, a section reads the same variables as inside Settings."""
    monkeypatch.setenv("ANYFACE_DETECTOR", "scrfd")
    monkeypatch.setenv("ANYFACE_MAX_BATCH", "8")
    monkeypatch.setenv("ANYFACE_INDEX_TYPE", "ivfpq")
    monkeypatch.setenv("ANYFACE_TRITON_URL", "t:1")
    monkeypatch.setenv("ANYFACE_MIN_IMAGE_SIDE", "20")
    assert DetectionSettings().detector == "scrfd"
    assert BatchingSettings().max_batch == 8
    assert IndexSettings().index_type == "ivfpq"
    assert TritonSettings().triton_url == "t:1"
    assert DecodeLimits().min_image_side == 20


def test_dotenv_file_in_the_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("ANYFACE_DETECTOR=scrfd\nANYFACE_MAX_BATCH=3\nANYFACE_STORE=sqlite:///x.db\n")
    s = Settings()
    assert (s.detection.detector, s.batching.max_batch, s.store) == ("scrfd", 3, "sqlite:///x.db")


def test_sections_are_built_in_code_by_field_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYFACE_DETECTOR", "yunet")
    monkeypatch.setenv("ANYFACE_INDEX_TYPE", "flat")
    assert DetectionSettings(detector="scrfd").detector == "scrfd"  # a value given in code beats the environment
    assert IndexSettings(index_type="hnsw", hnsw_m=8).index_type == "hnsw"
    assert TritonSettings(triton_url="x:1", triton_protocol="http").triton_protocol == "http"
    s = Settings(detection=DetectionSettings(max_faces=2), decode=DecodeLimits(max_image_bytes=100))
    assert (s.detection.max_faces, s.decode.max_image_bytes) == (2, 100)


def test_sections_are_frozen() -> None:
    s = Settings()
    with pytest.raises(ValidationError):
        s.detection.max_faces = 1  # type: ignore[misc]
    with pytest.raises(ValidationError):
        s.decode.max_image_bytes = 1  # type: ignore[misc]


def test_fields_are_read_only_from_their_own_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYFACE_NAME", "scrfd")  # e.g. a deployment's name
    monkeypatch.setenv("ANYFACE_KIND", "hnsw")
    monkeypatch.setenv("ANYFACE_URL", "elsewhere:1")
    monkeypatch.setenv("ANYFACE_THREADS", "8")
    s = Settings()
    assert s.detection.detector == "yunet"
    assert s.index.index_type == "flat"
    assert s.triton.triton_url == "localhost:8001"
    assert s.index.faiss_threads == 1


# --- invalid values --------------------------------------------------------------------------------------------

INVALID = [
    ("ANYFACE_DETECTOR", "mtcnn"),
    ("ANYFACE_DET_SCORE_THRESHOLD", "1.5"),
    ("ANYFACE_DET_SCORE_THRESHOLD", "-0.1"),
    ("ANYFACE_DET_SCORE_THRESHOLD", "high"),
    ("ANYFACE_DET_MAX_SIDE", "32"),
    ("ANYFACE_MIN_FACE_SIZE", "-1"),
    ("ANYFACE_MAX_FACES", "0"),
    ("ANYFACE_MAX_FACES", "many"),
    ("ANYFACE_MAX_BATCH", "0"),
    ("ANYFACE_MAX_BATCH_WAIT_MS", "-1"),
    ("ANYFACE_MAX_IMAGE_BYTES", "0"),
    ("ANYFACE_MAX_IMAGE_PIXELS", "-5"),
    ("ANYFACE_MIN_IMAGE_SIDE", "0"),
    ("ANYFACE_INDEX_TYPE", "annoy"),
    ("ANYFACE_HNSW_M", "1"),
    ("ANYFACE_FAISS_THREADS", "-1"),
    ("ANYFACE_FAISS_GPU", "perhaps"),
    ("ANYFACE_TRITON_PROTOCOL", "udp"),
    ("ANYFACE_TRITON_TIMEOUT_S", "0"),
    ("ANYFACE_EMBEDDING_BACKEND", "tensorrt"),
    ("ANYFACE_BRANCH_RULE", "round"),
    ("ANYFACE_WORKERS", "0"),
    ("ANYFACE_MAX_IMAGES_PER_REQUEST", "0"),
    ("ANYFACE_FOLLOW_INTERVAL_S", "0"),
    ("ANYFACE_PORT", "http"),
]


@pytest.mark.parametrize(("var", "value"), INVALID, ids=[f"{v}={x}" for v, x in INVALID])
def test_invalid_value_is_refused(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ValidationError):
        Settings()


def test_invalid_values_in_code_are_refused() -> None:
    with pytest.raises(ValidationError):
        DetectionSettings(max_faces=0)
    with pytest.raises(ValidationError):
        BatchingSettings(max_batch=-1)
    with pytest.raises(ValidationError):
        IndexSettings(index_type="lsh")


# --- detector score threshold ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("detector", "default"), [("yunet", 0.6), ("scrfd", 0.5)])
def test_detector_score_threshold_default_and_override(monkeypatch: pytest.MonkeyPatch, detector: str,
                                                       default: float) -> None:
    monkeypatch.setenv("ANYFACE_DETECTOR", detector)
    assert Settings().detection.score_threshold == default
    monkeypatch.setenv("ANYFACE_DET_SCORE_THRESHOLD", "0.35")
    d = Settings().detection
    assert d.score_threshold == 0.35 and d.det_score_threshold == 0.35


def test_score_threshold_override_of_zero_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYFACE_DET_SCORE_THRESHOLD", "0")
    assert Settings().detection.score_threshold == 0.0


# --- API keys --------------------------------------------------------------------------------------------------


def test_api_keys_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYFACE_API_KEYS", " key-aaaaaaaa, key-bbbbbbbb ,,")
    keys = Settings().api_keys
    assert [k.key for k in keys] == ["key-aaaaaaaa", "key-bbbbbbbb"]
    assert all(k.galleries is None and not k.read_only for k in keys)  # comma-listed keys have full access


def test_api_keys_single(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYFACE_API_KEYS", "only-one-key")
    assert [k.key for k in Settings().api_keys] == ["only-one-key"]


def test_api_keys_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYFACE_API_KEYS", json.dumps([
        {"key": "admin-key-123", "name": "admin"},
        {"key": "reader-key-12", "name": "reader", "galleries": ["staff"], "read_only": True},
    ]))
    admin, reader = Settings().api_keys
    assert (admin.name, admin.galleries, admin.read_only) == ("admin", None, False)
    assert (reader.key, reader.galleries, reader.read_only) == ("reader-key-12", ["staff"], True)


@pytest.mark.parametrize("value", ["", "   "])
def test_api_keys_empty(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("ANYFACE_API_KEYS", value)
    assert Settings().api_keys == []


@pytest.mark.parametrize("value", ["short", "long-enough-key,short", '[{"key": "short"}]', '[{"name": "x"}]',
                                   "[not json"])
def test_api_keys_invalid(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("ANYFACE_API_KEYS", value)
    with pytest.raises((ValidationError, ValueError)):
        Settings()


def test_api_keys_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(["file-key-plain", {"key": "file-key-ro", "read_only": True}]))
    monkeypatch.setenv("ANYFACE_API_KEYS", "env-key-1234")
    monkeypatch.setenv("ANYFACE_API_KEYS_FILE", str(path))
    keys = Settings().all_api_keys()
    assert [(k.key, k.read_only) for k in keys] == [("env-key-1234", False), ("file-key-plain", False),
                                                    ("file-key-ro", True)]


def test_api_key_allows() -> None:
    full = ApiKey(key="full-access")
    assert full.allows("any", write=True) and full.allows(None, write=True) and full.allows("x", write=False)

    scoped = ApiKey(key="scoped-key", galleries=["staff", "visitors"])
    assert scoped.allows("staff", write=True)
    assert scoped.allows("visitors", write=False)
    assert not scoped.allows("payroll", write=False)
    assert not scoped.allows("payroll", write=True)
    assert scoped.allows(None, write=False)  # requests that touch no gallery

    read_only = ApiKey(key="read-only-key", read_only=True)
    assert read_only.allows("staff", write=False) and read_only.allows(None, write=False)
    assert not read_only.allows("staff", write=True)
    assert not read_only.allows(None, write=True)

    nothing = ApiKey(key="empty-scope", galleries=[])
    assert not nothing.allows("staff", write=False)


# --- derived values --------------------------------------------------------------------------------------------


def test_max_request_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().max_request_bytes == 10 * 1024 * 1024 * 16 + 1024 * 1024
    monkeypatch.setenv("ANYFACE_MAX_IMAGE_BYTES", "1000")
    monkeypatch.setenv("ANYFACE_MAX_IMAGES_PER_REQUEST", "3")
    assert Settings().max_request_bytes == 3000 + 1024 * 1024


# --- FaceFilter.of ---------------------------------------------------------------------------------------------


def test_face_filter_of_takes_the_configured_values() -> None:
    detection = DetectionSettings(detector="scrfd", min_face_size=12, max_faces=4)
    assert FaceFilter.of(detection) == FaceFilter(min_face_size=12, score_threshold=0.5, max_faces=4)
    override = DetectionSettings(det_score_threshold=0.7)
    assert FaceFilter.of(override).score_threshold == 0.7


def test_face_filter_of_applies_a_requests_values() -> None:
    detection = DetectionSettings(min_face_size=8, max_faces=10)
    flt = FaceFilter.of(detection, min_face_size=30, score=0.3, max_faces=2)
    assert flt == FaceFilter(min_face_size=30, score_threshold=0.3, max_faces=2)
    # zero is a value, not "unset"
    assert FaceFilter.of(detection, min_face_size=0, score=0.0) == FaceFilter(0, 0.0, 10)


@pytest.mark.parametrize(("requested", "expected"), [(None, 10), (1, 1), (10, 10), (11, 10), (10_000, 10)])
def test_request_max_faces_never_exceeds_the_configured_one(requested: int | None, expected: int) -> None:
    assert FaceFilter.of(DetectionSettings(max_faces=10), max_faces=requested).max_faces == expected


# --- Thresholds.of ---------------------------------------------------------------------------------------------


def trunk(thresholds: dict[str, float]) -> ModelEntry:
    return ModelEntry(role="embedder", file="trunk.onnx", sha256="0" * 64, embedding_size=512, resolution=112,
                      thresholds=thresholds)


def test_thresholds_from_the_manifest() -> None:
    entry = trunk({"best_accuracy": 0.28, "far_1e-3": 0.36, "far_1e-4": 0.42})
    assert Thresholds.of(entry) == Thresholds(verify=0.28, identify=0.36)


def test_thresholds_overrides() -> None:
    entry = trunk({"best_accuracy": 0.28, "far_1e-3": 0.36})
    assert Thresholds.of(entry, verify=0.5) == Thresholds(verify=0.5, identify=0.36)
    assert Thresholds.of(entry, identify=0.6) == Thresholds(verify=0.28, identify=0.6)
    assert Thresholds.of(entry, verify=0.0, identify=-1.0) == Thresholds(verify=0.0, identify=-1.0)


def test_thresholds_fallback_without_calibration() -> None:
    assert Thresholds.of(trunk({})) == Thresholds(FALLBACK_THRESHOLD, FALLBACK_THRESHOLD)
    assert Thresholds.of(trunk({"far_1e-3": 0.33})) == Thresholds(verify=FALLBACK_THRESHOLD, identify=0.33)
    assert Thresholds.of(trunk({}), verify=0.2) == Thresholds(verify=0.2, identify=FALLBACK_THRESHOLD)
