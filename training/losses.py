"""Distillation objectives: feature distillation at the implant stage, embedding distillation, SCAN scale loss.

`feature_loss` is the relative squared error between the branch output and the frozen trunk's feature of the clean
112 image at the same stage; `embedding_loss` keeps the branch's embedding in the trunk's space (1 - cosine, or
relative squared error); the scale loss is collected from the SCAN layers (`training.layers.scale_loss_of`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def relative_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return (student - teacher).pow(2).mean() / teacher.pow(2).mean().clamp_min(1e-8)


def feature_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return relative_mse(student, teacher)


def embedding_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = "cosine") -> torch.Tensor:
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(student, teacher, dim=1)).mean()
    if kind == "mse":
        return relative_mse(student, teacher)
    raise ValueError(f"unknown embedding loss {kind!r}")
