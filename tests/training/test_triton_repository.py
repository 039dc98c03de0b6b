"""The exported Triton model repository (`models/triton/`, written by `python -m training.export`) in a real
`tritonserver`: every `btnet_r{r}` ensemble must give what the single-file `models/btnet_r{r}.onnx` gives under
ONNX Runtime, on real LFW faces aligned at r.

The CPU test server has only the Python backend, so `tests/triton_server.convert_repository` swaps each
onnxruntime-backend model for the Python-backend stand-in (ONNX Runtime on the same file, same tensor names, same
batching); the ensembles' `config.pbtxt` are served exactly as exported, scheduled by Triton's core.

A self-test runs even before anything is exported: the trunk cut in two ONNX files, written as an
onnxruntime-backend repository with an ensemble joining them, must equal the uncut trunk.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from service.embedding.backend import OnnxRuntimeBackend, select_embedders
from service.embedding.preprocess import to_tensor
from service.embedding.triton import TritonBackend
from service.models.contract import BRANCH_FAMILY
from service.models.manifest import ModelEntry, load_manifest
from service.models.registry import EMBEDDER_NAME
from service.settings import TritonSettings
from tests.conftest import MODEL_DIR
from tests.triton_server import (
    Conversion,
    TritonServer,
    aligned_lfw_faces,
    convert_repository,
    read_config,
    require_triton,
    running_triton,
)

INSTALL = require_triton()  # skips this module, naming tests/triton/bootstrap.sh, when the Triton venv is absent
TOLERANCE = 1e-4
# where `python -m training.export` wrote `triton/` and `btnet_r{r}.onnx`; override to test another export
EXPORT_DIR = Path(os.environ.get("ANYFACE_EXPORT_DIR") or MODEL_DIR)
EXPORTED = EXPORT_DIR / "triton"
ENSEMBLE = re.compile(r"^btnet_r(\d+)$")
SELFTEST = "selftest_trunk_split"


# ------------------------------------------------------------------------------ a self-made exported repository

def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if x == old else x for x in node.input]
        node.output[:] = [new if x == old else x for x in node.output]
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.name == old:
            value.name = new


def _cut_point(model: onnx.ModelProto) -> str:
    """A tensor near the middle of the graph that alone carries everything the rest of the graph needs."""
    nodes = list(model.graph.node)
    free = {i.name for i in model.graph.initializer}
    free |= {o for n in nodes if n.op_type == "Constant" for o in n.output}
    produced = {o: i for i, n in enumerate(nodes) for o in n.output}
    cuts = []
    for i, node in enumerate(nodes):
        if node.op_type == "Constant":
            continue
        for tensor in node.output:
            later = (x for n in nodes[i + 1:] for x in n.input if x and x not in free and x != tensor)
            if all(produced.get(x, -1) > i for x in later):
                cuts.append(tensor)
    if len(cuts) < 3:
        raise RuntimeError("no single-tensor cut in the trunk graph")
    return cuts[len(cuts) // 2]


def _ort_config(name: str, inputs: list[tuple[str, list[int]]], outputs: list[tuple[str, list[int]]]) -> str:
    def tensors(kind: str, items: list[tuple[str, list[int]]]) -> str:
        body = ",\n".join(f'  {{ name: "{n}" data_type: TYPE_FP32 dims: [ {", ".join(map(str, d))} ] }}'
                          for n, d in items)
        return f"{kind} [\n{body}\n]\n"

    return (f'name: "{name}"\nbackend: "onnxruntime"\nmax_batch_size: 64\n' + tensors("input", inputs)
            + tensors("output", outputs) + "dynamic_batching { max_queue_delay_microseconds: 1000 }\n"
            + "instance_group [ { count: 1 kind: KIND_GPU } ]\n")


def write_selftest_repository(repo: Path, trunk_onnx: Path, tmp: Path) -> Path:
    """The trunk as `<SELFTEST>_head` -> `<SELFTEST>_tail` (onnxruntime backend), joined by ensemble `SELFTEST`."""
    model = onnx.load(str(trunk_onnx))
    cut = _cut_point(model)
    input_name, output_name = model.graph.input[0].name, model.graph.output[0].name
    head, tail = tmp / "head.onnx", tmp / "tail.onnx"
    onnx.utils.extract_model(str(trunk_onnx), str(head), [input_name], [cut])
    onnx.utils.extract_model(str(trunk_onnx), str(tail), [cut], [output_name])
    inferred = onnx.shape_inference.infer_shapes(model)
    cut_dims = next(list(d.dim_value for d in v.type.tensor_type.shape.dim)[1:]
                    for v in inferred.graph.value_info if v.name == cut)
    for path, renames in ((head, {input_name: "input", cut: "features"}),
                          (tail, {cut: "features", output_name: "embedding"})):
        part = onnx.load(str(path))
        for old, new in renames.items():
            _rename(part.graph, old, new)
        onnx.checker.check_model(part)
        (repo / f"{SELFTEST}_{path.stem}" / "1").mkdir(parents=True)
        onnx.save(part, str(repo / f"{SELFTEST}_{path.stem}" / "1" / "model.onnx"))
    (repo / f"{SELFTEST}_head" / "config.pbtxt").write_text(
        _ort_config(f"{SELFTEST}_head", [("input", [3, 112, 112])], [("features", cut_dims)]))
    (repo / f"{SELFTEST}_tail" / "config.pbtxt").write_text(
        _ort_config(f"{SELFTEST}_tail", [("features", cut_dims)], [("embedding", [128])]))
    (repo / SELFTEST / "1").mkdir(parents=True)
    (repo / SELFTEST / "config.pbtxt").write_text(f"""name: "{SELFTEST}"
platform: "ensemble"
max_batch_size: 64
input [ {{ name: "input" data_type: TYPE_FP32 dims: [ 3, 112, 112 ] }} ]
output [ {{ name: "embedding" data_type: TYPE_FP32 dims: [ 128 ] }} ]
ensemble_scheduling {{
  step [
    {{ model_name: "{SELFTEST}_head" model_version: -1
       input_map {{ key: "input" value: "input" }} output_map {{ key: "features" value: "cut" }} }},
    {{ model_name: "{SELFTEST}_tail" model_version: -1
       input_map {{ key: "features" value: "cut" }} output_map {{ key: "embedding" value: "embedding" }} }}
  ]
}}
""")
    return repo


# ------------------------------------------------------------------------------------------------------ fixtures

def exported_ensembles() -> dict[int, str]:
    if not EXPORTED.is_dir():
        return {}
    found = {}
    for config in EXPORTED.glob("*/config.pbtxt"):
        match = ENSEMBLE.match(config.parent.name)
        if match and read_config(config).platform == "ensemble":
            found[int(match.group(1))] = config.parent.name
    return dict(sorted(found.items()))


def require_export() -> dict[int, str]:
    ensembles = exported_ensembles()
    if not ensembles:
        pytest.skip(f"no exported Triton repository with btnet_r* ensembles at {EXPORTED}: run "
                    "`python -m training.export` first")
    return ensembles


@pytest.fixture(scope="module")
def conversions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Conversion]]:
    """One repository for the module: the exported one (converted), if any, plus the self-test models."""
    repo = tmp_path_factory.mktemp("triton-exported")
    done = convert_repository(EXPORTED, repo) if exported_ensembles() else []
    staging = tmp_path_factory.mktemp("selftest-src")
    write_selftest_repository(staging / "repo", MODEL_DIR / "mobilefacenet_dynamic.onnx", staging)
    done += convert_repository(staging / "repo", repo)
    return repo, done


@pytest.fixture(scope="module")
def triton(conversions: tuple[Path, list[Conversion]]) -> Iterator[TritonServer]:
    with running_triton(INSTALL, conversions[0]) as server:
        yield server


@pytest.fixture(scope="module")
def trunk_entry(model_dir: Path) -> ModelEntry:
    return load_manifest(model_dir).models[EMBEDDER_NAME]


def _entry_for(resolution: int, trunk: ModelEntry) -> ModelEntry:
    """The manifest entry of the branch if training wrote one, else the trunk's normalisation at r."""
    entry = load_manifest(EXPORT_DIR).models.get(f"btnet_r{resolution}")
    if entry is not None:
        return entry
    return trunk.model_copy(update={"resolution": resolution, "input_size": (resolution, resolution)})


@pytest.fixture(scope="module")
def faces(model_dir: Path, lfw_dir: Path) -> dict[int, np.ndarray]:
    resolutions = sorted({112, *exported_ensembles()})
    return aligned_lfw_faces(model_dir, lfw_dir, resolutions, count=16)


def _infer(server: TritonServer, model: str, tensor: np.ndarray, protocol: str = "grpc") -> np.ndarray:
    proto = importlib.import_module(f"tritonclient.{protocol}")
    client = proto.InferenceServerClient(server.url(protocol))
    try:
        inp = proto.InferInput("input", list(tensor.shape), "FP32")
        inp.set_data_from_numpy(np.ascontiguousarray(tensor, dtype=np.float32))
        timeout = {"client_timeout": 60} if protocol == "grpc" else {}
        result = client.infer(model, [inp], outputs=[proto.InferRequestedOutput("embedding")], **timeout)
        return np.asarray(result.as_numpy("embedding"))
    finally:
        client.close()


def _onnx_reference(path: Path, tensor: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {session.get_inputs()[0].name: tensor})[0])


# --------------------------------------------------------------------------------------------------------- tests

@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_selftest_ensemble_equals_uncut_trunk(protocol: str, triton: TritonServer,
                                              conversions: tuple[Path, list[Conversion]],
                                              faces: dict[int, np.ndarray], trunk_entry: ModelEntry,
                                              model_dir: Path) -> None:
    kinds = {c.name: c.kind for c in conversions[1]}
    assert kinds[SELFTEST] == "ensemble (as exported)"
    assert kinds[f"{SELFTEST}_head"] == kinds[f"{SELFTEST}_tail"] == "onnxruntime -> python"
    tensor = to_tensor(faces[112], trunk_entry)
    got = _infer(triton, SELFTEST, tensor, protocol)
    want = _onnx_reference(model_dir / trunk_entry.file, tensor)
    diff = float(np.abs(got - want).max())
    print(f"{protocol} self-test ensemble (trunk cut in two) vs uncut trunk: {len(tensor)} LFW faces, "
          f"max |diff| {diff:.3g}")
    assert got.shape == want.shape
    assert diff <= TOLERANCE


def test_exported_layout(conversions: tuple[Path, list[Conversion]]) -> None:
    """What the exported repository holds, and that every model it has is servable here."""
    ensembles = require_export()
    kinds = {c.name: c.kind for c in conversions[1] if not c.name.startswith(SELFTEST)}
    print("exported repository:", kinds)
    for name in ensembles.values():
        assert kinds[name] == "ensemble (as exported)"
        config = read_config(EXPORTED / name / "config.pbtxt")
        assert [t.name for t in config.input] == ["input"], f"{name}: inputs {[t.name for t in config.input]}"
        assert [t.name for t in config.output] == ["embedding"], f"{name}: outputs {[t.name for t in config.output]}"
        for step in config.ensemble_scheduling.step:
            assert step.model_name in kinds, f"{name}: step model {step.model_name!r} not in the repository"
    unknown = {n: k for n, k in kinds.items() if k.startswith("copied")}
    assert not unknown, f"models the CPU test server cannot stand in for: {unknown}"


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_exported_ensembles_equal_single_file_models(protocol: str, triton: TritonServer,
                                                      faces: dict[int, np.ndarray], trunk_entry: ModelEntry) -> None:
    ensembles = require_export()
    for resolution, name in ensembles.items():
        single = EXPORT_DIR / f"btnet_r{resolution}.onnx"
        assert single.exists(), f"{single} missing: the export wrote ensemble {name} but no single-file model"
        tensor = to_tensor(faces[resolution], _entry_for(resolution, trunk_entry))
        assert tensor.shape[1:] == (3, resolution, resolution)
        got = _infer(triton, name, tensor, protocol)
        want = _onnx_reference(single, tensor)
        diff = float(np.abs(got - want).max())
        print(f"{protocol} {name} (ensemble) vs {single.name}: {len(tensor)} LFW faces at {resolution} px, "
              f"max |diff| {diff:.3g}")
        assert got.shape == want.shape == (len(tensor), 128)
        assert diff <= TOLERANCE


def test_exported_trunk_equals_service_trunk(triton: TritonServer, faces: dict[int, np.ndarray],
                                             trunk_entry: ModelEntry, model_dir: Path) -> None:
    require_export()
    if not (EXPORTED / EMBEDDER_NAME / "config.pbtxt").exists():
        pytest.skip(f"the exported repository has no {EMBEDDER_NAME!r} model")
    tensor = to_tensor(faces[112], trunk_entry)
    got = _infer(triton, EMBEDDER_NAME, tensor)
    want = _onnx_reference(model_dir / trunk_entry.file, tensor)
    diff = float(np.abs(got - want).max())
    print(f"exported {EMBEDDER_NAME} vs {trunk_entry.file}: max |diff| {diff:.3g}")
    assert diff <= TOLERANCE


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_service_backend_on_exported_repository(protocol: str, triton: TritonServer, model_dir: Path,
                                                lfw_dir: Path) -> None:
    """End to end: the service's TritonBackend on the exported repository, against the embedded backend, for
    every embedder the manifest selects (`mobilefacenet` is itself an ensemble of trunk segments there)."""
    require_export()
    model_dir = EXPORT_DIR  # the manifest the export registered its branches in (models/ unless overridden)
    embedders = select_embedders(load_manifest(model_dir), EMBEDDER_NAME, BRANCH_FAMILY, use_branches=True)
    missing = [name for name, _ in embedders.values() if not (EXPORTED / name / "config.pbtxt").exists()]
    assert not missing, f"manifest embedders the exported repository does not serve: {missing}"
    settings = TritonSettings(triton_url=triton.url(protocol), triton_protocol=protocol, triton_timeout_s=30.0)
    backend = TritonBackend(settings, embedders)
    assert backend.ready()
    embedded = OnnxRuntimeBackend(model_dir, embedders, threads=1)
    crops = aligned_lfw_faces(model_dir, lfw_dir, sorted(embedders), count=16)
    for res, (name, _) in embedders.items():
        diff = float(np.abs(backend.embed(res, crops[res]) - embedded.embed(res, crops[res])).max())
        print(f"{protocol} TritonBackend on exported {name} vs OnnxRuntimeBackend: max |diff| {diff:.3g} "
              "(unit embeddings)")
        assert diff <= TOLERANCE
