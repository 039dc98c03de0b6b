"""Reading back the `branch.pt` files `training.distill` writes (`<run>/r<r>/branch.pt`): the trained branches and
what their training cost. Used by `training.export` and `training.evaluate`, which therefore need not import the
training loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from training.models.btnet import BranchNet
from training.models.mobilefacenet import MobileFaceNet


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A `branch.pt` as saved: resolution, conv, implant, steps, train_seconds, branch (state dict), config."""
    ckpt: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    return ckpt


def load_branch(trunk: MobileFaceNet, path: Path) -> BranchNet:
    """A trained `BranchNet` (eval mode) on `trunk` from a `branch.pt`."""
    ckpt = read_checkpoint(path)
    net = BranchNet(trunk, ckpt["resolution"], ckpt["conv"])
    net.branch.load_state_dict(ckpt["branch"])
    net.eval()
    return net


def run_branches(run: Path) -> list[Path]:
    """The `branch.pt` files of a run, highest resolution first."""
    return sorted(run.glob("r*/branch.pt"), key=lambda p: -int(p.parent.name[1:]))


def training_note(run: Path) -> str:
    """One line on how a run's branches were trained: steps and minutes per resolution, and the total."""
    ckpts = [read_checkpoint(p) for p in run_branches(run)]
    parts = [f"r={c['resolution']}: {c['steps']} steps, {c['train_seconds'] / 60:.1f} min" for c in ckpts]
    total = sum(c["train_seconds"] for c in ckpts)
    return f"`{run}` ({'; '.join(parts)}; total {total / 60:.1f} min on this CPU)"
