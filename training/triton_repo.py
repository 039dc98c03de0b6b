"""A Triton model repository for the trunk and the BTNet branches, with the trunk's weights stored once.

The (BatchNorm-folded) trunk is cut at every implant stage into segments named after the spatial size of their
input: `mfn_stem` (112 image -> 56 map), `mfn_s56`, `mfn_s28`, `mfn_s14`, `mfn_s7` (-> 128-d embedding).
Each branch is a model `btnet_r{r}_branch` (r x r image -> the trunk feature at stage r). Ensembles chain them:

    mobilefacenet = mfn_stem -> mfn_s56 -> mfn_s28 -> mfn_s14 -> mfn_s7
    btnet_r{r}    = btnet_r{r}_branch -> mfn_s{r} -> ... -> mfn_s7

Every ensemble takes `input` (N x 3 x r x r FP32, normalised (x - 127.5) / 128, RGB) and returns `embedding`
(N x 128 FP32, not L2-normalised). Composing models use the onnxruntime backend with dynamic batching; their
tensors are `input` and `output`.
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from training.models.btnet import BranchNet, BranchOnly, TrunkSegment
from training.models.mobilefacenet import N_UNITS, MobileFaceNet, implant_unit
from training.onnx_utils import export_onnx

MAX_BATCH = 64
QUEUE_DELAY_US = 500
TRUNK_ENSEMBLE = "mobilefacenet"


@dataclass(frozen=True)
class Segment:
    name: str
    start: int
    stop: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]


def _dims(shape: tuple[int, ...]) -> str:
    return "[ " + ", ".join(str(d) for d in shape) + " ]"


def model_config(name: str, input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> str:
    return f"""name: "{name}"
backend: "onnxruntime"
max_batch_size: {MAX_BATCH}
input [
  {{
    name: "input"
    data_type: TYPE_FP32
    dims: {_dims(input_shape)}
  }}
]
output [
  {{
    name: "output"
    data_type: TYPE_FP32
    dims: {_dims(output_shape)}
  }}
]
dynamic_batching {{
  max_queue_delay_microseconds: {QUEUE_DELAY_US}
}}
"""


def ensemble_config(name: str, input_shape: tuple[int, ...], steps: list[str]) -> str:
    blocks = []
    for i, model in enumerate(steps):
        src = "input" if i == 0 else f"t{i - 1}"
        dst = "embedding" if i == len(steps) - 1 else f"t{i}"
        blocks.append(
            f"""    {{
      model_name: "{model}"
      model_version: -1
      input_map {{
        key: "input"
        value: "{src}"
      }}
      output_map {{
        key: "output"
        value: "{dst}"
      }}
    }}"""
        )
    joined = ",\n".join(blocks)
    return f"""name: "{name}"
platform: "ensemble"
max_batch_size: {MAX_BATCH}
input [
  {{
    name: "input"
    data_type: TYPE_FP32
    dims: {_dims(input_shape)}
  }}
]
output [
  {{
    name: "embedding"
    data_type: TYPE_FP32
    dims: [ 128 ]
  }}
]
ensemble_scheduling {{
  step [
{joined}
  ]
}}
"""


def trunk_segments(trunk: MobileFaceNet, resolutions: list[int]) -> list[Segment]:

    cuts = sorted({0, *(implant_unit(r) for r in resolutions), N_UNITS})
    segments = []
    with torch.no_grad():
        x = torch.zeros(1, 3, 112, 112)
        for start, stop in itertools.pairwise(cuts):
            y = trunk.forward_units(x, start, stop)
            name = "mfn_stem" if start == 0 else f"mfn_s{x.shape[-1]}"
            segments.append(Segment(name, start, stop, tuple(x.shape[1:]), tuple(y.shape[1:])))
            x = y
    return segments


def _write_model(root: Path, name: str, onnx_src: Path, config: str) -> None:
    folder = root / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    shutil.move(str(onnx_src), folder / "1" / "model.onnx")
    (folder / "config.pbtxt").write_text(config)


def _owned_by_trunk_export(name: str) -> bool:
    return name == TRUNK_ENSEMBLE or name.startswith(("mfn_", "btnet_", "."))


def write_repository(fused_trunk: MobileFaceNet, fused_branches: dict[int, BranchNet], root: Path) -> list[str]:
    """Write the trunk's and the branches' models and ensembles under `root` (those already there are replaced;
    other models, such as the attention variants of `write_variant`, are kept); return the ensemble names."""

    resolutions = sorted(fused_branches, reverse=True)
    root.mkdir(parents=True, exist_ok=True)
    for folder in root.iterdir():
        if folder.is_dir() and _owned_by_trunk_export(folder.name):
            shutil.rmtree(folder)
    staging = root / ".staging"
    segments = trunk_segments(fused_trunk, resolutions)
    for seg in segments:
        path = export_onnx(
            TrunkSegment(fused_trunk, seg.start, seg.stop), staging / f"{seg.name}.onnx", seg.input_shape,
            output_name="output",
        )
        _write_model(root, seg.name, path, model_config(seg.name, seg.input_shape, seg.output_shape))
    by_start = {seg.start: seg for seg in segments}

    def chain_from(unit: int) -> list[str]:
        names = []
        while unit < N_UNITS:
            seg = by_start[unit]
            names.append(seg.name)
            unit = seg.stop
        return names

    (root / TRUNK_ENSEMBLE / "1").mkdir(parents=True)
    (root / TRUNK_ENSEMBLE / "config.pbtxt").write_text(ensemble_config(TRUNK_ENSEMBLE, (3, 112, 112), chain_from(0)))
    ensembles = [TRUNK_ENSEMBLE]
    for r in resolutions:
        net = fused_branches[r]
        with torch.no_grad():
            feat_shape = tuple(net.branch(torch.zeros(1, 3, r, r)).shape[1:])
        name = f"btnet_r{r}_branch"
        path = export_onnx(BranchOnly(net), staging / f"{name}.onnx", (3, r, r), output_name="output")
        _write_model(root, name, path, model_config(name, (3, r, r), feat_shape))
        ensemble = f"btnet_r{r}"
        (root / ensemble / "1").mkdir(parents=True)
        steps = [name, *chain_from(net.implant)]
        (root / ensemble / "config.pbtxt").write_text(ensemble_config(ensemble, (3, r, r), steps))
        ensembles.append(ensemble)
    shutil.rmtree(staging, ignore_errors=True)
    return ensembles


def write_variant(root: Path, name: str, model: torch.nn.Module) -> None:
    """A fine-tuned embedder with the trunk's contract as Triton model `<name>_net` (input `input` N x 3 x 112 x
    112, output `output`) behind a one-step ensemble `<name>` with the service's tensor names (`embedding` out)."""
    for folder in (root / name, root / f"{name}_net"):
        shutil.rmtree(folder, ignore_errors=True)
    export_onnx(model, root / f"{name}_net" / "1" / "model.onnx", (3, 112, 112), output_name="output")
    (root / f"{name}_net" / "config.pbtxt").write_text(model_config(f"{name}_net", (3, 112, 112), (128,)))
    (root / name / "1").mkdir(parents=True)
    (root / name / "config.pbtxt").write_text(ensemble_config(name, (3, 112, 112), [f"{name}_net"]))


def parse_ensemble(config: str) -> list[tuple[str, str, str]]:
    """(model, input tensor, output tensor) of each step of an ensemble config written by this module."""
    steps = []
    for block in config.split("model_name:")[1:]:
        model = block.split('"')[1]
        src = block.split("input_map")[1].split("value:")[1].split('"')[1]
        dst = block.split("output_map")[1].split("value:")[1].split('"')[1]
        steps.append((model, src, dst))
    return steps


def repository_digest(root: Path) -> str:
    """A stable checksum of the repository: sha256 over the sorted (path, file sha256) listing."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(hashlib.sha256(path.read_bytes()).hexdigest().encode())
    return digest.hexdigest()


def run_ensemble(root: Path, name: str, x: np.ndarray) -> np.ndarray:
    """Run an ensemble of this repository with ONNX Runtime, step by step (no Triton needed)."""
    from training.onnx_utils import run, session

    tensors = {"input": x}
    for model, src, dst in parse_ensemble((root / name / "config.pbtxt").read_text()):
        tensors[dst] = run(session(root / model / "1" / "model.onnx"), tensors[src])
    return tensors["embedding"]
