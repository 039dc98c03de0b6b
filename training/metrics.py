"""Verification and open-set identification metrics (numpy only)."""

from __future__ import annotations

import numpy as np


def l2n(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold that maximises accuracy (score >= t means "same")."""
    order = np.sort(np.unique(scores))
    candidates = np.concatenate([[order[0] - 1e-6], (order[:-1] + order[1:]) / 2, [order[-1] + 1e-6]])
    pos = np.sort(scores[same])
    neg = np.sort(scores[~same])
    tp = len(pos) - np.searchsorted(pos, candidates, side="left")
    tn = np.searchsorted(neg, candidates, side="left")
    return float(candidates[int(np.argmax(tp + tn))])


def kfold_accuracy(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> tuple[float, float]:
    """LFW protocol: per fold, the threshold is chosen on the other folds. Returns (mean, std) accuracy."""
    accs = []
    for k in np.unique(folds):
        train, test = folds != k, folds == k
        t = best_threshold(scores[train], same[train])
        accs.append(float(np.mean((scores[test] >= t) == same[test])))
    return float(np.mean(accs)), float(np.std(accs))


def roc(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FAR, TAR) over all thresholds."""
    order = np.argsort(-scores)
    s = same[order]
    tar = np.cumsum(s) / max(1, s.sum())
    far = np.cumsum(~s) / max(1, (~s).sum())
    return np.concatenate([[0.0], far]), np.concatenate([[0.0], tar])


def tar_at_far(scores: np.ndarray, same: np.ndarray, far_target: float) -> float:
    far, tar = roc(scores, same)
    ok = far <= far_target
    return float(tar[ok].max()) if ok.any() else 0.0


def auc(scores: np.ndarray, same: np.ndarray) -> float:
    far, tar = roc(scores, same)
    return float(np.sum((far[1:] - far[:-1]) * (tar[1:] + tar[:-1]) / 2))


def open_set(
    gallery: np.ndarray, gallery_ids: np.ndarray, probes: np.ndarray, probe_ids: np.ndarray, mated: np.ndarray,
    fpirs: tuple[float, ...] = (0.1, 0.01),
) -> dict[str, float]:
    """Rank-1 of the mated probes and TPIR at the given FPIRs (top-1 score >= threshold, correct identity)."""
    sims = l2n(probes) @ l2n(gallery).T
    top = np.argmax(sims, axis=1)
    top_score = sims[np.arange(len(sims)), top]
    correct = gallery_ids[top] == probe_ids
    out = {"rank1": float(np.mean(correct[mated]))}
    non = np.sort(top_score[~mated])
    for fpir in fpirs:
        # smallest threshold with at most fpir of the non-mated probes above it
        k = int(np.floor(fpir * len(non)))
        thr = non[len(non) - k] if k > 0 else non[-1] + 1e-6  # exactly k non-mated scores are >= thr
        out[f"tpir@fpir={fpir}"] = float(np.mean(correct[mated] & (top_score[mated] >= thr)))
    return out
