"""1:1 verification metrics on similarity scores (numpy only): pair scores, the best-accuracy threshold, k-fold
accuracy, ROC, TAR@FAR, the threshold at a FAR, AUC.

Conventions, the same everywhere:
- a pair is accepted ("same person") when its score is at or above the threshold (`score >= t`);
- candidate thresholds lie between scores: the midpoints of neighbouring distinct scores, plus one just below the
  lowest and one just above the highest (`EPS` away);
- tie rule: of the candidates with the best accuracy, the LOWEST threshold wins;
- the threshold at a false-accept rate `far` is the lowest candidate that accepts at most `floor(far * n)` of the
  `n` impostor scores: `EPS` above the `(floor(far * n) + 1)`-th highest impostor score; TAR@FAR is the share of
  genuine scores it accepts. Open-set identification (`evaluation.identification`) uses the same rule for FPIR.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from evaluation.lfw import Pair

EPS = 1e-6  # how far above (or below) a score a threshold "just above" it lies


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Each row scaled to unit L2 norm (zero rows stay zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def pair_scores(
    pairs: Sequence[Pair], embeddings: dict[str, np.ndarray], missing: float = -1.0,
    similarity: Callable[[np.ndarray, np.ndarray], float] | None = None,
) -> np.ndarray:
    """The score of each pair (default: the dot product, the cosine of unit embeddings); a pair with a photo that
    has no embedding (no face found) scores `missing`, the lowest possible score: it counts as a non-match."""
    scores = np.full(len(pairs), missing, dtype=np.float64)
    for i, pair in enumerate(pairs):
        if pair.a in embeddings and pair.b in embeddings:
            a, b = embeddings[pair.a], embeddings[pair.b]
            scores[i] = float(np.dot(a, b)) if similarity is None else similarity(a, b)
    return scores


def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """The threshold with the best accuracy on these pairs and that accuracy (lowest threshold on ties)."""
    order = np.unique(scores)  # sorted
    candidates = np.concatenate([[order[0] - EPS], (order[:-1] + order[1:]) / 2, [order[-1] + EPS]])
    pos, neg = np.sort(scores[same]), np.sort(scores[~same])
    correct = (len(pos) - np.searchsorted(pos, candidates, side="left")) + np.searchsorted(neg, candidates, "left")
    best = int(np.argmax(correct))  # argmax takes the first maximum: the lowest threshold
    return float(candidates[best]), float(correct[best] / len(scores))


@dataclass(frozen=True)
class KFold:
    """Accuracy per fold, each at the threshold that is best on the other folds."""

    mean: float
    std: float
    accuracies: list[float]
    thresholds: list[float]


def kfold_accuracy(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> KFold:
    """The LFW protocol: for each fold, the best threshold of the other folds, applied to it."""
    if len(np.unique(folds)) < 2:
        raise ValueError("k-fold accuracy needs at least 2 folds: each fold's threshold comes from the others")
    accuracies, thresholds = [], []
    for k in np.unique(folds):
        train, test = folds != k, folds == k
        t, _ = best_threshold(scores[train], same[train])
        thresholds.append(t)
        accuracies.append(float(np.mean((scores[test] >= t) == same[test])))
    return KFold(float(np.mean(accuracies)), float(np.std(accuracies)), accuracies, thresholds)


def roc(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FAR, TAR) with the threshold at each distinct score, from the highest down, after a (0, 0) start: tied
    scores are accepted together."""
    order = np.argsort(-scores, kind="stable")
    s, labels = scores[order], same[order]
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tar = np.cumsum(labels)[last_of_tie] / max(1, int(labels.sum()))
    far = np.cumsum(~labels)[last_of_tie] / max(1, int((~labels).sum()))
    return np.concatenate([[0.0], far]), np.concatenate([[0.0], tar])


def auc(scores: np.ndarray, same: np.ndarray) -> float:
    """Area under the ROC (trapezoids): the chance that a genuine pair outscores an impostor pair, ties half."""
    far, tar = roc(scores, same)
    return float(np.sum((far[1:] - far[:-1]) * (tar[1:] + tar[:-1]) / 2))


def threshold_at_rate(impostors: np.ndarray, rate: float) -> float:
    """The lowest threshold that accepts at most `floor(rate * n)` of the `n` impostor scores: `EPS` above the
    next-highest impostor score (`EPS` below the lowest one when every impostor may be accepted)."""
    if len(impostors) == 0:
        raise ValueError("no impostor scores")
    allowed = int(np.floor(rate * len(impostors)))
    if allowed >= len(impostors):
        return float(np.min(impostors) - EPS)
    return float(np.sort(impostors)[::-1][allowed] + EPS)


def threshold_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> float:
    """The lowest threshold whose false-accept rate on these pairs is at most `far`."""
    return threshold_at_rate(scores[~same], far)


def tar_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> float:
    """The true-accept rate at `threshold_at_far`."""
    return float(np.mean(scores[same] >= threshold_at_far(scores, same, far)))
