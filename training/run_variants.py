"""`make variants`: fine-tune the control and the attention variants from the pretrained trunk, export them,
evaluate every one against the trunk on the same protocols, and write the table.

    python -m training.run_variants                        # train (resumable), export, evaluate, report
    python -m training.run_variants --doc docs/variants.md # also replace the results section of that page

The main rows (`--variants`: the controls, SRANet, HPDA and ARFace) are trained with every seed of the shared schedule;
the ablations (`--ablations`) with its first seed. `--cost-only` variants (the unpooled SRANet) are built
and measured for parameters, MACs and latency but not trained. Each run's evaluation is kept in
`<out>/<variant>/seed<k>/eval.json`, so an interrupted report resumes; the first seed of every method of
`--variants` is exported into the model folder with a manifest entry (`ANYFACE_EMBEDDER=<variant>` serves it);
the controls and the ablations are not installed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shlex
import sys
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evaluation.lfw import lfw_root
from service.models.manifest import load_manifest
from training.config import model_dir, trunk_weights
from training.data.lfw_crops import load_cache
from training.evaluation import variants as ev
from training.evaluation.occluded import CONDITIONS, onnx_embedder
from training.export import TOLERANCE, check_equal
from training.export_variant import export_variant
from training.finetune import DEFAULT_OUT, load_finetuned, run_dir, train
from training.onnx_utils import export_onnx
from training.variant_config import build_model, load_variant

TRUNK_ONNX = "mobilefacenet_dynamic.onnx"
MARK_BEGIN = "<!-- variants-report:begin -->"
MARK_END = "<!-- variants-report:end -->"


def run_onnx(model_pt: Path) -> Path:
    """The run's network as ONNX beside its `model.pt` (checked against PyTorch), for the evaluation."""
    path = model_pt.with_suffix(".onnx")
    if not path.exists() or path.stat().st_mtime < model_pt.stat().st_mtime:
        net, _cfg, _ckpt = load_finetuned(model_pt)
        export_onnx(net, path, (3, 112, 112))
        diff = check_equal(net, path, 112)
        if diff > TOLERANCE:
            raise RuntimeError(f"{path}: ONNX Runtime differs from PyTorch by {diff:.2e}")
    return path


def trunk_evaluation(lfw: Path, cache: Any, trunk_onnx: Path, folder: Path) -> tuple[dict[str, Any],
                                                                                  ev.GalleryEmbeddings]:
    """The trunk's figures and gallery embeddings, kept in `folder` and reused while the trunk file is unchanged."""
    figures, galleries = folder / "eval.json", folder / "galleries.npz"
    if figures.exists() and galleries.exists() and figures.stat().st_mtime > trunk_onnx.stat().st_mtime:
        with np.load(galleries) as g:
            names = g["pair_names"].tolist()
            return json.loads(figures.read_text()), ev.GalleryEmbeddings(dict(zip(names, g["pairs"], strict=True)),
                                                                         g["people"])
    res, gal = ev.evaluate(lfw, cache, onnx_embedder(trunk_onnx, flip=False), label="trunk")
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(gal.pairs)
    np.savez(galleries, pair_names=np.array(names), pairs=np.stack([gal.pairs[n] for n in names]), people=gal.people)
    figures.write_text(json.dumps(res, indent=1))
    return res, gal


def evaluate_all(runs: dict[str, Path], trunk_onnx: Path, out: Path, tuned: Collection[str] = ()
                 ) -> dict[str, Any]:
    """Every protocol for the trunk and every run; the runs of the `tuned` variants also on pairsDevTrain."""
    lfw, cache = lfw_root(), load_cache()
    results: dict[str, Any] = {}
    trunk_res, trunk_gal = trunk_evaluation(lfw, cache, trunk_onnx, out / "trunk")
    results["trunk"] = trunk_res
    for key, onnx in runs.items():
        cached = onnx.with_name("eval.json")
        if cached.exists() and cached.stat().st_mtime > onnx.stat().st_mtime:
            res = json.loads(cached.read_text())
        else:
            res, _ = ev.evaluate(lfw, cache, onnx_embedder(onnx, flip=False), trunk_gal, label=key)
        if key.split("/")[0] in tuned and "devtrain" not in res:
            res["devtrain"] = ev.devtrain(lfw, cache, onnx_embedder(onnx, flip=False), label=key)
        cached.write_text(json.dumps(res, indent=1))
        results[key] = res
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return results


def costs(names: list[str], runs: dict[str, Path], trunk_onnx: Path, out: Path) -> dict[str, Any]:
    """Parameters, MACs and relative latency of the trunk and of each architecture (first seed's file, or an
    untrained export for the cost-only variants)."""
    from training.models.mobilefacenet import load_trunk

    table: dict[str, Any] = {"trunk": ev.cost(load_trunk(trunk_weights()))}
    files = {"trunk": trunk_onnx}
    for name in names:
        cfg = load_variant(name)
        if cfg.method.kind == "none":
            continue  # the control is the trunk's architecture
        net = build_model(cfg, trunk_weights())
        table[name] = ev.cost(net)
        first = next((p for key, p in runs.items() if key.startswith(f"{name}/")), None)
        if first is None:
            first = export_onnx(net, out / name / "untrained.onnx", (3, 112, 112))
        files[name] = first
    lat = ev.latencies(files)
    for name, row in table.items():
        row.update(lat[name])
        row["latency_ratio_1"] = lat[name]["ms_1"] / lat["trunk"]["ms_1"]
        row["latency_ratio_32"] = lat[name]["ms_32"] / lat["trunk"]["ms_32"]
    (out / "cost.json").write_text(json.dumps(table, indent=1))
    return table


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _seed_mean(results: dict[str, Any], keys: list[str], get: Any) -> str:
    values = np.array([get(results[k]) for k in keys])
    return f"{100 * values.mean():.2f} ± {100 * values.std():.2f}" if len(values) > 1 else _pct(values[0])


def report(results: dict[str, Any], cost: dict[str, Any], order: list[str], header: str) -> str:
    conds = [*CONDITIONS, *(f"{r} px" for r in ev.RESOLUTIONS)]
    lines = [header, "", "### pairsDevTest verification accuracy (mean ± std over 10 folds; probe side altered)", "",
             "| network | " + " | ".join(conds) + " |", "|---|" + "---:|" * len(conds)]
    for key in order:
        v = results[key]["verification"]
        lines.append(f"| {key} | " + " | ".join(f"{_pct(v[c]['accuracy'])} ± {_pct(v[c]['std'])}" for c in conds)
                     + " |")
    lines += ["", "### peopleDevTest open-set identification: rank-1 / TPIR at FPIR 0.01 (probes altered)", "",
              "| network | " + " | ".join(CONDITIONS) + " |", "|---|" + "---:|" * len(CONDITIONS)]
    for key in order:
        i = results[key]["identification"]
        lines.append(f"| {key} | " + " | ".join(f"{_pct(i[c]['rank1'])} / {_pct(i[c]['tpir@fpir=0.01'])}"
                                                 for c in CONDITIONS) + " |")
    groups: dict[str, list[str]] = {}
    for key in order:
        groups.setdefault(key.split("/")[0], []).append(key)
    lines += ["", "### Mean over seeds (± std over seeds): pairsDevTest accuracy and peopleDevTest rank-1", "",
              "| network | seeds | clean acc | mask acc | sunglasses acc | block acc | 14 px acc | clean rank-1 | "
              "mask rank-1 | block rank-1 |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, keys in groups.items():
        cells = [_seed_mean(results, keys, lambda r, c=c: r["verification"][c]["accuracy"])
                 for c in ("clean", "mask", "sunglasses", "block", "14 px")]
        cells += [_seed_mean(results, keys, lambda r, c=c: r["identification"][c]["rank1"])
                  for c in ("clean", "mask", "block")]
        lines.append(f"| {name} | {len(keys)} | " + " | ".join(cells) + " |")
    lines += ["", "### Compatibility with trunk galleries (the network's probes against the trunk's gallery "
              "embeddings) and LFW View 2", "",
              "| network | own gallery, clean acc | trunk gallery, clean acc | trunk gallery, mask acc | "
              "trunk gallery, clean rank-1 | trunk gallery, mask rank-1 | View 2 clean acc (shares identities "
              "with training) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for key in order:
        r = results[key]
        comp = r.get("compatibility") or {}
        own = f"{_pct(r['verification']['clean']['accuracy'])}"
        if comp:
            cells = [f"{_pct(comp[c]['verification']['accuracy'])} ± {_pct(comp[c]['verification']['std'])}"
                     for c in ev.COMPAT_CONDITIONS]
            cells += [_pct(comp[c]["identification"]["rank1"]) for c in ev.COMPAT_CONDITIONS]
        else:
            cells = ["(same)"] * 4
        view2 = f"{_pct(r['view2']['accuracy'])} ± {_pct(r['view2']['std'])}"
        lines.append(f"| {key} | {own} | " + " | ".join(cells) + f" | {view2} |")
    lines += ["", "### Cost (one 112 x 112 image; ONNX Runtime, 1 thread, median of interleaved rounds)", "",
              "| network | parameters | MACs | ms, 1 image | ms, batch 32 | latency vs trunk (1 / 32) |",
              "|---|---:|---:|---:|---:|---:|"]
    for name, c in cost.items():
        lines.append(f"| {name} | {c['params'] / 1e6:.2f} M | {c['macs'] / 1e6:.1f} M | {c['ms_1']:.2f} | "
                     f"{c['ms_32']:.1f} | {c['latency_ratio_1']:.2f}x / {c['latency_ratio_32']:.2f}x |")
    tuned = [key for key in order if "devtrain" in results[key]]
    if tuned:
        lines += ["", "### Sweeps on pairsDevTrain, the tuning split (fine-tuning identities: compare the rows with "
                  "each other, not with the tables above)", "", "| network | " + " | ".join(CONDITIONS) + " |",
                  "|---|" + "---:|" * len(CONDITIONS)]
        for key in tuned:
            lines.append(f"| {key} | " + " | ".join(_pct(results[key]["devtrain"][c]["accuracy"])
                                                     for c in CONDITIONS) + " |")
    return "\n".join(lines) + "\n"


def write_doc(doc: Path, text: str) -> None:
    page = doc.read_text()
    if MARK_BEGIN not in page:
        page = page.rstrip() + f"\n\n{MARK_BEGIN}\n{MARK_END}\n"
    head, rest = page.split(MARK_BEGIN, 1)
    tail = rest.split(MARK_END, 1)[1]
    doc.write_text(f"{head}{MARK_BEGIN}\n{text}{MARK_END}{tail}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=["control", "sranet", "hpda", "control-am", "arface"],
                   help="trained with every seed")
    p.add_argument("--ablations", nargs="*", help="trained with the first seed",
                   default=["sranet-sca", "sranet-ssa", "hpda-nodiv", "hpda-concat", "hpda-b1", "arface-random",
                            "arface-noreg", "arface-r20"])
    p.add_argument("--cost-only", nargs="*", default=["sranet-naive"])
    p.add_argument("--tuned", nargs="*", default=["arface", "arface-noreg", "arface-r20"],
                   help="variants of a sweep: also evaluated on pairsDevTrain, where the setting is chosen")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--threads", type=int, default=0, help="torch threads for training (0: torch's default)")
    p.add_argument("--no-export", action="store_true", help="do not install the variants into the model folder")
    p.add_argument("--trained-only", action="store_true",
                   help="evaluate the finished runs only, training nothing (while other runs still train)")
    p.add_argument("--doc", type=Path, default=None, help="replace the results section of this Markdown page")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    plan = [(name, seed) for name in a.variants for seed in load_variant(name).schedule.seeds]
    plan += [(name, load_variant(name).schedule.seeds[0]) for name in a.ablations]
    runs: dict[str, Path] = {}
    train_s = 0.0
    if a.trained_only:
        plan = [(name, seed) for name, seed in plan if (run_dir(a.out, name, seed) / "model.pt").exists()]
    for name, seed in plan:
        model_pt = train(load_variant(name), seed, a.out, resume=True)
        train_s += float(torch.load(model_pt, map_location="cpu", weights_only=False)["train_seconds"])
        runs[f"{name}/seed{seed}"] = run_onnx(model_pt)
    if not a.no_export:  # the variants (not the control) become servable embedders
        installed = load_manifest(model_dir()).models
        for name in (n for n in a.variants if load_variant(n).method.kind != "none"):
            model_pt = run_dir(a.out, name, load_variant(name).schedule.seeds[0]) / "model.pt"
            onnx = model_dir() / f"{name}.onnx"
            if name in installed and onnx.exists() and onnx.stat().st_mtime > model_pt.stat().st_mtime:
                continue  # installed from this very run already
            export_variant(model_pt, model_dir())
    trunk_onnx = model_dir() / TRUNK_ONNX
    results = evaluate_all(runs, trunk_onnx, a.out, set(a.tuned))
    cost = costs([*a.variants, *a.ablations, *a.cost_only], runs, trunk_onnx, a.out)
    wall = time.perf_counter() - t0
    schedule = load_variant(a.variants[0]).schedule
    header = (f"Made by `{shlex.join(['python', '-m', 'training.run_variants', *sys.argv[1:]])}` on "
              f"{dt.date.today()} ({platform.machine()}, {torch.get_num_threads()} torch threads): "
              f"{schedule.steps} steps of batch {schedule.batch_size} per run, {train_s / 60:.0f} min of training "
              f"in all; this report took {wall / 60:.0f} min (training already done is reused). Every network runs "
              "without the flip test here.")
    text = report(results, cost, ["trunk", *runs], header)
    (a.out / "report.md").write_text(text)
    print(text)
    if a.doc:
        write_doc(a.doc, text)


if __name__ == "__main__":
    main()
