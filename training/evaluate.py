"""Evaluate BTNet against upsample-then-trunk and write `docs/multires.md` plus a ROC plot.

    python -m training.evaluate --run runs/btnet_scan --ablation runs/btnet_plain

Everything is measured in this one run with ONNX Runtime on the CPU:
- LFW View 2, 10 folds (threshold chosen on the other 9 folds), for the resolution pairs 112&112, 112&56,
  112&28, 112&14, 112&7, 28&28, 14&14, 7&7. The low-resolution side is the aligned 112 crop area-downsampled to r.
  Baseline: the trunk on that crop upsampled back to 112 (bicubic). BTNet: the native-resolution branch.
- 1:N open-set identification on peopleDevTest: identities with 2+ images are alternately enrolled (gallery = their
  first image at 112, mated probes = their other images) or not (all their images are non-mated probes); one-image
  identities are enrolled as distractors. Rank-1, TPIR at FPIR 0.1 and 0.01, probes at 28, 14 and 7 pixels.
- Cost per path: MACs and latency (batch 1 and 16, interleaved rounds, median) of each branch path vs
  upsample-then-trunk (the bicubic resize is timed too).
- SCAN: the fused model vs the plain architecture (latency ratio, parameters, MACs), the unfused training form vs
  the fused one, and the accuracy ablation (branches trained with plain convs, same data and steps) at 112&14 and
  112&7.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from evaluation.embed import digest
from training.checkpoints import load_branch, run_branches, training_note
from training.config import lfw_dir, model_dir, trunk_weights
from training.data.lfw_crops import load_cache
from training.evaluation.accuracy import identification, lfw_verification
from training.evaluation.cost import cost, scan_speed
from training.evaluation.report import plot_multires_roc, write_report
from training.evaluation.systems import EmbeddingCache, Systems
from training.export import export_branch
from training.layers.fuse import fuse_model
from training.models.btnet import BranchNet
from training.models.mobilefacenet import MobileFaceNet, load_trunk
from training.onnx_utils import export_onnx, session

CAVEATS = [
    "LFW View 2 folds share identities with peopleDevTrain (the LFW protocol's View 1 / View 2 split); "
    "the branches were distilled from the trunk without identity labels, so no identity supervision leaks, "
    "but the training faces include some of the evaluation people. The identification test "
    "(peopleDevTest) is identity-disjoint from training.",
    "Low-resolution probes are synthesised (area downsampling of aligned crops), not real surveillance "
    "faces; real tiny faces also carry detector landmark noise.",
    "The service aligns tiny faces straight to r x r; that matches the area-downsampled crops used here only "
    "with the half-pixel template offset (docs/training.md, 'Geometry contract', tested by "
    "tests/training/test_models.py::test_direct_alignment_matches_the_training_geometry).",
    "Latencies are from a shared 2-core CPU; ratios from interleaved rounds are more trustworthy than the "
    "absolute milliseconds.",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, default=Path("runs/btnet_scan"))
    p.add_argument("--ablation", type=Path, default=Path("runs/btnet_plain"), help="plain-conv run (optional)")
    p.add_argument("--models", type=Path, default=None, help="folder with btnet_r*.onnx (default: model dir)")
    p.add_argument("--work", type=Path, default=Path("runs/evaluate"))
    p.add_argument("--doc", type=Path, default=Path("docs/multires.md"))
    p.add_argument("--png", type=Path, default=Path("docs/multires_roc.png"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=60, help="latency rounds at batch 1 (batch 16: a quarter)")
    p.add_argument("--ablation-note", default="")
    p.add_argument("--folds", type=int, default=10, help="LFW folds to use (smoke runs: fewer)")
    p.add_argument("--max-people", type=int, default=0, help="identification: first N peopleDevTest identities")
    p.add_argument(
        "--baseline-only", action="store_true",
        help="only compute and cache the upsample-then-trunk embeddings (they need no trained branch), then stop",
    )
    return p.parse_args(argv)


def load_run(trunk: MobileFaceNet, run: Path) -> dict[int, BranchNet]:
    """The trained branches of a run by resolution (none when the folder does not exist)."""
    nets = [load_branch(trunk, p) for p in run_branches(run)] if run.exists() else []
    return {net.resolution: net for net in nets}


def _export_report(models: Path) -> dict[str, Any]:
    path = models / "btnet_export.json"
    return json.loads(path.read_text()) if path.exists() else {}


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    a.work.mkdir(parents=True, exist_ok=True)
    models = a.models or model_dir()
    trunk = load_trunk(trunk_weights())
    cache = load_cache()
    store = EmbeddingCache(a.work, digest(cache.meta.get("face_path")))
    branches = {} if a.baseline_only else load_run(trunk, a.run)
    branch_onnx = {}
    for r, net in branches.items():
        path = models / f"btnet_r{r}.onnx"
        if not path.exists():  # not exported yet: export next to the other evaluation files
            path, _ = export_branch(net, a.work)
        branch_onnx[r] = path
    trunk_onnx = export_onnx(fuse_model(trunk), a.work / "trunk.onnx", (3, 112, 112))
    systems = Systems(trunk_onnx, branch_onnx, a.threads)
    plain = load_run(trunk, a.ablation)
    ablation_sessions: dict[int, ort.InferenceSession] = {
        r: session(export_branch(net, a.work, f"plain_r{r}")[0], a.threads) for r, net in plain.items()
    }
    t0 = time.perf_counter()
    lfw = lfw_dir()
    verification, curves = lfw_verification(lfw, cache, systems, ablation_sessions, store, a.folds)
    ident = identification(lfw, cache, systems, store, a.max_people)
    if a.baseline_only:
        print(f"baseline embeddings cached under {a.work} ({time.perf_counter() - t0:.0f} s)")
        return
    costs = cost(trunk, systems, branches, np.asarray(cache.crops[:16]), a.rounds)
    speed = scan_speed(trunk, branches, plain, a.work, a.rounds, a.threads)
    plot_multires_roc(curves, a.png)
    res: dict[str, Any] = {
        "command": shlex.join(["python", "-m", "training.evaluate", *(sys.argv[1:] if argv is None else argv)]),
        "export": _export_report(models),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {a.threads} ORT/torch thread(s), onnxruntime {ort.__version__}, "
        f"torch {torch.__version__}",
        "threads": a.threads,
        "work": str(a.work),
        "folds": a.folds,
        "training_note": training_note(a.run),
        "ablation_note": a.ablation_note
        or (f"Plain-conv branches: {training_note(a.ablation)}; SCAN: the main run's branches." if plain else ""),
        "verification": verification,
        "identification": ident,
        "cost": costs,
        "scan_speed": speed,
        "eval_seconds": time.perf_counter() - t0,
        "caveats": CAVEATS,
    }
    (a.work / "results.json").write_text(json.dumps(res, indent=2, default=float))
    a.doc.parent.mkdir(parents=True, exist_ok=True)
    write_report(res, a.doc, a.png)
    print(f"wrote {a.doc} and {a.png} ({res['eval_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
