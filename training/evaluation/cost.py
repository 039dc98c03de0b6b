"""What each path costs: MACs and parameters (BN folded), latency under ONNX Runtime (median of interleaved
rounds, batch 1 and 16) of each branch path vs upsample-then-trunk, and SCAN convolutions fused vs plain (ONNX
Runtime) and unfused vs fused (PyTorch)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.data.degrade import downsample
from training.evaluation.systems import Systems, branch_only, upsample_trunk
from training.flops import count_macs, count_params
from training.layers.fuse import fuse_model
from training.models.btnet import BranchNet
from training.models.mobilefacenet import MobileFaceNet
from training.onnx_utils import export_onnx, run, session


def time_rounds(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median milliseconds per call, the functions interleaved round by round (fair under shared CPUs)."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(rounds):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[key].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in samples.items()}


def cost(trunk: MobileFaceNet, systems: Systems, branches: dict[int, BranchNet], crops: np.ndarray, rounds: int
         ) -> dict[str, Any]:
    """Parameters and MACs of the trunk and of each branch path; latency of each path on 16 real crops."""
    fused_trunk = fuse_model(trunk)
    out: dict[str, Any] = {
        "trunk": {"params": count_params(fused_trunk), "macs": count_macs(fused_trunk, (1, 3, 112, 112))}
    }
    for r, net in sorted(branches.items(), reverse=True):
        fused = fuse_model(net)
        assert isinstance(fused, BranchNet)
        out[f"r{r}"] = {
            "branch_params": count_params(fused.branch),
            "path_macs": count_macs(fused, (1, 3, r, r)),
            "branch_macs": count_macs(fused.branch, (1, 3, r, r)),
        }
    for batch in (1, 16):
        lr = {r: np.stack([downsample(c, r) for c in crops[:batch]]) for r in branches}
        fns: dict[str, Callable[[], object]] = {}
        for r in sorted(branches, reverse=True):
            fns[f"upsample+trunk r{r}"] = partial(upsample_trunk, systems.trunk, lr[r])
            fns[f"branch r{r}"] = partial(branch_only, systems.branch[r], lr[r])
        times = time_rounds(fns, rounds if batch == 1 else max(5, rounds // 2))
        for r in branches:
            out[f"r{r}"][f"ms_b{batch}_upsample_trunk"] = times[f"upsample+trunk r{r}"]
            out[f"r{r}"][f"ms_b{batch}_branch"] = times[f"branch r{r}"]
    return out


def _torch_call(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def call() -> object:
        with torch.no_grad():
            return model(x)

    return call


def scan_speed(
    trunk: MobileFaceNet, branches: dict[int, BranchNet], plain: dict[int, BranchNet], work: Path, rounds: int,
    threads: int,
) -> dict[str, Any]:
    """Fused SCAN vs plain (ONNX Runtime) and unfused vs fused (PyTorch), interleaved, same inputs, at 14 and 7."""
    out: dict[str, Any] = {}
    for r in sorted(branches, reverse=True):
        if r not in (14, 7):
            continue
        scan_net = branches[r]
        plain_net = plain.get(r) or BranchNet(trunk, r, "plain").eval()
        f_scan, f_plain = fuse_model(scan_net), fuse_model(plain_net)
        s_scan = session(export_onnx(f_scan, work / f"speed_scan_r{r}.onnx", (3, r, r)), threads)
        s_plain = session(export_onnx(f_plain, work / f"speed_plain_r{r}.onnx", (3, r, r)), threads)
        x = np.random.default_rng(0).uniform(-1, 1, size=(16, 3, r, r)).astype(np.float32)
        xt = torch.from_numpy(x)
        unfused = scan_net.eval()
        t = time_rounds(
            {
                "ort fused scan": partial(run, s_scan, x),
                "ort plain": partial(run, s_plain, x),
                "torch unfused scan": _torch_call(unfused, xt),
                "torch fused scan": _torch_call(f_scan, xt),
            },
            rounds,
        )
        with torch.no_grad():
            diff = float((unfused(xt) - f_scan(xt)).abs().max())
        out[f"r{r}"] = {
            "ms_b16": t,
            "ratio_fused_scan_vs_plain": t["ort fused scan"] / t["ort plain"],
            "ratio_unfused_vs_fused_torch": t["torch unfused scan"] / t["torch fused scan"],
            "params": {
                "fused_scan": count_params(f_scan), "plain_fused": count_params(f_plain),
                "unfused_scan_branch": count_params(scan_net.branch), "plain_branch": count_params(plain_net.branch),
            },
            "macs": {
                "fused_scan": count_macs(f_scan, (1, 3, r, r)), "plain_fused": count_macs(f_plain, (1, 3, r, r)),
                "unfused_scan": count_macs(unfused, (1, 3, r, r)),
            },
            "max_abs_diff_unfused_vs_fused": diff,
        }
    return out
