"""Train the BTNet branches by distillation from the frozen MobileFaceNet trunk.

    python -m training.distill --resolutions 56 28 14 7 --conv scan --out runs/btnet_scan
    python -m training.distill --resolutions 14 7 --conv plain --out runs/btnet_plain   # the SCAN ablation
    python -m training.distill --steps 5 --resolutions 14 --out runs/smoke                # a smoke test
    python -m training.distill --profile ci --out runs/btnet_ci                          # CI's short schedule

Data: aligned LFW crops of the `peopleDevTrain.txt` identities only (`training.data.lfw_crops`), the student
sees a random low-resolution version (`training.data.degrade`), the teacher's features and embeddings of the clean
112 crops (both flips) are computed once (`training.data.teacher_cache`). Loss = feature distillation at the
implant stage + embedding distillation + the SCAN scale loss; every term is logged to the progress bar and to
`<out>/r<r>/log.jsonl`. Checkpoints go to `<out>/r<r>/checkpoint.pt` every `--checkpoint-every` steps;
`--resume` continues from them (model, optimiser, schedule and random state), a finished branch
(`<out>/r<r>/branch.pt`) is skipped. Runs are seeded per branch, so `--jobs N` (N branches at a time, one process
each, once the teacher cache is built) trains the same branches in less wall time. `--profile` picks the branches,
the steps per branch and the training subset from `training.config.PROFILES` (`full`, the default, or `ci`);
`--resolutions` / `--steps` / `--max-train-images` override it, and the profile name is recorded in every
`branch.pt` (and from there in the manifest entry the export writes).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import multiprocessing
import random
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from evaluation.lfw import people_images, read_people
from training.config import (
    DEFAULT_PROFILE,
    DEGRADE_PROBS,
    PROFILES,
    DistillConfig,
    cache_dir,
    lfw_dir,
    trunk_weights,
)
from training.data.degrade import DegradeConfig, degrade, normalise
from training.data.lfw_crops import load_cache
from training.data.teacher_cache import TeacherCache, build_teacher_cache
from training.layers.scan_conv import ScanConv2d, scale_loss_of, set_scale_loss
from training.losses import embedding_loss, feature_loss
from training.models.btnet import BranchNet
from training.models.mobilefacenet import MobileFaceNet, load_trunk


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_rows(max_images: int, seed: int) -> np.ndarray:
    """Crop-cache rows of the peopleDevTrain images (a seeded subset of at most `max_images`), sorted."""
    cache = load_cache()
    people = read_people(lfw_dir() / "peopleDevTrain.txt")
    names = [name for _person, name in people_images(people) if name in cache.index]
    if not names:
        raise SystemExit("the crop cache holds no peopleDevTrain image; run `python -m training.data.lfw_crops`")
    rows = cache.rows(names)
    if max_images and len(rows) > max_images:
        rows = np.random.default_rng(seed).choice(rows, size=max_images, replace=False)
    return np.sort(rows)


def make_optimizer(net: BranchNet, cfg: DistillConfig) -> torch.optim.Optimizer:
    scales, no_decay, decay = [], [], []
    for module in net.branch.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if isinstance(module, ScanConv2d) and name == "scale":
                scales.append(p)
            elif p.ndim <= 1:
                no_decay.append(p)
            else:
                decay.append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
        {"params": scales, "weight_decay": 0.0},  # SCAN scales: no weight decay
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr)


def lr_at(step: int, total: int, base: float) -> float:
    warmup = max(1, total // 20)
    if step < warmup:
        return base * (step + 1) / warmup
    return 0.5 * base * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train_branch(
    trunk: MobileFaceNet,
    resolution: int,
    steps: int,
    cfg: DistillConfig,
    crops: np.ndarray,
    rows: np.ndarray,
    teacher: TeacherCache,
    resume: bool,
) -> Path:
    out = cfg.out / f"r{resolution}"
    out.mkdir(parents=True, exist_ok=True)
    final = out / "branch.pt"
    if resume and final.exists():
        print(f"r={resolution}: {final} exists, skipping")
        return final
    seed_everything(cfg.seed * 1000 + resolution)
    net = BranchNet(trunk, resolution, cfg.conv)
    net.train()
    set_scale_loss(net, cfg.conv == "scan" and cfg.scale_weight > 0, cfg.scale_lambda)
    opt = make_optimizer(net, cfg)
    rng = np.random.default_rng(cfg.seed * 1000 + resolution)
    blur_p, jpeg_p = DEGRADE_PROBS.get(resolution, (0.5, 0.4))
    degrade_cfg = DegradeConfig(
        blur_prob=blur_p if cfg.blur_prob is None else cfg.blur_prob,
        jpeg_prob=jpeg_p if cfg.jpeg_prob is None else cfg.jpeg_prob,
    )
    start = 0
    elapsed = 0.0
    ckpt_path = out / "checkpoint.pt"
    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        net.branch.load_state_dict(ckpt["branch"])
        opt.load_state_dict(ckpt["optimizer"])
        rng.bit_generator.state = ckpt["numpy_rng"]
        torch.set_rng_state(ckpt["torch_rng"])
        start, elapsed = ckpt["step"], ckpt["elapsed_s"]
        print(f"r={resolution}: resumed at step {start}")
    log = (out / "log.jsonl").open("a")
    feats = teacher.features[resolution]
    n = len(rows)
    bar = tqdm(range(start, steps), desc=f"r={resolution} {cfg.conv}", initial=start, total=steps, unit="step")
    t0 = time.perf_counter()
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, cfg.lr)
        pick = rng.integers(0, n, size=cfg.batch_size)
        flips = rng.integers(0, 2, size=cfg.batch_size)
        images = np.asarray(crops[rows[pick]])
        lr_images = np.stack(
            [
                degrade(img[:, ::-1] if f else img, resolution, rng, degrade_cfg)
                for img, f in zip(images, flips, strict=True)
            ]
        )
        x = torch.from_numpy(normalise(lr_images))
        t_feat = torch.from_numpy(np.asarray(feats[pick, flips], dtype=np.float32))
        t_emb = torch.from_numpy(teacher.embeddings[pick, flips])
        s_feat = net.forward_features(x)
        s_emb = net.forward_tail(s_feat)
        l_feat = feature_loss(s_feat, t_feat)
        l_emb = embedding_loss(s_emb, t_emb, cfg.embedding_loss)
        l_scale = scale_loss_of(net)
        loss = cfg.feature_weight * l_feat + cfg.embedding_weight * l_emb + cfg.scale_weight * l_scale
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done = step + 1
        if done % cfg.log_every == 0 or done == steps:
            row = {
                "step": done, "loss": loss.item(), "feature": l_feat.item(), "embedding": l_emb.item(),
                "scale": l_scale.item(), "lr": opt.param_groups[0]["lr"],
                "elapsed_s": elapsed + time.perf_counter() - t0,
            }
            log.write(json.dumps(row) + "\n")
            log.flush()
            bar.set_postfix(feat=f"{row['feature']:.4f}", emb=f"{row['embedding']:.4f}", scale=f"{row['scale']:.4f}")
        if done % cfg.checkpoint_every == 0 and done < steps:
            _save_checkpoint(ckpt_path, net, opt, rng, done, elapsed + time.perf_counter() - t0)
    log.close()
    total_s = elapsed + time.perf_counter() - t0
    torch.save(
        {
            "resolution": resolution, "conv": cfg.conv, "implant": net.implant, "steps": steps,
            "train_seconds": total_s, "branch": net.branch.state_dict(),
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()},
        },
        final,
    )
    ckpt_path.unlink(missing_ok=True)
    print(f"r={resolution}: {steps} steps in {total_s:.0f} s -> {final}")
    return final


def _save_checkpoint(
    path: Path, net: BranchNet, opt: torch.optim.Optimizer, rng: np.random.Generator, step: int, elapsed: float
) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "branch": net.branch.state_dict(), "optimizer": opt.state_dict(), "numpy_rng": rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(), "step": step, "elapsed_s": elapsed,
        },
        tmp,
    )
    tmp.replace(path)


def parse_args(argv: list[str] | None = None) -> tuple[DistillConfig, bool]:
    d = DistillConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resolutions", type=int, nargs="+", default=None, help="default: from the profile")
    p.add_argument(
        "--profile", choices=sorted(PROFILES), default=DEFAULT_PROFILE,
        help="named schedule from training.config.PROFILES: branches, steps per branch and --max-train-images "
        f"(default {DEFAULT_PROFILE}; ci: steps {PROFILES['ci'].steps}, {PROFILES['ci'].max_train_images} images)",
    )
    p.add_argument(
        "--steps", type=int, nargs="+", default=None,
        help="one number for every branch, or one per resolution (default: per resolution from the profile)",
    )
    p.add_argument("--conv", choices=["scan", "plain"], default=d.conv)
    p.add_argument("--out", type=Path, default=d.out)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--embedding-loss", choices=["cosine", "mse"], default=d.embedding_loss)
    p.add_argument("--feature-weight", type=float, default=d.feature_weight)
    p.add_argument("--embedding-weight", type=float, default=d.embedding_weight)
    p.add_argument("--scale-weight", type=float, default=d.scale_weight)
    p.add_argument("--blur-prob", type=float, default=d.blur_prob, help="blur probability (default: per resolution)")
    p.add_argument("--jpeg-prob", type=float, default=d.jpeg_prob, help="JPEG probability (default: per resolution)")
    p.add_argument("--max-train-images", type=int, default=None, help="default: from the profile")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads per process")
    p.add_argument("--jobs", type=int, default=d.jobs, help="branches trained at the same time, one process each")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    a = p.parse_args(argv)
    profile = PROFILES[a.profile]
    if a.resolutions is None:
        a.resolutions = list(profile.resolutions)
    if a.steps is not None and len(a.steps) == 1:
        steps = {r: a.steps[0] for r in a.resolutions}
    elif a.steps is not None:
        if len(a.steps) != len(a.resolutions):
            p.error("--steps takes one number or one per resolution")
        steps = dict(zip(a.resolutions, a.steps, strict=True))
    else:
        steps = {r: profile.steps.get(r, 300) for r in a.resolutions}
    max_images = profile.max_train_images if a.max_train_images is None else a.max_train_images
    cfg = DistillConfig(
        resolutions=a.resolutions, conv=a.conv, profile=a.profile, steps=steps, batch_size=a.batch_size, lr=a.lr,
        weight_decay=d.weight_decay, feature_weight=a.feature_weight, embedding_weight=a.embedding_weight,
        embedding_loss=a.embedding_loss, scale_weight=a.scale_weight,
        blur_prob=a.blur_prob, jpeg_prob=a.jpeg_prob, max_train_images=max_images,
        seed=a.seed, out=a.out, checkpoint_every=a.checkpoint_every, threads=a.threads, jobs=a.jobs,
    )
    return cfg, a.resume


def main(argv: list[str] | None = None) -> None:
    cfg, resume = parse_args(argv)
    torch.set_num_threads(cfg.threads)
    cfg.out.mkdir(parents=True, exist_ok=True)
    trunk = load_trunk(trunk_weights())
    crops = load_cache().crops
    rows = train_rows(cfg.max_train_images, cfg.seed)
    t0 = time.perf_counter()
    teacher = build_teacher_cache(trunk, trunk_weights(), crops, rows, cfg.resolutions, cache_dir())
    teacher_s = time.perf_counter() - t0
    print(f"teacher cache ready in {teacher_s:.0f} s ({len(rows)} images x 2 flips); profile {cfg.profile}")
    summary = {}
    t1 = time.perf_counter()
    if cfg.jobs > 1 and len(cfg.resolutions) > 1:
        # spawned workers (not forked: torch's thread pools do not survive a fork) reload the trunk and map the same
        # crops and teacher files; the module is named so that the workers import it rather than `__main__`
        worker = importlib.import_module("training.distill")._train_worker
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(cfg.jobs, len(cfg.resolutions)), mp_context=context) as pool:
            futures = {r: pool.submit(worker, cfg, r, resume) for r in cfg.resolutions}
            summary = {r: future.result() for r, future in futures.items()}
    else:
        for r in cfg.resolutions:
            path = train_branch(trunk, r, cfg.steps[r], cfg, crops, rows, teacher, resume)
            summary[r] = torch.load(path, map_location="cpu", weights_only=False)["train_seconds"]
    wall_s = time.perf_counter() - t1
    (cfg.out / "summary.json").write_text(json.dumps(
        {"train_seconds": summary, "train_wall_seconds": round(wall_s, 1), "jobs": cfg.jobs, "conv": cfg.conv,
         "profile": cfg.profile, "steps": cfg.steps, "train_images": len(rows),
         "teacher_cache_seconds": round(teacher_s, 1)}, indent=2))
    total = round(sum(summary.values()))
    print("training seconds per branch:", {r: round(s) for r, s in summary.items()}, "total", total,
          f"(wall {wall_s:.0f} s, {cfg.jobs} job(s))")


def _train_worker(cfg: DistillConfig, resolution: int, resume: bool) -> float:
    """`--jobs`: one branch in its own process, on the crops and teacher cache the parent made (memory-mapped)."""
    torch.set_num_threads(cfg.threads)
    trunk = load_trunk(trunk_weights())
    crops = load_cache().crops
    rows = train_rows(cfg.max_train_images, cfg.seed)
    teacher = build_teacher_cache(trunk, trunk_weights(), crops, rows, [resolution], cache_dir())
    path = train_branch(trunk, resolution, cfg.steps[resolution], cfg, crops, rows, teacher, resume)
    return float(torch.load(path, map_location="cpu", weights_only=False)["train_seconds"])


if __name__ == "__main__":
    main()
