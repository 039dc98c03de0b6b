"""A real `tritonserver` for the tests, on CPU: find it, build a model repository it can serve, run it.

The binary comes from the nvidia-pytriton wheel installed in its own venv (`tests/triton/bootstrap.sh` creates
`.venv-triton/`; `ANYFACE_TRITON_VENV` points elsewhere). That build ships only the Python backend, so ONNX models
are served by a Python-backend stand-in (`tests/triton/onnx_model.py`: ONNX Runtime on the same ONNX file, the same
tensor names, dynamic batching). Ensembles are scheduled by Triton's core, so the exported ensembles run unchanged.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
ONNX_MODEL_PY = Path(__file__).resolve().parent / "triton" / "onnx_model.py"
BOOTSTRAP = "tests/triton/bootstrap.sh"


@dataclass(frozen=True)
class TritonInstall:
    """Where the pieces of the wheel's Triton are."""

    venv: Path
    binary: Path
    libs: Path
    backends: Path
    stub: Path
    python_libdir: Path


def _venv_path() -> Path:
    return Path(os.environ.get("ANYFACE_TRITON_VENV") or REPO_ROOT / ".venv-triton")


def find_triton() -> tuple[TritonInstall | None, str]:
    """The install, or None and why not (a skip reason naming the command that creates it).

    A venv that is there but cannot run the server raises: CI must not skip silently over a broken install."""
    venv = _venv_path()
    python = venv / "bin" / "python"
    if not python.exists():
        return None, f"no Triton test venv at {venv}; create it with `{BOOTSTRAP}`"
    binaries = sorted(venv.glob("lib/python3*/site-packages/pytriton/tritonserver/bin/tritonserver"))
    if not binaries:
        return None, f"no tritonserver binary (nvidia-pytriton) in {venv}; run `{BOOTSTRAP}`"
    dist = binaries[0].parents[1]
    probe = subprocess.run(
        [str(python), "-c", "import sys, sysconfig; print(f'{sys.version_info[0]}.{sys.version_info[1]}'); "
                            "print(sysconfig.get_config_var('LIBDIR'))"],
        capture_output=True, text=True, check=True)
    version, libdir = probe.stdout.split()
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise RuntimeError(f"the nvidia-pytriton wheel has no Python backend stub for Python {version} ({stub})")
    install = TritonInstall(venv, binaries[0], dist.parents[1] / "nvidia_pytriton.libs", dist / "backends", stub,
                            Path(libdir))
    missing = _missing_libraries(install)
    if missing:
        raise RuntimeError(f"the Triton test binaries cannot load {missing} (the stub needs the shared libpython "
                           f"of {python}: use a Python built with --enable-shared)")
    return install, ""


def _missing_libraries(install: TritonInstall) -> list[str]:
    """Shared libraries the server or the Python backend stub cannot find, as `ldd` reports them."""
    ldd = shutil.which("ldd")
    if ldd is None:
        return []
    env = {**os.environ, "LD_LIBRARY_PATH": f"{install.python_libdir}:{install.libs}"}
    missing = []
    for binary in (install.binary, install.stub):
        out = subprocess.run([ldd, str(binary)], capture_output=True, text=True, env=env).stdout
        missing += [line.split()[0] for line in out.splitlines() if "not found" in line]
    return sorted(set(missing))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------------------------- model repositories

def _model_config_pb2() -> Any:
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


def read_config(path: Path) -> Any:
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), _model_config_pb2().ModelConfig())


def write_config(path: Path, config: Any) -> None:
    from google.protobuf import text_format

    path.write_text(text_format.MessageToString(config))


def _python_backend_parts(config: Any, onnx_file: str, threads: int) -> None:
    """Turn an onnxruntime-backend config into the Python-backend stand-in's, in place."""
    pb2 = _model_config_pb2()
    config.ClearField("platform")
    config.backend = "python"
    config.ClearField("default_model_filename")
    config.optimization.ClearField("execution_accelerators")  # GPU/OpenVINO accelerators mean nothing here
    # one CPU instance per model: every Python-backend instance is a process of its own, and instance counts are
    # deployment tuning, not the repository's logic
    if not config.instance_group:
        config.instance_group.add()
    for group in config.instance_group:
        group.kind = pb2.ModelInstanceGroup.Kind.KIND_CPU
        group.count = 1
        group.ClearField("gpus")
    config.parameters["ONNX_FILE"].string_value = onnx_file
    config.parameters["ORT_THREADS"].string_value = str(threads)


def _install_python_model(version_dir: Path) -> None:
    shutil.copyfile(ONNX_MODEL_PY, version_dir / "model.py")


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        dst.symlink_to(src.resolve())
    except OSError:
        shutil.copyfile(src, dst)


def add_onnx_model(repo: Path, name: str, onnx_path: Path, *, input_name: str = "input",
                   output_name: str = "embedding", max_batch_size: int = 64, threads: int = 1) -> Path:
    """Serve one single-file ONNX model as Triton model `name` with config tensors `input_name`/`output_name`.

    The ONNX file's own (single) input and output are mapped to those names, e.g. the trunk's `output`.
    """
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    init = {i.name for i in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in init]
    if len(graph_inputs) != 1 or len(model.graph.output) != 1:
        raise ValueError(f"{onnx_path}: expected one input and one output")
    pb2 = _model_config_pb2()
    config = pb2.ModelConfig(name=name, backend="python", max_batch_size=max_batch_size)
    for cfg_name, tensor in ((input_name, graph_inputs[0]), (output_name, model.graph.output[0])):
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.type.tensor_type.shape.dim][1:]
        target = config.input.add() if tensor is graph_inputs[0] else config.output.add()
        target.name = cfg_name
        target.data_type = pb2.DataType.TYPE_FP32
        target.dims.extend(dims)
    config.dynamic_batching.max_queue_delay_microseconds = 1000
    config.instance_group.add(count=1, kind=pb2.ModelInstanceGroup.Kind.KIND_CPU)
    config.parameters["ONNX_FILE"].string_value = "model.onnx"
    config.parameters["ONNX_INPUTS"].string_value = graph_inputs[0].name
    config.parameters["ONNX_OUTPUTS"].string_value = model.graph.output[0].name
    config.parameters["ORT_THREADS"].string_value = str(threads)
    version = repo / name / "1"
    version.mkdir(parents=True, exist_ok=True)
    write_config(repo / name / "config.pbtxt", config)
    _install_python_model(version)
    _link_or_copy(onnx_path, version / "model.onnx")
    return repo / name


@dataclass
class Conversion:
    """What `convert_repository` did to one model."""

    name: str
    kind: str  # "onnxruntime -> python", "ensemble (as exported)", "copied"
    detail: str = ""


def _is_onnx_runtime(config: Any) -> bool:
    return bool(config.backend == "onnxruntime" or config.platform == "onnxruntime_onnx")


def convert_repository(src: Path, dst: Path, threads: int = 1) -> list[Conversion]:
    """Copy an exported model repository, onnxruntime-backend models rewritten for the Python-backend stand-in.

    Ensembles (and anything else) are copied byte for byte, so their wiring is exactly what was exported.
    """
    done = []
    dst.mkdir(parents=True, exist_ok=True)
    for model_dir in sorted(p for p in src.iterdir() if p.is_dir() and (p / "config.pbtxt").exists()):
        config = read_config(model_dir / "config.pbtxt")
        out = dst / model_dir.name
        if not _is_onnx_runtime(config):
            shutil.copytree(model_dir, out, symlinks=False)
            other = config.backend or config.platform
            kind = "ensemble (as exported)" if config.platform == "ensemble" else f"copied ({other})"
            done.append(Conversion(model_dir.name, kind))
            continue
        onnx_file = config.default_model_filename or "model.onnx"
        out.mkdir(parents=True)
        versions = [v for v in model_dir.iterdir() if v.is_dir() and v.name.isdigit()]
        if not versions:
            raise FileNotFoundError(f"{model_dir}: no version directory")
        for version in versions:
            if not (version / onnx_file).exists():
                raise FileNotFoundError(f"{version}: no {onnx_file}")
            (out / version.name).mkdir()
            for item in version.iterdir():  # the ONNX file and any external-data files beside it
                _link_or_copy(item, out / version.name / item.name)
            _install_python_model(out / version.name)
        _python_backend_parts(config, onnx_file, threads)
        write_config(out / "config.pbtxt", config)
        done.append(Conversion(model_dir.name, "onnxruntime -> python", onnx_file))
    return done


# ----------------------------------------------------------------------------------------------------- the server

@dataclass
class TritonServer:
    """One `tritonserver` process serving `repository` on 127.0.0.1."""

    install: TritonInstall
    repository: Path
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="anyface-triton-")))
    process: subprocess.Popen[bytes] | None = None

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def url(self, protocol: str) -> str:
        return self.grpc_url if protocol == "grpc" else self.http_url

    @property
    def log_path(self) -> Path:
        return self.workdir / "tritonserver.log"

    def _backend_dir(self) -> Path:
        backends = self.workdir / "backends"
        python = backends / "python"
        if not python.exists():
            python.mkdir(parents=True)
            for item in self.install.backends.joinpath("python").iterdir():
                shutil.copyfile(item, python / item.name)
            shutil.copyfile(self.install.stub, python / "triton_python_backend_stub")
            (python / "triton_python_backend_stub").chmod(0o755)
        return backends

    @property
    def shm_prefix(self) -> str:
        """The Python backend's shared-memory regions are /dev/shm/<prefix>*: unique per server."""
        return f"anyface{os.getpid()}x{self.grpc_port}"

    def command(self) -> list[str]:
        shm_prefix = self.shm_prefix
        return [
            str(self.install.binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={self._backend_dir()}",
            f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
            "--backend-config=python,shm-default-byte-size=4194304",
            "--backend-config=python,shm-growth-byte-size=1048576",
            f"--http-port={self.http_port}", f"--grpc-port={self.grpc_port}", f"--metrics-port={self.metrics_port}",
            "--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1",
            "--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0", "--exit-on-error=true",
            "--strict-readiness=true", "--log-verbose=0", "--exit-timeout-secs=3",
        ]

    def env(self) -> dict[str, str]:
        env = os.environ.copy()
        libs = [str(self.install.python_libdir), str(self.install.libs)]
        if env.get("LD_LIBRARY_PATH"):
            libs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = ":".join(libs)
        # the Python backend stub embeds the interpreter it finds first on PATH: the Triton venv's (numpy<2)
        env["PATH"] = f"{self.install.venv / 'bin'}:{env.get('PATH', '')}"
        env.pop("PYTHONPATH", None)
        env.pop("PYTHONHOME", None)
        env["OMP_NUM_THREADS"] = "1"
        return env

    def start(self, timeout_s: float = 90.0) -> TritonServer:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=self.env(),
                                        start_new_session=True)
        log.close()
        self.wait_ready(timeout_s)
        return self

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def log_errors(self) -> str:
        """The error lines of the log (model load failures), then its end."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        errors = [line for line in lines if line.startswith("E") or "UNAVAILABLE" in line or "failed" in line]
        return "\n".join([*errors[-30:], "...", *lines[-5:]])

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=1.0) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {self.process.returncode}:\n{self.log_errors()}")
            if self.ready():
                return
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"tritonserver not ready after {timeout_s:.0f} s:\n{self.log_errors()}")

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the server and its Python backend stubs
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
        for region in Path("/dev/shm").glob(f"{self.shm_prefix}*"):  # left behind if the server had to be killed
            region.unlink(missing_ok=True)


@contextlib.contextmanager
def running_triton(install: TritonInstall, repository: Path, grpc_port: int | None = None,
                   http_port: int | None = None) -> Iterator[TritonServer]:
    server = TritonServer(install, repository)
    if grpc_port is not None:
        server.grpc_port = grpc_port
    if http_port is not None:
        server.http_port = http_port
    try:
        yield server.start()
    finally:
        server.cleanup()


def require_triton() -> TritonInstall:
    """The install, or skip the calling test module with the reason."""
    import pytest

    install, reason = find_triton()
    if install is None:
        pytest.skip(reason, allow_module_level=True)
    assert install is not None
    return install


if __name__ == "__main__":  # `python tests/triton_server.py`: is the test Triton usable here?
    found, why = find_triton()
    print(found or why)
    sys.exit(0 if found else 1)


# ------------------------------------------------------------------------------------------------ real test faces

def aligned_lfw_faces(model_dir: Path, lfw: Path, resolutions: list[int], count: int = 16
                      ) -> dict[int, np.ndarray]:
    """The main face of `count` LFW photos (one per person, peopleDevTest order), found by the service's face
    path and aligned at every resolution straight from the photo, as the pipeline does: r -> N x r x r x 3."""
    from service.core.wiring import build_offline
    from service.imaging.align import align_face
    from service.settings import Settings
    from tests.conftest import lfw_photo, people_with_photos

    offline = build_offline(Settings(model_dir=model_dir))
    crops: dict[int, list[np.ndarray]] = {r: [] for r in resolutions}
    for name in people_with_photos(lfw, 1, count):
        image, faces = offline.path.find_faces(lfw_photo(lfw, name).read_bytes(), name, offline.face_filter)
        if not faces:
            continue
        for r in resolutions:
            crops[r].append(align_face(image, faces[0].landmarks, r))
    if not crops[resolutions[0]]:
        raise RuntimeError(f"no face found in the LFW photos under {lfw}")
    return {r: np.stack(c) for r, c in crops.items()}
