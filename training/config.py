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


@dataclass
class DistillConfig:
    """One distillation run: which branches, how long, which conv, which losses."""

    resolutions: list[int] = field(default_factory=lambda: list(DEFAULT_RESOLUTIONS))
    conv: str = "scan"  # "scan" or "plain"
    steps: dict[int, int] = field(default_factory=lambda: {56: 400, 28: 600, 14: 800, 7: 800})
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
    max_train_images: int = 6000
    seed: int = 0
    out: Path = Path("runs/btnet")
    checkpoint_every: int = 50
    threads: int = 1  # 1 is much faster than 2 when the cores are shared (OpenMP oversubscription)
    log_every: int = 10
