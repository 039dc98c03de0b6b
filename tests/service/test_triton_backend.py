"""The Triton embedding backend against a real `tritonserver` (CPU build from the nvidia-pytriton wheel).

The server serves the very ONNX files the embedded backend runs, through the Python-backend stand-in of
`tests/triton_server.py`, under the manifest's model names; so the embeddings must agree with the embedded ONNX
Runtime backend to float precision, over gRPC and over HTTP. A service started while Triton is down must start,
answer 503s, and recover once Triton is up, without a restart.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.api.errors import status_of
from service.embedding.backend import OnnxRuntimeBackend, select_embedders
from service.embedding.preprocess import to_tensor
from service.embedding.triton import TritonBackend
from service.errors import BackendUnavailable
from service.models.contract import BRANCH_FAMILY
from service.models.manifest import ModelEntry, load_manifest
from service.models.registry import EMBEDDER_NAME
from service.settings import TritonSettings
from tests.conftest import ServiceProcess, lfw_photo, people_with_photos
from tests.triton_server import (
    TritonServer,
    add_onnx_model,
    aligned_lfw_faces,
    free_port,
    require_triton,
    running_triton,
)

INSTALL = require_triton()  # skips this module, naming tests/triton/bootstrap.sh, when the Triton venv is absent
TOLERANCE = 1e-4
PROTOCOLS = ["grpc", "http"]
SMALL_BATCH = "trunk_max_batch_4"  # the trunk again, with a max_batch_size below the service's batches

Embedders = dict[int, tuple[str, ModelEntry]]


@pytest.fixture(scope="module")
def embedders(model_dir: Path) -> Embedders:
    """What the service would load: the trunk plus every BTNet branch in the manifest."""
    return select_embedders(load_manifest(model_dir), EMBEDDER_NAME, BRANCH_FAMILY, use_branches=True)


@pytest.fixture(scope="module")
def triton_repo(tmp_path_factory: pytest.TempPathFactory, model_dir: Path, embedders: Embedders) -> Path:
    repo = tmp_path_factory.mktemp("triton-repo")
    for name, entry in embedders.values():
        add_onnx_model(repo, name, model_dir / entry.file)
    trunk = embedders[max(embedders)][1]
    add_onnx_model(repo, SMALL_BATCH, model_dir / trunk.file, max_batch_size=4)
    return repo


@pytest.fixture(scope="module")
def triton(triton_repo: Path) -> Iterator[TritonServer]:
    with running_triton(INSTALL, triton_repo) as server:
        yield server


@pytest.fixture(scope="module")
def faces(model_dir: Path, lfw_dir: Path, embedders: Embedders) -> dict[int, np.ndarray]:
    return aligned_lfw_faces(model_dir, lfw_dir, sorted(embedders), count=16)


@pytest.fixture(scope="module")
def embedded(model_dir: Path, embedders: Embedders) -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend(model_dir, embedders, threads=1)


def _settings(url: str, protocol: str, timeout_s: float) -> TritonSettings:
    return TritonSettings(triton_url=url, triton_protocol=protocol, triton_timeout_s=timeout_s)


def _backend(server: TritonServer, protocol: str, embedders: Embedders, timeout_s: float = 10.0) -> TritonBackend:
    return TritonBackend(_settings(server.url(protocol), protocol, timeout_s), embedders)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_same_embeddings_as_embedded_backend(protocol: str, triton: TritonServer, embedders: Embedders,
                                              embedded: OnnxRuntimeBackend, faces: dict[int, np.ndarray]) -> None:
    backend = _backend(triton, protocol, embedders)
    assert backend.ready()
    for res, crops in faces.items():
        got = backend.embed(res, crops)
        want = embedded.embed(res, crops)
        assert got.shape == want.shape == (len(crops), embedders[res][1].embedding_size)
        diff = float(np.abs(got - want).max())
        raw = float(np.abs(backend._run(res, _tensor(crops, embedders[res][1]))
                           - embedded._run(res, _tensor(crops, embedders[res][1]))).max())
        print(f"{protocol} r={res} ({embedders[res][0]}): {len(crops)} LFW faces, max |diff| unit embeddings "
              f"{diff:.3g}, raw outputs {raw:.3g}")
        assert diff <= TOLERANCE
        assert raw <= TOLERANCE
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        assert backend.embed(res, crops[:0]).shape == (0, want.shape[1])


def _tensor(crops: np.ndarray, entry: ModelEntry) -> np.ndarray:
    return to_tensor(crops, entry)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_concurrent_calls_from_several_threads(protocol: str, triton: TritonServer, embedders: Embedders,
                                               embedded: OnnxRuntimeBackend, faces: dict[int, np.ndarray]) -> None:
    """The batcher threads share one backend; Triton's dynamic batcher may merge their requests."""
    backend = _backend(triton, protocol, embedders)
    res = max(faces)
    crops = faces[res]
    want = embedded.embed(res, crops)
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = backend.embed(res, crops[i:i + 1])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(min(8, len(crops)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    for i, got in results.items():
        assert float(np.abs(got - want[i:i + 1]).max()) <= TOLERANCE


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_batches_above_the_models_max_batch_size_are_split(protocol: str, triton: TritonServer,
                                                           embedders: Embedders, embedded: OnnxRuntimeBackend,
                                                           faces: dict[int, np.ndarray]) -> None:
    res = max(embedders)
    backend = _backend(triton, protocol, {res: (SMALL_BATCH, embedders[res][1])})
    crops = faces[res]
    assert len(crops) > 4
    got = backend.embed(res, crops)  # no ready() first: the limit is learnt on the first call
    assert float(np.abs(got - embedded.embed(res, crops)).max()) <= TOLERANCE
    with pytest.raises(BackendUnavailable, match="batch"):  # what an unsplit call gets from Triton
        backend._infer(res, _tensor(crops, embedders[res][1]))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unknown_model_is_not_ready_and_unavailable(protocol: str, triton: TritonServer,
                                                    embedders: Embedders) -> None:
    entry = embedders[max(embedders)][1]
    backend = _backend(triton, protocol, {112: ("no_such_model", entry)})
    assert not backend.ready()
    with pytest.raises(BackendUnavailable) as info:
        backend.embed(112, np.zeros((1, 112, 112, 3), dtype=np.uint8))
    assert status_of(info.value) == 503 and info.value.code == "backend_unavailable"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_server_down_raises_promptly(protocol: str, embedders: Embedders) -> None:
    port = free_port()  # nothing listens there
    backend = TritonBackend(_settings(f"127.0.0.1:{port}", protocol, timeout_s=3.0), embedders)
    started = time.monotonic()
    assert not backend.ready()
    with pytest.raises(BackendUnavailable) as info:
        backend.embed(max(embedders), np.zeros((1, 112, 112, 3), dtype=np.uint8))
    assert "unavailable" in info.value.message
    assert time.monotonic() - started < 3.0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_hung_server_times_out(protocol: str, embedders: Embedders) -> None:
    """A peer that accepts connections but never answers: 503 after the configured timeout, not a hang."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel completes handshakes; nobody ever reads or writes
        url = f"127.0.0.1:{silent.getsockname()[1]}"
        backend = TritonBackend(_settings(url, protocol, timeout_s=1.0), embedders)
        started = time.monotonic()
        assert not backend.ready()
        assert time.monotonic() - started < 3.0
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            backend.embed(max(embedders), np.zeros((1, 112, 112, 3), dtype=np.uint8))
        elapsed = time.monotonic() - started
        print(f"{protocol}: hung server -> BackendUnavailable after {elapsed:.2f} s (timeout 1 s)")
        assert elapsed < 4.0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_service_starts_without_triton_and_recovers(protocol: str, triton_repo: Path, lfw_dir: Path,
                                                    tmp_path: Path, service_factory: type[ServiceProcess]) -> None:
    port = free_port()  # nothing listens there until the test starts Triton on it
    service = service_factory({
        "ANYFACE_EMBEDDING_BACKEND": "triton",
        "ANYFACE_TRITON_URL": f"127.0.0.1:{port}",
        "ANYFACE_TRITON_PROTOCOL": protocol,
        "ANYFACE_TRITON_TIMEOUT_S": "5",
        "ANYFACE_STORE": f"sqlite:///{tmp_path / 'gallery.sqlite3'}",
        "ANYFACE_API_KEYS": "",
    }).start(wait_ready=False)
    name = people_with_photos(lfw_dir, 2, 1)[0]
    files = {"image_a": lfw_photo(lfw_dir, name, 1).read_bytes(), "image_b": lfw_photo(lfw_dir, name, 2).read_bytes()}

    with service.client() as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert ready.json()["checks"]["embedding_backend"] is False

        started = time.monotonic()
        down = client.post("/v1/verify", files=files)
        assert down.status_code == 503, down.text
        assert down.json()["error"]["code"] == "backend_unavailable"
        assert time.monotonic() - started < 5.0

        with running_triton(INSTALL, triton_repo, **{f"{protocol}_port": port}):
            deadline = time.monotonic() + 20
            while (ready := client.get("/readyz")).status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.3)
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"]["embedding_backend"] is True
            up = client.post("/v1/verify", files=files)
            assert up.status_code == 200, up.text
            body = up.json()
            assert body["match"] is True, body
            print(f"{protocol}: verify after Triton came back: {name}: similarity {body['similarity']}")

        # and down again: a clear 503, not a hang or a 500
        try:
            again = client.post("/v1/verify", files=files)
        except httpx.HTTPError as exc:  # pragma: no cover - reported as a failure
            pytest.fail(f"service did not answer after Triton stopped: {exc}")
        assert again.status_code == 503 and again.json()["error"]["code"] == "backend_unavailable"
