"""Export a fine-tuned attention embedder (or its control) with the trunk's serving contract.

    python -m training.export_variant --model runs/variants/sranet/seed0/model.pt   # models/sranet.onnx + manifest

The network is exported with a dynamic batch (input `input` N x 3 x 112 x 112, normalised (x - 127.5) / 128 RGB;
output `embedding` N x 128), checked with `onnx.checker` and compared with PyTorch under ONNX Runtime on random
inputs and real aligned faces (max abs diff <= 1e-4, else an error). Its manifest entry is an embedder named
after the variant (family "variant") that says which method it implements and which trunk it was fine-tuned
from; `ANYFACE_EMBEDDER=<name>` serves it. The Triton repository (`models/triton/`) gets the same network as
model `<name>_net` behind an ensemble `<name>`, checked against the single file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from service.models.contract import TRUNK_NAME
from service.models.manifest import ModelEntry, load_manifest, sha256_of, update_manifest
from training.config import EMBEDDING_SIZE, MEAN, STD, model_dir
from training.export import TOLERANCE, check_equal
from training.finetune import load_finetuned
from training.onnx_utils import export_onnx, run, session
from training.triton_repo import repository_digest, run_ensemble, write_variant

FAMILY = "variant"
TRITON_ENTRY = "btnet_triton"  # the repository's manifest entry (training.export)


def manifest_entry(path: Path, model: Path, ckpt: dict[str, object], method: str, description: str) -> ModelEntry:
    return ModelEntry(
        role="embedder", family=FAMILY, file=path.name, sha256=sha256_of(path), input_size=(112, 112),
        layout="NCHW", color_order="RGB", mean=MEAN, std=STD, embedding_size=EMBEDDING_SIZE, resolution=112,
        dynamic_batch=True, method=method, trunk=TRUNK_NAME,
        source=(f"training.finetune ({model}, seed {ckpt['seed']}, {ckpt['steps']} steps, "
                f"{ckpt['train_images']} training images of peopleDevTrain) from the pretrained `{TRUNK_NAME}`"),
        license="same terms as the MobileFaceNet trunk weights (research use)",
        notes=f"{description} Distilled towards the trunk's embeddings; galleries still record which embedder "
              "filled them.",
    )


def calibrate(onnx: Path) -> dict[str, float]:
    """The service's default thresholds for this embedder, as `bench.calibrate` sets the trunk's: on LFW
    pairsDevTrain with the flip test (the best accuracy, and a false-accept rate of 1e-3), from the crop cache.
    pairsDevTrain's identities are the fine-tuning identities, so these are the training split's thresholds,
    as they are for the trunk's calibration."""
    from evaluation.lfw import lfw_root, pair_labels, read_pairs
    from evaluation.verification import best_threshold, threshold_at_far
    from service.core.thresholds import IDENTIFY_KEY, VERIFY_KEY
    from training.data.lfw_crops import load_cache
    from training.evaluation.occluded import embed_all, onnx_embedder

    cache, pairs = load_cache(), read_pairs(lfw_root() / "pairsDevTrain.txt")
    names = sorted({n for p in pairs for n in (p.a, p.b)})
    emb = dict(zip(names, embed_all(onnx_embedder(onnx), np.asarray(cache.crops[cache.rows(names)]),
                                    "calibration (pairsDevTrain)"), strict=True))
    scores, same = np.array([float(emb[p.a] @ emb[p.b]) for p in pairs]), pair_labels(pairs)
    return {VERIFY_KEY: round(best_threshold(scores, same)[0], 4),
            IDENTIFY_KEY: round(threshold_at_far(scores, same, 1e-3), 4)}


def export_variant(model: Path, out_dir: Path, name: str | None = None, triton: bool = True,
                   thresholds: bool = True) -> dict[str, object]:
    """Export, check, register; `thresholds`: calibrate the default thresholds (needs the full crop cache)."""
    net, cfg, ckpt = load_finetuned(model)
    name = name or cfg.name
    path = export_onnx(net, out_dir / f"{name}.onnx", (3, 112, 112))
    diff = check_equal(net, path, 112)
    if diff > TOLERANCE:
        raise RuntimeError(f"{path}: ONNX Runtime differs from PyTorch by {diff:.2e} > {TOLERANCE}")
    report: dict[str, object] = {"file": str(path), "max_abs_diff_vs_torch": diff, "method": cfg.method.kind}
    print(f"{name}: {path} (ONNX Runtime vs PyTorch max abs diff {diff:.2e})")
    if triton:
        root = out_dir / "triton"
        write_variant(root, name, net)
        x = np.random.default_rng(1).uniform(-1, 1, size=(4, 3, 112, 112)).astype(np.float32)
        t_diff = float(np.abs(run_ensemble(root, name, x) - run(session(path), x)).max())
        if t_diff > TOLERANCE:
            raise RuntimeError(f"triton ensemble {name} differs from the single model by {t_diff:.2e}")
        report["triton_max_abs_diff_vs_single"] = t_diff
    entry = manifest_entry(path, model, ckpt, cfg.method.kind, cfg.description)
    entries = {name: entry.model_copy(update={"thresholds": calibrate(path)}) if thresholds else entry}
    report["thresholds"] = entries[name].thresholds
    repository = load_manifest(out_dir).models.get(TRITON_ENTRY)
    if triton and repository is not None:  # its checksum covers the whole repository, this model included
        entries[TRITON_ENTRY] = repository.model_copy(update={"sha256": repository_digest(out_dir / "triton")})
    update_manifest(out_dir, entries)
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="a `model.pt` written by training.finetune")
    p.add_argument("--name", default=None, help="manifest name (default: the variant's name)")
    p.add_argument("--out", type=Path, default=None, help="model folder (default: ANYFACE_MODEL_DIR or models)")
    p.add_argument("--no-triton", action="store_true")
    p.add_argument("--no-thresholds", action="store_true",
                   help="do not calibrate thresholds (the service then uses its fallback, or ANYFACE_*_THRESHOLD)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    report = export_variant(a.model, a.out or model_dir(), a.name, not a.no_triton, not a.no_thresholds)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
