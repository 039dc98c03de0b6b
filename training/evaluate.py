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
import hashlib
import json
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from tqdm import tqdm

from service.models.manifest import sha256_of
from training.config import lfw_dir, model_dir, trunk_weights
from training.data.degrade import downsample, normalise, upsample
from training.data.lfw_crops import CropCache, load_cache, people_images, read_pairs, read_people
from training.distill import load_branch
from training.export import export_branch
from training.flops import count_macs, count_params
from training.layers.fuse import fuse_model
from training.metrics import auc, kfold_accuracy, l2n, open_set, roc, tar_at_far
from training.models.btnet import BranchNet
from training.models.mobilefacenet import MobileFaceNet, load_trunk
from training.onnx_utils import export_onnx, run, session

PAIRS = [(112, 112), (112, 56), (112, 28), (112, 14), (112, 7), (28, 28), (14, 14), (7, 7)]
ID_RESOLUTIONS = [28, 14, 7]
ABLATION_PAIRS = [(112, 14), (112, 7)]
BATCH = 64

Embedder = Callable[[np.ndarray], np.ndarray]  # uint8 N x 112 x 112 x 3 crops -> N x 128


EMB_CACHE: list[Path] = []  # set by main(): embeddings are kept per (model file, images) under the work folder


def _embed(
    crops: np.ndarray, fn: Callable[[np.ndarray], np.ndarray], desc: str, key: tuple[str, ...] = ()
) -> np.ndarray:
    """Embed crops in batches; with a key (model checksum, image names), reuse an earlier run's result."""
    path = None
    if key and EMB_CACHE:
        digest = hashlib.sha256("|".join((desc, *key)).encode()).hexdigest()[:20]
        path = EMB_CACHE[0] / f"emb_{digest}.npy"
        if path.exists():
            return np.load(path)
    out = []
    for i in tqdm(range(0, len(crops), BATCH), desc=desc, unit="batch", leave=False):
        out.append(fn(np.asarray(crops[i : i + BATCH])))
    result = np.concatenate(out)
    if path is not None:
        np.save(path, result)
    return result


class Systems:
    """The ONNX sessions of both systems and how each turns a 112 crop into an embedding at resolution r."""

    def __init__(self, trunk_onnx: Path, branch_onnx: dict[int, Path], threads: int) -> None:
        self.trunk = session(trunk_onnx, threads)
        self.branch = {r: session(p, threads) for r, p in branch_onnx.items()}
        self.tag = {"trunk": sha256_of(trunk_onnx)} | {f"btnet{r}": sha256_of(p) for r, p in branch_onnx.items()}

    def hr(self, crops: np.ndarray) -> np.ndarray:
        return run(self.trunk, normalise(crops))

    def baseline(self, r: int) -> Callable[[np.ndarray], np.ndarray]:
        if r == 112:
            return self.hr
        return lambda c: run(self.trunk, normalise(np.stack([upsample(downsample(x, r)) for x in c])))

    def btnet(
        self, r: int, sessions: dict[int, ort.InferenceSession] | None = None
    ) -> Callable[[np.ndarray], np.ndarray]:
        if r == 112:
            return self.hr
        sess = (sessions or self.branch)[r]
        return lambda c: run(sess, normalise(np.stack([downsample(x, r) for x in c])))


def lfw_verification(
    cache: CropCache, systems: Systems, ablation: dict[int, ort.InferenceSession], n_folds: int = 10
) -> tuple[dict[str, Any], dict[str, tuple[np.ndarray, np.ndarray]]]:
    folds = read_pairs(lfw_dir() / "pairs.txt")[:n_folds]
    pairs = [(a, b, same, k) for k, fold in enumerate(folds) for a, b, same in fold]
    names = sorted({n for a, b, _s, _k in pairs for n in (a, b)})
    pos = {n: i for i, n in enumerate(names)}
    crops = np.asarray(cache.crops[cache.rows(names)])
    ia = np.array([pos[a] for a, _b, _s, _k in pairs])
    ib = np.array([pos[b] for _a, b, _s, _k in pairs])
    same = np.array([s for _a, _b, s, _k in pairs])
    fold_ids = np.array([k for *_x, k in pairs])
    resolutions = sorted({r for pair in PAIRS for r in pair}, reverse=True)
    emb: dict[tuple[str, int], np.ndarray] = {}
    names_key = hashlib.sha256("\n".join(names).encode()).hexdigest()
    for r in resolutions:
        key = (systems.tag["trunk"], names_key)
        emb[("baseline", r)] = l2n(_embed(crops, systems.baseline(r), f"LFW baseline r={r}", key))
        if ("btnet" + str(r)) not in systems.tag and r != 112:
            continue
        if r == 112:
            emb[("btnet", r)] = emb[("baseline", r)]
        else:
            key = (systems.tag[f"btnet{r}"], names_key)
            emb[("btnet", r)] = l2n(_embed(crops, systems.btnet(r), f"LFW btnet r={r}", key))
    for r in ablation:
        emb[("plain", r)] = l2n(_embed(crops, systems.btnet(r, ablation), f"LFW plain r={r}"))
    results: dict[str, Any] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for system in ("baseline", "btnet", "plain"):
        for ra, rb in PAIRS:
            if system == "plain" and (ra, rb) not in ABLATION_PAIRS:
                continue
            # the 112 side is the trunk's embedding in every system (it is the BTNet 112 path)
            ka = ("baseline", 112) if ra == 112 else (system, ra)
            kb = ("baseline", 112) if rb == 112 else (system, rb)
            if ka not in emb or kb not in emb:
                continue
            scores = np.sum(emb[ka][ia] * emb[kb][ib], axis=1)
            mean, std = kfold_accuracy(scores, same, fold_ids)
            label = f"{system}/{ra}&{rb}"
            results[label] = {
                "accuracy": mean, "std": std, "auc": auc(scores, same),
                "tar@far=1e-2": tar_at_far(scores, same, 1e-2), "tar@far=1e-3": tar_at_far(scores, same, 1e-3),
            }
            curves[label] = roc(scores, same)
    return results, curves


def identification(cache: CropCache, systems: Systems, max_people: int = 0) -> dict[str, Any]:
    people = read_people(lfw_dir() / "peopleDevTest.txt")
    if max_people:
        people = people[:max_people]
    kept = {p for p, _n in people}
    multi = sorted(p for p, n in people if n >= 2)
    enrolled = set(multi[0::2]) | {p for p, n in people if n == 1}
    images = [(p, n) for p, n in people_images(lfw_dir() / "peopleDevTest.txt") if p in kept]
    gallery_names = sorted({p: n for p, n in reversed(images) if p in enrolled}.items())
    gallery_set = {n for _p, n in gallery_names}
    probes = [(p, n) for p, n in images if n not in gallery_set]
    ids = {p: i for i, p in enumerate(sorted({p for p, _n in images}))}
    g_ids = np.array([ids[p] for p, _n in gallery_names])
    p_ids = np.array([ids[p] for p, _n in probes])
    mated = np.array([p in enrolled for p, _n in probes])
    g_crops = np.asarray(cache.crops[cache.rows([n for _p, n in gallery_names])])
    p_crops = np.asarray(cache.crops[cache.rows([n for _p, n in probes])])
    g_key = hashlib.sha256("\n".join(n for _p, n in gallery_names).encode()).hexdigest()
    p_key = hashlib.sha256("\n".join(n for _p, n in probes).encode()).hexdigest()
    gallery = _embed(g_crops, systems.hr, "gallery 112", (systems.tag["trunk"], g_key))
    out: dict[str, Any] = {
        "gallery": len(gallery_names), "mated_probes": int(mated.sum()), "non_mated_probes": int((~mated).sum()),
    }
    for r in ID_RESOLUTIONS:
        base = _embed(p_crops, systems.baseline(r), f"probes baseline r={r}", (systems.tag["trunk"], p_key))
        out[f"baseline/{r}"] = open_set(gallery, g_ids, base, p_ids, mated)
        if r not in systems.branch:
            continue
        for system, fn in (("btnet", systems.btnet(r)),):
            key = (systems.tag[f"btnet{r}"], p_key)
            probes_emb = _embed(p_crops, fn, f"probes {system} r={r}", key)
            out[f"{system}/{r}"] = open_set(gallery, g_ids, probes_emb, p_ids, mated)
    return out


def _time_rounds(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
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


def _upsample_trunk(trunk: ort.InferenceSession, lr: np.ndarray) -> np.ndarray:
    return run(trunk, normalise(np.stack([upsample(x) for x in lr])))


def _branch_only(branch: ort.InferenceSession, lr: np.ndarray) -> np.ndarray:
    return run(branch, normalise(lr))


def cost(
    trunk: MobileFaceNet, systems: Systems, branches: dict[int, BranchNet], cache: CropCache, rounds: int
) -> dict[str, Any]:
    fused_trunk = fuse_model(trunk)
    crops = np.asarray(cache.crops[:16])
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
            fns[f"upsample+trunk r{r}"] = partial(_upsample_trunk, systems.trunk, lr[r])
            fns[f"branch r{r}"] = partial(_branch_only, systems.branch[r], lr[r])
        times = _time_rounds(fns, rounds if batch == 1 else max(5, rounds // 2))
        for r in branches:
            out[f"r{r}"][f"ms_b{batch}_upsample_trunk"] = times[f"upsample+trunk r{r}"]
            out[f"r{r}"][f"ms_b{batch}_branch"] = times[f"branch r{r}"]
    return out


def scan_speed(
    trunk: MobileFaceNet, branches: dict[int, BranchNet], plain: dict[int, BranchNet], work: Path, rounds: int,
    threads: int,
) -> dict[str, Any]:
    """Fused SCAN vs plain (ONNX Runtime) and unfused vs fused (PyTorch), interleaved, same inputs."""
    out: dict[str, Any] = {}
    for r in sorted(branches, reverse=True):
        if r not in (14, 7):
            continue
        scan_net = branches[r]
        plain_net = plain.get(r) or BranchNet(trunk, r, "plain").eval()
        f_scan, f_plain = fuse_model(scan_net), fuse_model(plain_net)
        p_scan = export_onnx(f_scan, work / f"speed_scan_r{r}.onnx", (3, r, r))
        p_plain = export_onnx(f_plain, work / f"speed_plain_r{r}.onnx", (3, r, r))
        s_scan, s_plain = session(p_scan, threads), session(p_plain, threads)
        x = np.random.default_rng(0).uniform(-1, 1, size=(16, 3, r, r)).astype(np.float32)
        xt = torch.from_numpy(x)
        unfused = scan_net.eval()

        def torch_call(model: torch.nn.Module, xt: torch.Tensor = xt) -> Callable[[], object]:
            def call() -> object:
                with torch.no_grad():
                    return model(xt)

            return call

        t = _time_rounds(
            {
                "ort fused scan": partial(run, s_scan, x),
                "ort plain": partial(run, s_plain, x),
                "torch unfused scan": torch_call(unfused),
                "torch fused scan": torch_call(f_scan),
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


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, pairs in zip(axes, [["112&56", "112&28", "112&14", "112&7"], ["28&28", "14&14", "7&7"]], strict=True):
        for i, pair in enumerate(pairs):
            colour = f"C{i}"
            for system, style in (("baseline", "--"), ("btnet", "-")):
                key = f"{system}/{pair}"
                if key in curves:
                    far, tar = curves[key]
                    ax.plot(np.maximum(far, 1e-4), tar, style, color=colour, label=f"{pair} {system}")
        ax.set_xscale("log")
        ax.set_xlim(1e-3, 1)
        ax.set_xlabel("false accept rate")
        ax.set_ylabel("true accept rate")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_title("LFW View 2: 112 enrolment vs low-resolution probe")
    axes[1].set_title("LFW View 2: both sides low resolution")
    fig.suptitle("BTNet branch (solid) vs bicubic upsample + trunk (dashed)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def write_report(res: dict[str, Any], path: Path, png: Path) -> None:
    v = res["verification"]
    lines = [
        "# Multi-resolution face recognition: BTNet branches vs upsample-then-trunk",
        "",
        f"Generated on {res['date']} ({res['machine']}) by",
        "",
        "```bash",
        res["command"],
        "```",
        "",
        f"Every number on this page comes from that one run; `{res['work']}/results.json` holds them all.",
        "Training: " + res["training_note"] + ".",
        "",
        *_criteria(res),
        "Setup: MobileFaceNet trunk (frozen, 112 x 112), BTNet branches for 56, 28, 14 and 7 pixels trained by",
        "distillation on LFW peopleDevTrain identities (see `docs/training.md`). Low-resolution inputs are the aligned",
        "112 crop area-downsampled to r. Baseline: the trunk on that crop upsampled back to 112 (bicubic).",
        "The 112 side of a pair always goes through the trunk (the BTNet 112 path is the trunk).",
        "",
        f"## LFW View 2 verification ({res['folds']}-fold accuracy %, mean +- std)",
        "",
        "| pair | upsample + trunk | BTNet branch | delta | TAR@FAR=1e-2 (base / BTNet) |",
        "|---|---|---|---|---|",
    ]
    for ra, rb in PAIRS:
        b, n = v.get(f"baseline/{ra}&{rb}"), v.get(f"btnet/{ra}&{rb}")
        if b is None or n is None:
            continue
        lines.append(
            f"| {ra}&{rb} | {_pct(b['accuracy'])} +- {_pct(b['std'])} | {_pct(n['accuracy'])} +- {_pct(n['std'])} "
            f"| {100 * (n['accuracy'] - b['accuracy']):+.2f} | {_pct(b['tar@far=1e-2'])} / {_pct(n['tar@far=1e-2'])} |"
        )
    lines += ["", f"![ROC]({png.name})", ""]
    ident = res["identification"]
    lines += [
        "## 1:N open-set identification (LFW peopleDevTest)",
        "",
        f"Gallery: {ident['gallery']} identities, one 112 image each; {ident['mated_probes']} mated probes, "
        f"{ident['non_mated_probes']} non-mated probes (identities not enrolled), at r pixels.",
        "",
        "| probe r | system | rank-1 % | TPIR@FPIR=0.1 % | TPIR@FPIR=0.01 % |",
        "|---|---|---|---|---|",
    ]
    for r in ID_RESOLUTIONS:
        for system, label in (("baseline", "upsample + trunk"), ("btnet", "BTNet branch")):
            m = ident[f"{system}/{r}"]
            lines.append(
                f"| {r} | {label} | {_pct(m['rank1'])} | {_pct(m['tpir@fpir=0.1'])} | {_pct(m['tpir@fpir=0.01'])} |"
            )
    c = res["cost"]
    trunk_macs = c["trunk"]["macs"]
    lines += [
        "",
        "## Cost per path (ONNX Runtime, CPU, "
        + f"{res['threads']} thread(s), median of interleaved rounds)",
        "",
        f"Trunk: {c['trunk']['params']:,} parameters (BN folded), {trunk_macs / 1e6:.1f} M MACs at 112.",
        "",
        "| r | branch params | branch params / trunk | path MMACs | path / trunk MACs | ms b1: upsample+trunk / branch "
        "| ms b16: upsample+trunk / branch |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in sorted((k for k in c if k.startswith("r")), key=lambda k: -int(k[1:])):
        e = c[key]
        lines.append(
            f"| {key[1:]} | {e['branch_params']:,} | {e['branch_params'] / c['trunk']['params']:.3f} "
            f"| {e['path_macs'] / 1e6:.1f} | {e['path_macs'] / trunk_macs:.3f} "
            f"| {e['ms_b1_upsample_trunk']:.2f} / {e['ms_b1_branch']:.2f} "
            f"| {e['ms_b16_upsample_trunk']:.2f} / {e['ms_b16_branch']:.2f} |"
        )
    lines += [
        "",
        "MACs count convolutions (BN folded); the upsample path also pays for the bicubic resize (timed, not counted).",
        "The r = 56 branch is conv1 at stride 1 on 56 x 56, which costs exactly what conv1 at stride 2 on 112 x 112",
        "costs, and everything after it is the trunk: its MACs equal the trunk's, so its latency can only match the",
        "upsample path (it saves the bicubic resize, a few percent at most). BTNet's definition of a branch (the trunk",
        "layers before the stage of size r, at stride 1) gives no saving at r = 56; the saving starts at r = 28.",
        "",
        "## SCAN convolutions",
        "",
        "| r | ms b16 ORT fused SCAN / plain | ratio | ms b16 torch unfused / fused | ratio "
        "| params fused SCAN = plain | MACs fused SCAN = plain | unfused MMACs | max abs diff unfused vs fused |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, e in sorted(res["scan_speed"].items(), key=lambda kv: -int(kv[0][1:])):
        t = e["ms_b16"]
        lines.append(
            f"| {key[1:]} | {t['ort fused scan']:.2f} / {t['ort plain']:.2f} | {e['ratio_fused_scan_vs_plain']:.3f} "
            f"| {t['torch unfused scan']:.2f} / {t['torch fused scan']:.2f} | {e['ratio_unfused_vs_fused_torch']:.2f} "
            f"| {e['params']['fused_scan']:,} = {e['params']['plain_fused']:,} "
            f"| {e['macs']['fused_scan'] / 1e6:.2f} = {e['macs']['plain_fused'] / 1e6:.2f} "
            f"| {e['macs']['unfused_scan'] / 1e6:.2f} | {e['max_abs_diff_unfused_vs_fused']:.1e} |"
        )
    lines += ["", "### Ablation: branches trained with plain convs vs SCAN convs (same data, steps, seed)", ""]
    if res.get("ablation_note"):
        lines += [res["ablation_note"], ""]
    lines += ["| pair | plain convs | SCAN convs | delta |", "|---|---|---|---|"]
    for ra, rb in ABLATION_PAIRS:
        p, s = v.get(f"plain/{ra}&{rb}"), v.get(f"btnet/{ra}&{rb}")
        if p is None or s is None:
            lines.append(f"| {ra}&{rb} | not run | | |")
            continue
        lines.append(
            f"| {ra}&{rb} | {_pct(p['accuracy'])} +- {_pct(p['std'])} | {_pct(s['accuracy'])} +- {_pct(s['std'])} "
            f"| {100 * (s['accuracy'] - p['accuracy']):+.2f} |"
        )
    lines += ["", "## Caveats", ""] + [f"- {c}" for c in res["caveats"]] + [""]
    path.write_text("\n".join(lines))


def _criteria(res: dict[str, Any]) -> list[str]:
    """The issue's "done when" checks, evaluated on this run's numbers."""
    v, c, sp = res["verification"], res["cost"], res["scan_speed"]

    def acc(system: str, pair: str) -> float:
        return float(v[f"{system}/{pair}"]["accuracy"])

    def mark(ok: bool) -> str:
        return "yes" if ok else "**no**"

    rows = []
    for pair, rule in (("112&14", "beats"), ("112&7", "beats"), ("112&28", "not worse"), ("112&56", "not worse")):
        if f"btnet/{pair}" not in v:
            continue
        b, n = acc("baseline", pair), acc("btnet", pair)
        ok = n > b if rule == "beats" else n >= b
        rule = "beats" if rule == "beats" else "not worse than"
        rows.append(f"| BTNet {rule} upsampling at {pair} | {100 * n:.2f} vs {100 * b:.2f} | {mark(ok)} |")
    for key in sorted((k for k in c if k.startswith("r")), key=lambda k: -int(k[1:])):
        e = c[key]
        macs_ok = e["path_macs"] < c["trunk"]["macs"]
        lat_ok = e["ms_b1_branch"] < e["ms_b1_upsample_trunk"] and e["ms_b16_branch"] < e["ms_b16_upsample_trunk"]
        rows.append(
            f"| r{key[1:]} path cheaper than upsample+trunk (MACs; latency b1 and b16) "
            f"| {e['path_macs'] / c['trunk']['macs']:.3f} x MACs; {e['ms_b1_branch']:.2f} vs "
            f"{e['ms_b1_upsample_trunk']:.2f} ms, {e['ms_b16_branch']:.2f} vs {e['ms_b16_upsample_trunk']:.2f} ms "
            f"| MACs {mark(macs_ok)}, latency {mark(lat_ok)} |"
        )
    for key, e in sorted(sp.items(), key=lambda kv: -int(kv[0][1:])):
        ratio, slow = e["ratio_fused_scan_vs_plain"], e["ratio_unfused_vs_fused_torch"]
        rows.append(
            f"| r{key[1:]} fused SCAN runs at plain speed (ratio in 0.95-1.05), unfused slower "
            f"| {ratio:.3f}; unfused {slow:.2f} x | {mark(0.95 <= ratio <= 1.05)}, {mark(slow > 1.0)} |"
        )
        rows.append(
            f"| r{key[1:]} fused == unfused (<= 1e-5) | {e['max_abs_diff_unfused_vs_fused']:.1e} "
            f"| {mark(e['max_abs_diff_unfused_vs_fused'] <= 1e-5)} |"
        )
    for name, e in sorted(res.get("export", {}).items()):
        diff = e.get("max_abs_diff_vs_single", e.get("max_abs_diff_vs_torch"))
        what = "Triton ensemble == single file" if name.startswith("triton/") else "ONNX == PyTorch"
        rows.append(f"| {what}: {name} (<= 1e-4, from `training.export`) | {diff:.1e} | {mark(diff <= 1e-4)} |")
    return ["## Done criteria, checked on these numbers", "", "| criterion | measured | met |", "|---|---|---|",
            *rows, ""]


def _training_note(run: Path) -> str:
    parts = []
    for p in sorted(run.glob("r*/branch.pt"), key=lambda q: -int(q.parent.name[1:])):
        ck = torch.load(p, map_location="cpu", weights_only=False)
        parts.append(f"r={ck['resolution']}: {ck['steps']} steps, {ck['train_seconds'] / 60:.1f} min")
    total = sum(
        torch.load(p, map_location="cpu", weights_only=False)["train_seconds"] for p in run.glob("r*/branch.pt")
    )
    return f"`{run}` ({'; '.join(parts)}; total {total / 60:.1f} min on this CPU)"


def _export_report(models: Path) -> dict[str, Any]:
    path = models / "btnet_export.json"
    return json.loads(path.read_text()) if path.exists() else {}


def main(argv: list[str] | None = None) -> None:
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
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    a.work.mkdir(parents=True, exist_ok=True)
    EMB_CACHE[:] = [a.work]
    models = a.models or model_dir()
    trunk = load_trunk(trunk_weights())
    cache = load_cache()
    branches = {}
    for bp in [] if a.baseline_only else sorted(a.run.glob("r*/branch.pt")):
        net = load_branch(trunk, bp)
        branches[net.resolution] = net
    branch_onnx = {}
    for r, net in branches.items():
        path = models / f"btnet_r{r}.onnx"
        if not path.exists():  # not exported yet: export next to the other evaluation files
            path, _ = export_branch(net, a.work)
        branch_onnx[r] = path
    trunk_onnx = export_onnx(fuse_model(trunk), a.work / "trunk.onnx", (3, 112, 112))
    systems = Systems(trunk_onnx, branch_onnx, a.threads)
    plain: dict[int, BranchNet] = {}
    ablation_sessions: dict[int, ort.InferenceSession] = {}
    for bp in sorted(a.ablation.glob("r*/branch.pt")) if a.ablation.exists() else []:
        net = load_branch(trunk, bp)
        plain[net.resolution] = net
        path, _ = export_branch(net, a.work, f"plain_r{net.resolution}")
        ablation_sessions[net.resolution] = session(path, a.threads)
    t0 = time.perf_counter()
    verification, curves = lfw_verification(cache, systems, ablation_sessions, a.folds)
    ident = identification(cache, systems, a.max_people)
    if a.baseline_only:
        print(f"baseline embeddings cached under {a.work} ({time.perf_counter() - t0:.0f} s)")
        return
    costs = cost(trunk, systems, branches, cache, a.rounds)
    speed = scan_speed(trunk, branches, plain, a.work, a.rounds, a.threads)
    a.png.parent.mkdir(parents=True, exist_ok=True)
    plot_roc(curves, a.png)
    res: dict[str, Any] = {
        "command": shlex.join(["python", "-m", "training.evaluate", *(sys.argv[1:] if argv is None else argv)]),
        "export": _export_report(models),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {a.threads} ORT/torch thread(s), onnxruntime {ort.__version__}, "
        f"torch {torch.__version__}",
        "threads": a.threads,
        "work": str(a.work),
        "folds": a.folds,
        "training_note": _training_note(a.run),
        "ablation_note": a.ablation_note
        or (f"Plain-conv branches: {_training_note(a.ablation)}; SCAN: the main run's branches." if plain else ""),
        "verification": verification,
        "identification": ident,
        "cost": costs,
        "scan_speed": speed,
        "eval_seconds": time.perf_counter() - t0,
        "caveats": [
            "LFW View 2 folds share identities with peopleDevTrain (the LFW protocol's View 1 / View 2 split); "
            "the branches were distilled from the trunk without identity labels, so no identity supervision leaks, "
            "but the training faces include some of the evaluation people. The identification test "
            "(peopleDevTest) is identity-disjoint from training.",
            "Low-resolution probes are synthesised (area downsampling of aligned crops), not real surveillance "
            "faces; real tiny faces also carry detector landmark noise.",
            "The service aligns tiny faces straight to r x r; that matches the area-downsampled crops used here only "
            "with the half-pixel template offset (docs/training.md, 'Geometry contract', tested by "
            "tests/test_training_models.py::test_direct_alignment_matches_the_training_geometry).",
            "Latencies are from a shared 2-core CPU; ratios from interleaved rounds are more trustworthy than the "
            "absolute milliseconds.",
        ],
    }
    (a.work / "results.json").write_text(json.dumps(res, indent=2, default=float))
    a.doc.parent.mkdir(parents=True, exist_ok=True)
    write_report(res, a.doc, a.png)
    print(f"wrote {a.doc} and {a.png} ({res['eval_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
