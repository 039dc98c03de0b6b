"""`service.sessions`: ONNX Runtime sessions on a tiny model built here, and a Triton session with no server.

Needs no model files and no Triton: the ONNX model is `y = 2x` made with `onnx.helper`, and the Triton session
points at a loopback port nobody listens on.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from service.errors import BackendUnavailable
from service.models.contract import INPUT_TENSOR, OUTPUT_TENSOR
from service.sessions import onnxruntime as ort_sessions
from service.sessions.triton import TritonSession


@pytest.fixture(scope="module")
def double_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`embedding = 2 * input`, any batch of 4-vectors, opset 17."""
    x = helper.make_tensor_value_info(INPUT_TENSOR, TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info(OUTPUT_TENSOR, TensorProto.FLOAT, ["batch", 4])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    graph = helper.make_graph([helper.make_node("Mul", [INPUT_TENSOR, "two"], [OUTPUT_TENSOR])], "double", [x], [y],
                              initializer=[two])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime this project supports
    onnx.checker.check_model(model, full_check=True)
    path = tmp_path_factory.mktemp("onnx") / "double.onnx"
    onnx.save(model, str(path))
    return path


# ---------------------------------------------------------------------------------------------------- ONNX Runtime

def test_session_runs_the_model(double_model: Path) -> None:
    session = ort_sessions.create_session(double_model, threads=1)
    x = np.arange(12, dtype=np.float64).reshape(3, 4)  # any dtype and layout: run() hands over float32
    y = ort_sessions.run(session, x[:, ::-1])
    assert y.dtype == np.float32 and y.shape == (3, 4)
    np.testing.assert_array_equal(y, 2 * x[:, ::-1].astype(np.float32))
    assert ort_sessions.run(session, np.zeros((0, 4), dtype=np.float32)).shape == (0, 4)


def test_provider_choice() -> None:
    import onnxruntime as ort

    assert ort_sessions.providers("cpu") == [ort_sessions.CPU]
    auto = ort_sessions.providers("auto")
    assert auto[-1] == ort_sessions.CPU
    assert (ort_sessions.CUDA in auto) == (ort_sessions.CUDA in ort.get_available_providers())
    with pytest.raises(ValueError):
        ort_sessions.providers("tpu")  # type: ignore[arg-type]


def test_cpu_provider_here(double_model: Path) -> None:
    assert ort_sessions.create_session(double_model, device="cpu").get_providers() == [ort_sessions.CPU]
    # the default (CUDA, then CPU) falls back to the CPU on a machine without a GPU build of onnxruntime
    assert ort_sessions.create_session(double_model).get_providers()[-1] == ort_sessions.CPU


@pytest.mark.parametrize("threads", [1, 3])
def test_thread_count_is_honoured(double_model: Path, threads: int) -> None:
    options = ort_sessions.create_session(double_model, threads=threads).get_session_options()
    assert options.intra_op_num_threads == threads
    assert options.inter_op_num_threads == 1


def test_zero_threads_leaves_the_runtime_default(double_model: Path) -> None:
    options = ort_sessions.create_session(double_model, threads=0).get_session_options()
    assert options.intra_op_num_threads == 0  # 0 = ONNX Runtime's default: every core
    with pytest.raises(ValueError):
        ort_sessions.create_session(double_model, threads=-1)


def test_training_helpers_use_the_same_sessions(double_model: Path) -> None:
    pytest.importorskip("torch")
    from training.onnx_utils import run, session

    sess = session(double_model)
    assert sess.get_providers() == [ort_sessions.CPU]
    assert sess.get_session_options().intra_op_num_threads == 1
    np.testing.assert_array_equal(run(sess, np.ones((2, 4))), np.full((2, 4), 2.0, dtype=np.float32))


# ---------------------------------------------------------------------------------------------------- Triton

def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again on return: connections are refused


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_triton_down_is_not_ready_and_unavailable(protocol: str) -> None:
    pytest.importorskip(f"tritonclient.{protocol}")
    session = TritonSession(f"127.0.0.1:{_closed_port()}", protocol, ["double"], timeout_s=3.0)  # type: ignore[arg-type]
    started = time.monotonic()
    assert not session.ready()
    assert not session.ready()  # cached: no second probe
    assert time.monotonic() - started < 2.0
    with pytest.raises(BackendUnavailable) as info:
        session.run("double", np.zeros((1, 4), dtype=np.float32))
    assert info.value.code == "backend_unavailable"  # the API answers it with a 503
    assert "unavailable" in info.value.message and "'double'" in info.value.message
    with pytest.raises(BackendUnavailable):
        session.infer("double", np.zeros((1, 4), dtype=np.float32))
    assert time.monotonic() - started < 3.0


def test_triton_session_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="protocol"):
        TritonSession("localhost:8001", "websocket", ["m"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="TLS"):
        TritonSession("https://localhost:8001", "http", ["m"])
    session = TritonSession("grpc://localhost:8001", "grpc", ["b", "a", "b"])  # connects to nothing yet
    assert session.url == "localhost:8001"
    assert session.models == ["a", "b"]
