"""Paths and defaults shared by the training commands; every field can be overridden on the command line."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from evaluation.lfw import lfw_root
from service.models.contract import EMBEDDING_SIZE as EMBEDDING_SIZE  # the contract's constants, re-exported
from service.models.contract import INPUT_MEAN, INPUT_STD
from service.models.contract import TRUNK_RESOLUTION as TRUNK_RESOLUTION

MEAN, STD = INPUT_MEAN, INPUT_STD
DEFAULT_RESOLUTIONS: tuple[int, ...] = (56, 28, 14, 7)


def lfw_dir() -> Path:
    """`$ANYFACE_DATA_DIR/lfw` (`evaluation.lfw.lfw_root`: an error naming the variable when it is unset)."""
    return lfw_root()


def model_dir() -> Path:
    """Where the fetched and exported models live (env `ANYFACE_MODEL_DIR`, default `models`)."""
    return Path(os.environ.get("ANYFACE_MODEL_DIR", "models"))


def cache_dir() -> Path:
    """Crops and teacher features (env `ANYFACE_CACHE_DIR`, default `.cache/anyface`)."""
    return Path(os.environ.get("ANYFACE_CACHE_DIR", ".cache/anyface"))


def trunk_weights() -> Path:
    return model_dir() / "mobilefacenet_state_dict.pt"


DEGRADE_PROBS: dict[int, tuple[float, float]] = {56: (0.15, 0.15), 28: (0.5, 0.4), 14: (0.5, 0.4), 7: (0.5, 0.4)}


@dataclass(frozen=True)
class Profile:
    """A named training schedule: which branches, steps per branch, the size of the training subset (teacher cache)."""

    resolutions: tuple[int, ...]
    steps: dict[int, int]
    max_train_images: int
    about: str


# `make branches` / `python -m training.distill` train `full`; CI (`make branches-ci`, `--profile ci`) trains `ci`:
# branches that still beat upsampling (held-out cosine to the teacher, routing tests) in a fraction of the time.
# `ci` has no 56 branch: at 100 steps it stays below upsampling (0.975 vs 0.985 held-out cosine) and it needs about
# 400 steps of the costliest kind (the whole trunk per step) to pass it, so CI sends those faces to the trunk, which
# is the upsampling baseline. Measurements: docs/training.md, "The CI profile".
PROFILES: dict[str, Profile] = {
    "full": Profile(
        resolutions=DEFAULT_RESOLUTIONS, steps={56: 400, 28: 600, 14: 800, 7: 800}, max_train_images=6000,
        about="the schedule behind docs/multires.md (about 45 min of training on a shared 2-core CPU)",
    ),
    "ci": Profile(
        resolutions=(28, 14, 7), steps={28: 150, 14: 120, 7: 100}, max_train_images=1000,
        about="short schedule for CI: branches good enough for the routing tests, not for the published numbers",
    ),
}
DEFAULT_PROFILE = "full"


@dataclass
class DistillConfig:
    """One distillation run: which branches, how long, which conv, which losses."""

    resolutions: list[int] = field(default_factory=lambda: list(PROFILES[DEFAULT_PROFILE].resolutions))
    conv: str = "scan"  # "scan" or "plain"
    profile: str = DEFAULT_PROFILE  # the PROFILES entry the steps and max_train_images came from (recorded)
    steps: dict[int, int] = field(default_factory=lambda: dict(PROFILES[DEFAULT_PROFILE].steps))
    batch_size: int = 32
    lr: float = 6e-3
    weight_decay: float = 5e-4
    feature_weight: float = 1.0
    embedding_weight: float = 1.0
    embedding_loss: str = "cosine"  # "cosine" or "mse"
    scale_weight: float = 0.01
    scale_lambda: float = 1.0
    # None: per resolution (DEGRADE_PROBS); the 56 branch (conv1 only, 1.8 K parameters) does better on lighter
    # degradation (held-out cosine to the teacher 0.987 vs 0.982 with 0.5 / 0.4; the baseline is 0.984)
    blur_prob: float | None = None
    jpeg_prob: float | None = None
    max_train_images: int = PROFILES[DEFAULT_PROFILE].max_train_images
    seed: int = 0
    out: Path = Path("runs/btnet")
    checkpoint_every: int = 50
    threads: int = 1  # 1 is much faster than 2 when the cores are shared (OpenMP oversubscription)
    jobs: int = 1  # branches trained at the same time, each in its own process (`--jobs`)
    log_every: int = 10
