"""Export: fused ONNX files equal PyTorch, pass the checker, register router-compatible manifest entries, and the
Triton repository's pieces chained under ONNX Runtime equal the single files.

These tests build branches from a randomly initialised trunk (no downloads needed) with their SCAN scales, kernels
and BN statistics perturbed, so that fusion and export are exercised on non-trivial weights.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs PyTorch: pip install .[train]")
torch.set_num_threads(1)  # shared CI / dev CPUs: one thread is faster than oversubscribed OpenMP
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from service.embedding.backend import OnnxRuntimeBackend, select_embedders  # noqa: E402
from service.models.manifest import ModelEntry, load_manifest, sha256_of, update_manifest  # noqa: E402
from training.export import export_branch, manifest_entry  # noqa: E402
from training.layers.fuse import fuse_model  # noqa: E402
from training.layers.scan_conv import ScanConv2d  # noqa: E402
from training.models.btnet import BranchNet  # noqa: E402
from training.models.mobilefacenet import MobileFaceNet  # noqa: E402
from training.onnx_utils import export_onnx, run, session, torch_run  # noqa: E402
from training.testing import random_trunk as make_random_trunk  # noqa: E402
from training.triton_repo import (  # noqa: E402
    TRUNK_ENSEMBLE,
    parse_ensemble,
    repository_digest,
    run_ensemble,
    write_repository,
)

RESOLUTIONS = [28, 14, 7]  # 56 adds nothing new and costs a full trunk per call


def _trunk() -> MobileFaceNet:
    return make_random_trunk(1)


def _branch(trunk: MobileFaceNet, r: int) -> BranchNet:
    net = BranchNet(trunk, r, "scan")
    gen = torch.Generator().manual_seed(r)
    with torch.no_grad():
        for m in net.branch.modules():
            if isinstance(m, ScanConv2d):
                m.scale.copy_(0.5 + torch.rand(m.scale.shape, generator=gen))
    return net.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, MobileFaceNet, dict[int, BranchNet], dict]:
    out = tmp_path_factory.mktemp("models")
    trunk = _trunk()
    branches = {r: _branch(trunk, r) for r in RESOLUTIONS}
    diffs = {}
    for r, net in branches.items():
        path, diff = export_branch(net, out)
        diffs[r] = diff
        update_manifest(out, {f"btnet_r{r}": manifest_entry(path, r, Path("runs/test"), "scan", 0)})
    return out, trunk, branches, diffs


@pytest.mark.parametrize("r", RESOLUTIONS)
def test_onnx_file_is_valid_and_equals_pytorch(exported: tuple, r: int) -> None:
    out, _trunk, branches, diffs = exported
    path = out / f"btnet_r{r}.onnx"
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["embedding"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    assert diffs[r] <= 1e-4
    sess = session(path)
    for batch in (1, 3, 16):
        x = np.random.default_rng(batch).uniform(-1, 1, size=(batch, 3, r, r)).astype(np.float32)
        y = run(sess, x)
        assert y.shape == (batch, 128)
        assert np.abs(y - torch_run(branches[r], x)).max() <= 1e-4  # the unfused training model


def test_manifest_entries_are_router_compatible(exported: tuple, tmp_path: Path) -> None:
    out, trunk, branches, _ = exported
    trunk_path = export_onnx(fuse_model(trunk), out / "trunk.onnx", (3, 112, 112))
    update_manifest(
        out,
        {
            "mobilefacenet": ModelEntry(
                role="embedder", family="mobilefacenet", file=trunk_path.name, sha256=sha256_of(trunk_path),
                input_size=(112, 112), mean=127.5, std=128.0, embedding_size=128, resolution=112,
            )
        },
    )
    manifest = load_manifest(out)
    for r in RESOLUTIONS:
        entry = manifest.models[f"btnet_r{r}"]
        assert entry.role == "embedder" and entry.family == "btnet"
        assert entry.input_size == (r, r) and entry.resolution == r
        assert (entry.mean, entry.std, entry.color_order, entry.layout) == (127.5, 128.0, "RGB", "NCHW")
        assert entry.embedding_size == 128 and entry.dynamic_batch
        assert entry.sha256 == sha256_of(out / entry.file)
    chosen = select_embedders(manifest, "mobilefacenet", "btnet", use_branches=True)
    assert sorted(chosen) == sorted([*RESOLUTIONS, 112])
    backend = OnnxRuntimeBackend(out, chosen, threads=1)
    rng = np.random.default_rng(0)
    for r in RESOLUTIONS:
        crops = rng.integers(0, 256, size=(2, r, r, 3), dtype=np.uint8)
        got = backend.embed(r, crops)
        x = ((crops.astype(np.float32) - 127.5) / 128.0).transpose(0, 3, 1, 2)
        ref = torch_run(branches[r], x)
        ref /= np.linalg.norm(ref, axis=1, keepdims=True)
        assert np.abs(got - ref).max() <= 1e-4


def test_triton_repository(exported: tuple, tmp_path: Path) -> None:
    out, trunk, branches, _ = exported
    root = tmp_path / "triton"
    ensembles = write_repository(fuse_model(trunk), {r: n.fuse() for r, n in branches.items()}, root)  # type: ignore[arg-type]
    assert ensembles == [TRUNK_ENSEMBLE, *[f"btnet_r{r}" for r in sorted(RESOLUTIONS, reverse=True)]]
    # the trunk's weights are stored once: one segment per stage, shared by every ensemble
    segments = sorted(p.name for p in root.iterdir() if p.name.startswith("mfn_"))
    assert segments == ["mfn_s14", "mfn_s28", "mfn_s7", "mfn_stem"]
    configs = {p.parent.name: p.read_text() for p in root.glob("*/config.pbtxt")}
    for name, text in configs.items():
        assert f'name: "{name}"' in text
        if 'platform: "ensemble"' not in text:
            assert 'backend: "onnxruntime"' in text and "dynamic_batching" in text
            assert (root / name / "1" / "model.onnx").exists()
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        model_config_pb2 = None
    if model_config_pb2 is not None:
        for text in configs.values():
            cfg = text_format.Parse(text, model_config_pb2.ModelConfig())
            assert cfg.max_batch_size > 0
    for name in ensembles:
        steps = parse_ensemble(configs[name])
        assert steps[0][1] == "input" and steps[-1][2] == "embedding"
        for (_m, _src, dst), (_m2, src2, _dst2) in itertools.pairwise(steps):
            assert dst == src2  # each step consumes what the previous produced
        assert all(model in configs for model, _s, _d in steps)
    for name in ensembles:
        r = 112 if name == TRUNK_ENSEMBLE else int(name.removeprefix("btnet_r"))
        x = np.random.default_rng(r).uniform(-1, 1, size=(3, 3, r, r)).astype(np.float32)
        ref = torch_run(trunk, x) if name == TRUNK_ENSEMBLE else run(session(out / f"{name}.onnx"), x)
        assert np.abs(run_ensemble(root, name, x) - ref).max() <= 1e-4
    assert repository_digest(root) == repository_digest(root)
