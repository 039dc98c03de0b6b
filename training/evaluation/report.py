"""`training.evaluate`'s report: docs/multires.md (every number from one run's results, with the issue's done
criteria checked on them) and the ROC plot next to it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from evaluation.plots import Curve, Panel, plot_roc
from training.evaluation.accuracy import ABLATION_PAIRS, ID_RESOLUTIONS, PAIRS

ROC_PANELS = [
    ("LFW View 2: 112 enrolment vs low-resolution probe", ["112&56", "112&28", "112&14", "112&7"]),
    ("LFW View 2: both sides low resolution", ["28&28", "14&14", "7&7"]),
]


def plot_multires_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    """Per panel and resolution pair one colour: the BTNet branch solid, upsample + trunk dashed."""
    panels = []
    for title, pairs in ROC_PANELS:
        lines = [
            Curve(f"{pair} {system}", *curves[f"{system}/{pair}"], style=style, color=f"C{i}")
            for i, pair in enumerate(pairs)
            for system, style in (("baseline", "--"), ("btnet", "-"))
            if f"{system}/{pair}" in curves
        ]
        panels.append(Panel(title, lines, min_far=1e-3))
    return plot_roc(panels, path, "BTNet branch (solid) vs bicubic upsample + trunk (dashed)", dpi=110)


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
            m = ident.get(f"{system}/{r}")
            if m is None:  # no branch for r in this run
                continue
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
