"""Fine-tune an attention embedder (or its control) from the pretrained MobileFaceNet trunk.

    python -m training.finetune --variant control --seed 0            # runs/variants/control/seed0/model.pt
    python -m training.finetune --variant sranet --seed 0 --resume    # continue an interrupted run
    python -m training.finetune --variant sranet --steps 3 --out /tmp/smoke   # a smoke test

Every variant and its control share `training/variants/schedule.json` (data, steps, batch, optimiser,
distillation weight, augmentation), so the only difference between two rows of a table is the method.

Data: the aligned crops (`training.data.lfw_crops`) of the `peopleDevTrain.txt` identities with at least
`min_images_per_identity` photos, each identity a class. Each step draws a batch at random (seeded: a control and
a variant with the same seed see the same images and the same augmentation) and augments it
(`training.data.augment`: flip, loss of resolution, one synthetic occlusion).

Loss: the variant's margin loss (ArcFace or AM-Softmax, `training.losses.MarginHead`) plus `distill_weight` x
(1 - cosine) between the network's embedding of the augmented crop and the frozen trunk's embedding of the clean
crop (same flip; cached once by `training.data.teacher_cache`), plus the method's own loss where it has one
(`auxiliary_loss()`: HPDA's divergence loss). The distillation keeps the embedding in the
trunk's space, so galleries enrolled with the trunk stay usable, and it teaches the network to embed an occluded
face where the trunk puts the clean one. The classifier starts at each class's mean trunk embedding, so the
margin loss is sensible from the first step and does not pull the pretrained trunk around while a random head
settles.

Optimiser: SGD with momentum, linear warm-up then cosine decay. Checkpoints (`checkpoint.pt`, every
`--checkpoint-every` steps) hold the network, the head, the optimiser and the random state; `--resume` continues
from one; the final `model.pt` carries the variant's whole config, the seed, the steps and the training time.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from evaluation.lfw import people_images, read_people
from training.config import cache_dir, lfw_dir, trunk_weights
from training.data.augment import AugmentConfig, augment
from training.data.degrade import normalise
from training.data.lfw_crops import load_cache
from training.data.occlusion import OcclusionConfig
from training.data.teacher_cache import build_teacher_cache
from training.losses import MarginHead
from training.models.arface import ARFaceNet
from training.models.mobilefacenet import N_UNITS, MobileFaceNet, load_trunk, unit_name
from training.variant_config import ARFaceSpec, VariantConfig, build_model, load_variant

DEFAULT_OUT = Path("runs/variants")


@dataclass
class TrainSet:
    """Crop-cache rows of the training images, their class labels and the trunk's embeddings (N x 2 flips x 128)."""

    rows: np.ndarray
    labels: np.ndarray
    teacher: np.ndarray
    classes: int


def train_set(cfg: VariantConfig, crops: np.ndarray, index: dict[str, int]) -> TrainSet:
    people = read_people(lfw_dir() / cfg.schedule.identities)
    kept = [person for person in people if person.images >= cfg.schedule.min_images_per_identity]
    names = [name for _person, name in people_images(kept) if name in index]
    if not names:
        raise SystemExit("the crop cache holds no training image; run `python -m training.data.lfw_crops`")
    label_of = {person.name: i for i, person in enumerate(kept)}
    rows = np.array([index[n] for n in names], dtype=np.int64)
    labels = np.array([label_of[n.split("/")[0]] for n in names], dtype=np.int64)
    order = np.argsort(rows)  # the teacher cache is keyed on the rows in this order
    rows, labels = rows[order], labels[order]
    teacher = build_teacher_cache(load_trunk(trunk_weights()), trunk_weights(), crops, rows, [], cache_dir())
    return TrainSet(rows, labels, np.asarray(teacher.embeddings), len(kept))


def class_centres(data: TrainSet) -> torch.Tensor:
    """Each class's mean unit trunk embedding (both flips): the classifier's starting weights."""
    emb = data.teacher / np.linalg.norm(data.teacher, axis=2, keepdims=True)
    centres = np.zeros((data.classes, emb.shape[2]))
    np.add.at(centres, data.labels, emb.sum(axis=1))
    return F.normalize(torch.from_numpy(centres).float(), dim=1)


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return 0.5 * base * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def first_trained_unit(name: str) -> int:
    for index in range(N_UNITS):
        if unit_name(index) == name:
            return index
    raise ValueError(f"train_from: no unit named {name!r} (conv1, dw_conv, features.0-14, head)")


class FineTuned(torch.nn.Module):
    """The network being fine-tuned: the units before `start` keep their weights and BatchNorm statistics (no
    gradients, eval mode)."""

    def __init__(self, net: MobileFaceNet, start: int) -> None:
        super().__init__()
        self.net, self.start = net, start
        for index in range(start):
            net.unit(index).requires_grad_(False)

    def train(self, mode: bool = True) -> FineTuned:
        super().train(mode)
        for index in range(self.start):
            self.net.unit(index).eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x = self.net.forward_units(x, 0, self.start)
        return self.net.forward_units(x, self.start)


def policy_parameters(net: MobileFaceNet) -> list[torch.nn.Parameter]:
    """The parameters of a method's policy network (ARFace's Attention-Net), trained by their own optimizer."""
    if isinstance(net, ARFaceNet):
        return net.policy_parameters()
    return []


def make_optimizer(net: MobileFaceNet, head: MarginHead, cfg: VariantConfig) -> torch.optim.Optimizer:
    """SGD over the trainable parameters (but a policy's); weight decay on conv and linear weights only (not on
    BatchNorm scales, biases or the residual scales that keep a new module at the identity); the method's own
    parameters (names the trunk does not have) at `new_module_lr_scale` x the rate."""
    trunk_names = set(MobileFaceNet().state_dict())
    policy = {id(p) for p in policy_parameters(net)}
    s = cfg.schedule
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in net.named_parameters():
        if p.requires_grad and id(p) not in policy:
            groups.setdefault((p.ndim > 1, name not in trunk_names), []).append(p)
    groups.setdefault((True, False), []).append(head.weight)
    return torch.optim.SGD(
        [{"params": params, "weight_decay": s.weight_decay if decay else 0.0,
          "lr_scale": s.new_module_lr_scale if new else 1.0} for (decay, new), params in groups.items()],
        lr=s.lr, momentum=s.momentum,
    )


def augment_batch(crops: np.ndarray, rng: np.random.Generator, aug: AugmentConfig) -> tuple[np.ndarray, np.ndarray]:
    """The augmented crops and, per crop, whether it was flipped (which trunk embedding is its target)."""
    out, flips = [], []
    for crop in crops:
        image, done = augment(crop, rng, aug)
        out.append(image)
        flips.append(1 if "flip" in done else 0)
    return np.stack(out), np.array(flips, dtype=np.int64)


def run_dir(out: Path, name: str, seed: int) -> Path:
    return out / name / f"seed{seed}"


def train(cfg: VariantConfig, seed: int, out: Path, resume: bool = False, steps: int | None = None,
          checkpoint_every: int = 50, log_every: int = 10) -> Path:
    """Fine-tune one variant with one seed; returns its `model.pt`."""
    folder = run_dir(out, cfg.name, seed)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / "model.pt"
    total = steps or cfg.schedule.steps
    if resume and final.exists():
        print(f"{cfg.name} seed {seed}: {final} exists, skipping")
        return final
    random.seed(seed)
    torch.manual_seed(seed)
    cache = load_cache()
    data = train_set(cfg, cache.crops, cache.index)
    net = build_model(cfg, trunk_weights())
    model = FineTuned(net, first_trained_unit(cfg.schedule.train_from))
    head = MarginHead(128, data.classes, cfg.loss.kind, cfg.loss.s, cfg.loss.m)
    with torch.no_grad():
        head.weight.copy_(class_centres(data))
    opt = make_optimizer(net, head, cfg)
    # a method's own training loss over the last forward pass (HPDA's divergence loss), if it has one
    method_loss: Callable[[], torch.Tensor] | None = getattr(net, "auxiliary_loss", None)
    policy = policy_parameters(net)  # ARFace's Attention-Net: policy gradient, its own optimiser
    policy_opt = None
    if isinstance(cfg.method, ARFaceSpec) and policy:
        policy_opt = torch.optim.Adam(policy, lr=cfg.method.policy_lr)
    rng = np.random.default_rng(seed)
    s = cfg.schedule
    aug = AugmentConfig(flip_prob=s.augment.flip_prob, low_res_prob=s.augment.low_res_prob,
                        occlusion=OcclusionConfig(prob=s.augment.occlusion_prob))
    start, elapsed = 0, 0.0
    ckpt_path = folder / "checkpoint.pt"
    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        net.load_state_dict(ckpt["model"])
        head.load_state_dict(ckpt["head"])
        opt.load_state_dict(ckpt["optimizer"])
        if policy_opt is not None:
            policy_opt.load_state_dict(ckpt["policy_optimizer"])
        rng.bit_generator.state = ckpt["numpy_rng"]
        torch.set_rng_state(ckpt["torch_rng"])
        start, elapsed = ckpt["step"], ckpt["elapsed_s"]
        print(f"{cfg.name} seed {seed}: resumed at step {start}")
    model.train()
    log = (folder / "log.jsonl").open("a")
    bar = tqdm(range(start, total), desc=f"{cfg.name} seed {seed}", initial=start, total=total, unit="step")
    t0 = time.perf_counter()
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, total, s.lr, s.warmup_steps) * group["lr_scale"]
        pick = rng.integers(0, len(data.rows), size=s.batch_size)
        images, flips = augment_batch(np.asarray(cache.crops[data.rows[pick]]), rng, aug)
        x = torch.from_numpy(normalise(images))
        labels = torch.from_numpy(data.labels[pick])
        target = torch.from_numpy(data.teacher[pick, flips])
        emb = model(x)
        l_margin = head(emb, labels)
        l_distill = (1.0 - F.cosine_similarity(emb, target, dim=1)).mean()
        l_method = method_loss() if method_loss is not None else torch.zeros(())
        loss = l_margin + s.distill_weight * l_distill + l_method
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        l_policy = torch.zeros(())
        if policy_opt is not None and isinstance(net, ARFaceNet):
            l_policy = net.policy_loss(head.predict(emb.detach()) == labels)
            policy_opt.zero_grad(set_to_none=True)
            l_policy.backward()
            policy_opt.step()
        done = step + 1
        if done % log_every == 0 or done == total:
            row = {"step": done, "loss": loss.item(), "margin": l_margin.item(), "distill": l_distill.item(),
                   "method": l_method.item(), "policy": l_policy.item(),
                   "lr": lr_at(step, total, s.lr, s.warmup_steps), "elapsed_s": elapsed + time.perf_counter() - t0}
            log.write(json.dumps(row) + "\n")
            log.flush()
            bar.set_postfix(margin=f"{row['margin']:.3f}", distill=f"{row['distill']:.4f}")
        if done % checkpoint_every == 0 and done < total:
            _save(ckpt_path, {"model": net.state_dict(), "head": head.state_dict(), "optimizer": opt.state_dict(),
                              "policy_optimizer": policy_opt.state_dict() if policy_opt is not None else None,
                              "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                              "step": done, "elapsed_s": elapsed + time.perf_counter() - t0})
    log.close()
    train_s = elapsed + time.perf_counter() - t0
    _save(final, {"config": cfg.model_dump(), "seed": seed, "steps": total, "train_seconds": train_s,
                  "train_images": len(data.rows), "classes": data.classes, "model": net.state_dict()})
    ckpt_path.unlink(missing_ok=True)
    print(f"{cfg.name} seed {seed}: {total} steps in {train_s / 60:.1f} min -> {final}")
    return final


def _save(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_finetuned(path: Path) -> tuple[torch.nn.Module, VariantConfig, dict[str, Any]]:
    """A fine-tuned network (eval mode) from its `model.pt`, its config, and the file's other fields."""
    ckpt: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    cfg = VariantConfig.model_validate(ckpt["config"])
    net = build_model(cfg, None)
    net.load_state_dict(ckpt["model"])
    net.eval()
    return net, cfg, ckpt


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", required=True, help="a name in training/variants/ or a path to a variant file")
    p.add_argument("--seed", type=int, nargs="+", default=None, help="default: the schedule's seeds")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--steps", type=int, default=None, help="override the schedule (smoke tests only)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--resume", action="store_true")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = load_variant(a.variant)
    for seed in a.seed if a.seed is not None else cfg.schedule.seeds:
        train(cfg, seed, a.out, a.resume, a.steps, a.checkpoint_every)


if __name__ == "__main__":
    main()
