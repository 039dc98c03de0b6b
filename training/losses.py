"""Training objectives: feature distillation at the implant stage, embedding distillation, SCAN scale loss, and
the margin classification losses (ArcFace, AM-Softmax) that fine-tune the attention embedders.

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


class MarginHead(torch.nn.Module):
    """A classifier on unit embeddings with an additive margin on the true class, the fine-tuning loss of the
    attention embedders: `arcface` (cos(theta + m), Deng et al.; SRANet trains with it) or `am-softmax`
    (cos(theta) - m; ARFace: s = 30, m = 0.4), both scaled by `s`, then cross-entropy.

    ArcFace's target logit stays decreasing in theta where theta + m would pass pi: there it is
    cos(theta) - m sin(m), InsightFace's rule."""

    def __init__(self, embedding_size: int, classes: int, kind: str = "arcface", s: float = 64.0,
                 m: float = 0.5) -> None:
        super().__init__()
        if kind not in ("arcface", "am-softmax"):
            raise ValueError(f"unknown margin loss {kind!r}")
        self.kind, self.s, self.m = kind, s, m
        self.weight = torch.nn.Parameter(torch.empty(classes, embedding_size))
        torch.nn.init.xavier_uniform_(self.weight)

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """s x cosine to every class centre, with the margin applied to each row's true class."""
        cos = F.linear(F.normalize(embeddings, dim=1), F.normalize(self.weight, dim=1)).clamp(-1.0, 1.0)
        target = cos.gather(1, labels[:, None])
        if self.kind == "am-softmax":
            margined = target - self.m
        else:
            sin = (1.0 - target.pow(2)).clamp_min(1e-9).sqrt()
            cos_m, sin_m = torch.cos(torch.tensor(self.m)), torch.sin(torch.tensor(self.m))
            shifted = target * cos_m - sin * sin_m  # cos(theta + m)
            threshold = -cos_m  # theta + m > pi: keep the logit decreasing in theta
            margined = torch.where(target > threshold, shifted, target - sin_m * self.m)
        return self.s * cos.scatter(1, labels[:, None], margined)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(embeddings, labels), labels)

    def predict(self, embeddings: torch.Tensor) -> torch.Tensor:
        """The class of each embedding: the nearest class centre by cosine, without a margin."""
        return F.linear(F.normalize(embeddings, dim=1), F.normalize(self.weight, dim=1)).argmax(dim=1)
